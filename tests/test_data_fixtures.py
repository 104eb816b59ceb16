"""The shared test data is what the fixtures claim: checked with readelf, file and the loader.

Host-built libraries (`build_lib`) are checked against this host's own loader, whatever its
architecture. The x86_64 torch data is pinned to x86_64 on every host, but only an x86_64 host's
loader can trace it: those traces skip elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import _data
import pytest
from conftest import unavailable

network = pytest.mark.network
slow = pytest.mark.slow
needs_x86_64_host = pytest.mark.skipif(
    _data.HOST_MACHINE != _data.EM_X86_64,
    reason="only an x86_64 host's loader can trace the x86_64 torch libraries",
)


def _file(path: Path) -> str:
    """What file(1) says, following symlinks."""
    return subprocess.run(
        ["file", "-b", "-L", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _tags(path: Path, tag: str) -> list[str]:
    return [value for name, value in _data.readelf_dynamic(path) if name == tag]


def _readelf_machine(path: Path) -> str:
    out = subprocess.run(
        ["readelf", "-h", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Machine:" in line)


def _readelf_version_needs(path: Path) -> list[str]:
    out = subprocess.run(
        ["readelf", "-V", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("Name: ")[1].split()[0] for line in out.splitlines() if "Name: " in line]


# --- parse_trace ---------------------------------------------------------------------------

# Captured from glibc 2.36's x86_64 loader (Debian bookworm) tracing a library built with
# build_lib: stdout, then stderr. The version error's "./libw.so: " prefix is the program name.
_REAL_STDOUT = (
    "\tlinux-vdso.so.1 (0x00007f7815156000)\n"
    "\tliby.so => /tmp/jrprobe/v/./liby.so (0x00007f7815144000)\n"
    "\tlibmissing.so.1 => not found\n"
    "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7814f59000)\n"
    "\tlibx.so => /tmp/jrprobe/v/./libx.so (0x00007f7814f54000)\n"
    "\t/lib64/ld-linux-x86-64.so.2 (0x00007f7815158000)\n"
)
_REAL_STDERR = (
    "./libw.so: /tmp/jrprobe/v/./libx.so: version `V2' not found"
    " (required by /tmp/jrprobe/v/./liby.so)\n"
)


def test_parse_trace_reads_found_not_found_and_version_errors() -> None:
    result = _data.parse_trace(_REAL_STDOUT, _REAL_STDERR, 0)
    assert dict(result.found) == {
        "liby.so": "/tmp/jrprobe/v/./liby.so",
        "libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
        "libx.so": "/tmp/jrprobe/v/./libx.so",
        "/lib64/ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2",
    }
    assert result.not_found == frozenset({"libmissing.so.1"})
    assert result.version_errors == (
        "/tmp/jrprobe/v/./libx.so: version `V2' not found (required by /tmp/jrprobe/v/./liby.so)",
    )
    assert result.returncode == 0
    assert result.raw == _REAL_STDOUT + _REAL_STDERR


def test_parse_trace_of_qemu_arm64_output_keeps_interpreter_line() -> None:
    # Captured from Debian's arm64 loader under qemu-aarch64-static tracing /usr/bin/getent.
    stdout = (
        "\tlibc.so.6 => /lib/aarch64-linux-gnu/libc.so.6 (0x0000005502880000)\n"
        "\t/lib/ld-linux-aarch64.so.1 => /r/lib/ld-linux-aarch64.so.1 (0x0000005500000000)\n"
    )
    result = _data.parse_trace(stdout, "", 0)
    assert dict(result.found) == {
        "libc.so.6": "/lib/aarch64-linux-gnu/libc.so.6",
        "/lib/ld-linux-aarch64.so.1": "/r/lib/ld-linux-aarch64.so.1",
    }
    assert result.not_found == frozenset()
    assert result.version_errors == ()


def test_parse_trace_keeps_a_failed_run_raw() -> None:
    stderr = "/lib64/ld-linux-x86-64.so.2: cannot open shared object file\n"
    result = _data.parse_trace("", stderr, 127)
    assert (dict(result.found), result.not_found, result.version_errors) == ({}, frozenset(), ())
    assert (result.returncode, result.raw) == (127, stderr)


# --- build_lib, checked with readelf and file --------------------------------------------


def test_build_lib_writes_exactly_the_requested_dynamic_tags(
    tmp_path: Path, build_lib: _data.BuildLib
) -> None:
    dep = build_lib(tmp_path / "dep", "libdep.so.2", soname="libdep.so.2")
    lib = build_lib(
        tmp_path / "lib",
        "libA.so",
        soname="libA.so.1",
        needed=[dep, "libabsent.so.9"],
        rpath="$ORIGIN/../dep",
        nodeflib=True,
    )
    assert _tags(lib, "NEEDED") == ["libdep.so.2", "libabsent.so.9"]
    assert _tags(lib, "SONAME") == ["libA.so.1"]
    assert _tags(lib, "RPATH") == ["$ORIGIN/../dep"]
    assert _tags(lib, "RUNPATH") == []
    assert _tags(lib, "FLAGS_1") == ["Flags: NODEFLIB"]
    assert not (tmp_path / "lib" / "libabsent.so.9").exists()
    # A library for this host: the machine its own loader runs (the traces below rely on it).
    assert _file(lib).startswith("ELF ")
    assert "shared object" in _file(lib)
    assert _data.HOST_LOADER is not None
    assert _readelf_machine(lib) == _readelf_machine(_data.HOST_LOADER.resolve())


def test_build_lib_runpath_is_runpath_only_and_plain_lib_has_no_extra_tags(
    tmp_path: Path, build_lib: _data.BuildLib
) -> None:
    lib = build_lib(tmp_path, "libR.so", runpath="/opt/a:$ORIGIN")
    assert _tags(lib, "RUNPATH") == ["/opt/a:$ORIGIN"]
    assert _tags(lib, "RPATH") == []
    plain = build_lib(tmp_path, "libplain.so")
    names = {tag for tag, _ in _data.readelf_dynamic(plain)}
    assert names.isdisjoint({"NEEDED", "SONAME", "RPATH", "RUNPATH", "FLAGS_1", "VERDEF"})


def test_build_lib_needed_by_path_without_soname_records_the_path(
    tmp_path: Path, build_lib: _data.BuildLib
) -> None:
    dep = build_lib(tmp_path, "libnosoname.so")
    lib = build_lib(tmp_path, "libuser.so", needed=[dep])
    assert _tags(lib, "NEEDED") == [str(dep)]


def test_build_lib_version_script_defines_and_requires_versions(
    tmp_path: Path, build_lib: _data.BuildLib
) -> None:
    provider = build_lib(
        tmp_path,
        "libv.so",
        soname="libv.so",
        version_script="V2 { global: v_fn; local: *; };",
        source="int v_fn(void) { return 2; }",
    )
    user = build_lib(
        tmp_path,
        "libu.so",
        needed=["libv.so"],
        source="int v_fn(void); int u_fn(void) { return v_fn(); }",
    )
    assert "V2" in _readelf_version_needs(provider)
    assert _readelf_version_needs(user) == ["V2"]


def test_build_lib_fails_on_bad_source(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    with pytest.raises(_data.DataBuildError, match="gcc"):
        build_lib(tmp_path, "libbad.so", source="this is not C")


# --- the host loader agrees with what build_lib wrote ------------------------------------


def test_host_loader_is_the_interpreters_own(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    # `readelf -l` of the running interpreter names the loader HOST_LOADER reports.
    out = subprocess.run(
        ["readelf", "-l", "-W", str(Path(sys.executable).resolve())],
        capture_output=True, text=True, check=True,
    ).stdout
    assert f"[Requesting program interpreter: {_data.HOST_LOADER}]" in out
    assert _data.elf_interpreter(build_lib(tmp_path, "libnointerp.so")) is None


def _chain(
    tmp_path: Path, build_lib: _data.BuildLib, *, rpath: str | None, runpath: str | None
) -> Path:
    """A -> B -> C in three directories; only A carries a search path (RPATH or RUNPATH)."""
    c = build_lib(tmp_path / "c", "libC.so", soname="libC.so")
    b = build_lib(tmp_path / "b", "libB.so", soname="libB.so", needed=[c])
    return build_lib(
        tmp_path / "a", "libA.so", soname="libA.so", needed=[b], rpath=rpath, runpath=runpath
    )


def test_host_trace_rpath_is_inherited_down_the_chain(
    tmp_path: Path, build_lib: _data.BuildLib, host_trace: _data.HostTrace
) -> None:
    a = _chain(tmp_path, build_lib, rpath="$ORIGIN/../b:$ORIGIN/../c", runpath=None)
    result = host_trace(a)
    assert result.returncode == 0
    assert result.not_found == frozenset()
    assert Path(result.found["libB.so"]).resolve() == tmp_path / "b" / "libB.so"
    assert Path(result.found["libC.so"]).resolve() == tmp_path / "c" / "libC.so"


def test_host_trace_runpath_is_not_inherited(
    tmp_path: Path, build_lib: _data.BuildLib, host_trace: _data.HostTrace
) -> None:
    a = _chain(tmp_path, build_lib, rpath=None, runpath="$ORIGIN/../b:$ORIGIN/../c")
    result = host_trace(a)
    assert "libB.so" in result.found
    assert result.not_found == frozenset({"libC.so"})


def test_host_trace_ld_library_path_and_version_error(
    tmp_path: Path, build_lib: _data.BuildLib, host_trace: _data.HostTrace
) -> None:
    script = "{name} {{ global: v_fn; local: *; }};"
    source = "int v_fn(void) { return 0; }"
    build_lib(
        tmp_path / "new",
        "libv.so",
        soname="libv.so",
        version_script=script.format(name="V2"),
        source=source,
    )
    build_lib(
        tmp_path / "old",
        "libv.so",
        soname="libv.so",
        version_script=script.format(name="V1"),
        source=source,
    )
    user = build_lib(
        tmp_path / "u",
        "libu.so",
        needed=["libv.so"],
        link_dirs=[tmp_path / "new"],
        source="int v_fn(void); int u_fn(void) { return v_fn(); }",
    )
    result = host_trace(user, {"LD_LIBRARY_PATH": str(tmp_path / "old")})
    assert result.found["libv.so"] == str(tmp_path / "old" / "libv.so")
    assert result.version_errors == (
        f"{tmp_path}/old/libv.so: version `V2' not found (required by {user})",
    )


# --- build_once ----------------------------------------------------------------------------


def test_build_once_leaves_nothing_when_the_build_fails(tmp_path: Path) -> None:
    dest = tmp_path / "thing"

    def fail(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        _data.build_once(dest, fail)
    assert list(tmp_path.iterdir()) == []


def test_build_once_builds_once_and_clears_dead_runs_leftovers(tmp_path: Path) -> None:
    dest = tmp_path / "thing"
    # A pid that cannot be alive: above the kernel's pid_max limit (2**22).
    stale = tmp_path / f".thing.tmp-{2**23}"
    stale.mkdir()
    calls: list[Path] = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "done").write_text("ok")

    assert _data.build_once(dest, build) == dest
    assert _data.build_once(dest, build) == dest
    assert len(calls) == 1
    assert calls[0].parent == tmp_path
    assert calls[0].name.startswith(".thing.tmp-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]
    assert (dest / "done").read_text() == "ok"


def test_pip_with_unreachable_index_raises_data_unavailable(tmp_path: Path) -> None:
    # A real pip run against a closed loopback port: the failure a missing network gives.
    # --isolated drops this machine's extra indexes and local wheel folders.
    with pytest.raises(_data.DataUnavailable, match="network unreachable"):
        _data._pip(
            [
                "download",
                "--isolated",
                "--no-deps",
                "--retries",
                "1",
                "--timeout",
                "5",
                "--index-url",
                "http://127.0.0.1:9/simple",
                "-d",
                str(tmp_path),
                "jr-none",
            ],
            what="pip download from a closed port",
        )


def test_pip_failure_that_is_not_the_network_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(_data.DataBuildError):
        _data._pip(
            ["download", "--isolated", "--no-index", "--no-deps", "-d", str(tmp_path), "jr-none"],
            what="pip download with no index",
        )


# --- the arm64 root and qemu -----------------------------------------------------------------


@network
def test_arm64_root_is_a_merged_usr_debian_root(arm64_root: Path) -> None:
    for name in ("bin", "sbin", "lib"):
        assert (arm64_root / name).readlink() == Path(f"usr/{name}")
    assert not (arm64_root / "lib64").exists()
    loader = arm64_root / "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
    assert (arm64_root / "usr/lib/ld-linux-aarch64.so.1").readlink() == Path(
        "aarch64-linux-gnu/ld-linux-aarch64.so.1"
    )
    assert "ARM aarch64" in _file(loader)
    for lib in ("libc.so.6", "libm.so.6", "libgcc_s.so.1", "libgomp.so.1", "libstdc++.so.6"):
        assert "ARM aarch64" in _file(arm64_root / "lib/aarch64-linux-gnu" / lib), lib
    assert (arm64_root / "etc/ld.so.conf").read_text().strip() == "include /etc/ld.so.conf.d/*.conf"
    assert sorted(p.name for p in (arm64_root / "etc/ld.so.conf.d").iterdir()) == [
        "aarch64-linux-gnu.conf",
        "libc.conf",
    ]
    assert "ID=debian" in (arm64_root / "etc/os-release").read_text().splitlines()
    cache = (arm64_root / "etc/ld.so.cache").read_bytes()
    assert cache.startswith(b"glibc-ld.so.cache1.1")
    assert b"/lib/aarch64-linux-gnu/libstdc++.so.6\0" in cache


@network
def test_qemu_trace_resolves_libstdcxx_in_the_root(
    arm64_root: Path, qemu_trace: _data.QemuTrace
) -> None:
    result = qemu_trace(arm64_root, arm64_root / "usr/lib/aarch64-linux-gnu/libstdc++.so.6")
    assert result.returncode == 0
    assert result.not_found == frozenset()
    assert dict(result.found) == {
        "libm.so.6": "/lib/aarch64-linux-gnu/libm.so.6",
        "libc.so.6": "/lib/aarch64-linux-gnu/libc.so.6",
        "libgcc_s.so.1": "/lib/aarch64-linux-gnu/libgcc_s.so.1",
        "/lib/ld-linux-aarch64.so.1": "/lib/ld-linux-aarch64.so.1",
    }


def _copy_root(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, symlinks=True)
    return dest


@network
def test_qemu_trace_reports_a_library_removed_from_the_root(
    arm64_root: Path, qemu_trace: _data.QemuTrace, tmp_path: Path
) -> None:
    root = _copy_root(arm64_root, tmp_path / "root")
    (root / "usr/lib/aarch64-linux-gnu/libgcc_s.so.1").unlink()
    result = qemu_trace(root, root / "usr/lib/aarch64-linux-gnu/libstdc++.so.6")
    assert result.not_found == frozenset({"libgcc_s.so.1"})
    assert "libc.so.6" in result.found


@network
def test_qemu_trace_refuses_libraries_qemu_took_from_the_host(
    arm64_root: Path, qemu_trace: _data.QemuTrace, tmp_path: Path
) -> None:
    root = _copy_root(arm64_root, tmp_path / "root")
    (root / "usr/lib/aarch64-linux-gnu/libgcc_s.so.1").unlink()
    # Not in the root, so qemu -L falls back to this host directory.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(arm64_root / "usr/lib/aarch64-linux-gnu/libgcc_s.so.1", outside)
    with pytest.raises(_data.DataBuildError, match="host files missing from the root"):
        qemu_trace(
            root,
            root / "usr/lib/aarch64-linux-gnu/libstdc++.so.6",
            {"LD_LIBRARY_PATH": str(outside)},
        )


def test_qemu_trace_rejects_a_file_outside_the_root(
    tmp_path: Path, qemu_trace: _data.QemuTrace
) -> None:
    with pytest.raises(ValueError, match="not inside the root"):
        qemu_trace(tmp_path / "root", tmp_path / "elsewhere.so")


@network
def test_make_arm64_root_adds_extra_debs(tmp_path: Path, data_dir: Path) -> None:
    try:
        root = _data.make_arm64_root(tmp_path / "root", ["zlib1g:arm64"], deb_dir=data_dir / "deb")
    except _data.DataUnavailable as err:
        unavailable(str(err))
        raise  # unavailable() never returns
    libz = root / "usr/lib/aarch64-linux-gnu/libz.so.1"
    assert "ARM aarch64" in _file(libz)
    assert b"/lib/aarch64-linux-gnu/libz.so.1\0" in (root / "etc/ld.so.cache").read_bytes()
    assert sorted(data_dir.glob("deb/zlib1g_*_arm64.deb"))


# --- torch -----------------------------------------------------------------------------------


def _torch_rpath(site: Path, lib: str) -> str:
    (rpath,) = _tags(site / "torch" / "lib" / lib, "RPATH")
    return rpath


@network
def test_torch_x86_wheel_is_a_cuda_build(torch_x86_wheel: Path) -> None:
    with zipfile.ZipFile(torch_x86_wheel) as wheel:
        names = set(wheel.namelist())
    assert {"torch/lib/libtorch_cuda.so", "torch/lib/libtorch_cpu.so"} <= names


@network
@slow
def test_torch_x86_alone_has_only_torch_and_a_cuda_rpath(torch_x86_alone: Path) -> None:
    assert not (torch_x86_alone / "nvidia").exists()
    lib = torch_x86_alone / "torch/lib/libtorch_cuda.so"
    # x86_64 on every host: pip is pinned to the wheel's platform, not the host's.
    assert _file(lib).startswith("ELF 64-bit LSB shared object, x86-64")
    rpath = _torch_rpath(torch_x86_alone, "libtorch_cuda.so").split(":")
    assert "$ORIGIN/../../nvidia/cu13/lib" in rpath
    assert _tags(lib, "RUNPATH") == []


@network
@slow
@needs_x86_64_host
def test_torch_x86_full_holds_the_nvidia_layout_its_rpath_names(
    torch_x86_full: Path, host_trace: _data.HostTrace
) -> None:
    assert (torch_x86_full / "nvidia/cu13/lib/libcudart.so.13").exists()
    assert sorted((torch_x86_full / "nvidia/cudnn/lib").glob("libcudnn.so.9*"))
    result = host_trace(torch_x86_full / "torch/lib/libtorch_cuda.so")
    assert result.returncode == 0
    assert result.not_found == frozenset()
    assert (
        Path(result.found["libcudart.so.13"]).resolve()
        == (torch_x86_full / "nvidia/cu13/lib/libcudart.so.13").resolve()
    )


@network
@slow
@needs_x86_64_host
def test_torch_x86_alone_loads_nothing_from_an_nvidia_folder(
    torch_x86_alone: Path, host_trace: _data.HostTrace
) -> None:
    result = host_trace(torch_x86_alone / "torch/lib/libtorch_cuda.so")
    assert result.found["libc10_cuda.so"] == str(torch_x86_alone / "torch/lib/libc10_cuda.so")
    # The CUDA libraries the RPATH names under nvidia/ are missing, or (on a host with CUDA
    # installed system-wide) come from the system: never from this site-packages.
    cuda = {"libcudart.so.13", "libcudnn.so.9", "libnccl.so.2", "libcusparseLt.so.0",
            "libnvshmem_host.so.3"}
    for name in cuda:
        assert name in result.not_found or not result.found[name].startswith(
            str(torch_x86_alone)
        ), name
    assert cuda & (result.not_found | set(result.found)) == cuda


@slow
def test_torch_cpu_is_the_cpu_build(torch_cpu: Path) -> None:
    lib = torch_cpu / "torch/lib/libtorch_cpu.so"
    assert _file(lib).startswith("ELF 64-bit LSB shared object, x86-64")
    assert not (torch_cpu / "torch/lib/libtorch_cuda.so").exists()
    assert not any("cuda" in name or "cudnn" in name for name in _tags(lib, "NEEDED"))


@network
@slow
def test_torch_arm_site_is_aarch64_with_bundled_nvpl(torch_arm_site: Path) -> None:
    lib = torch_arm_site / "torch/lib/libtorch_cpu.so"
    assert "ARM aarch64" in _file(lib)
    assert sorted((torch_arm_site / "torch/lib").glob("libnvpl_lapack_lp64_gomp*"))
    assert "$ORIGIN/../../nvidia/cu13/lib" in _torch_rpath(torch_arm_site, "libtorch_cuda.so")


@network
@slow
def test_qemu_trace_of_arm_torch_in_the_root(
    arm64_root: Path, torch_arm_site: Path, qemu_trace: _data.QemuTrace, tmp_path: Path
) -> None:
    root = _copy_root(arm64_root, tmp_path / "root")
    (root / "opt").mkdir(exist_ok=True)
    (root / "opt/site").symlink_to(torch_arm_site)
    result = qemu_trace(root, root / "opt/site/torch/lib/libtorch_cuda.so")
    assert result.found["libc.so.6"] == "/lib/aarch64-linux-gnu/libc.so.6"
    assert result.found["libtorch_cpu.so"] == "/opt/site/torch/lib/libtorch_cpu.so"
    assert {"libcudart.so.13", "libcudnn.so.9"} <= result.not_found


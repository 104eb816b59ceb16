"""The diagnose command end to end on small trees: exit codes, one-line errors, JSON, golden."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_helpers import assert_golden, run_cli, subjects, synth_lib, validate

from resolver.fixture.synth.ldcache import write_ld_so_cache
from resolver.target.rootfs import RootFS

if TYPE_CHECKING:
    from _data import BuildLib

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def build_lib() -> BuildLib:
    """Synthesised x86_64 libraries: the same answers (and golden files) on every host."""
    return synth_lib


def make_mini_torch(site: Path, build_lib: BuildLib, *, missing: str = "libmissing.so.1") -> Path:
    """A torch-shaped tree of tiny real libraries: _C needs libtorch, which needs `missing`."""
    lib = site / "torch" / "lib"
    build_lib(lib, "libc10.so", soname="libc10.so")
    build_lib(lib, "libtorch.so", soname="libtorch.so", needed=["libc10.so", missing],
              rpath="$ORIGIN")
    build_lib(site / "torch", "_C.cpython-311-x86_64-linux-gnu.so", needed=["libtorch.so"],
              rpath="$ORIGIN/lib", link_dirs=[lib])
    (site / "torch" / "version.py").write_text("__version__ = '9.9.9'\ncuda = None\n")
    return site


@pytest.fixture
def fixed_tree(tmp_path: Path) -> Path:
    return tmp_path / "tree"


def empty_root(path: Path) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "os-release").write_text('ID=testos\nVERSION_ID="1"\n')
    return path


def test_missing_library_exits_1_with_trail_and_elsewhere(fixed_tree: Path,
                                                          build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    root = empty_root(fixed_tree / "root")
    build_lib(root / "opt" / "vendor" / "lib", "libmissing.so.1", soname="libmissing.so.1")
    build_lib(root / "usr" / "local" / "lib", "libmissing.so.40", soname="libmissing.so.40")
    build_lib(root / "usr" / "local" / "lib", "libmissingno.so.1", soname="libmissingno.so.1")
    run = run_cli("diagnose", "--site-packages", str(site), "--root", str(root), "--json",
                  "--no-cache")
    assert run.code == 1
    document = run.json()
    validate("diagnose", document)
    finding = next(f for f in document["findings"] if f["subject"] == "libmissing.so.1")
    assert finding["severity"] == "blocks-import"
    assert finding["kind"] == "missing-library"
    assert finding["soname"] == "libmissing.so.1"
    assert finding["requested_by"] == [str(site / "torch" / "lib" / "libtorch.so")]
    assert finding["found_elsewhere"] == [
        {"path": "/opt/vendor/lib/libmissing.so.1", "name": "libmissing.so.1",
         "same_soname": True},
        {"path": "/usr/local/lib/libmissing.so.40", "name": "libmissing.so.40",
         "same_soname": False},
    ]
    assert "on no search path" in finding["message"]
    assert [s["via"] for s in finding["searched"]][:1] == ["DT_RPATH"]
    assert finding["searched"][0]["path"].endswith("torch/lib/libmissing.so.1")


@pytest.mark.parametrize(("flags", "golden_name"), [
    ((), "diagnose_mini_torch.txt"),
    (("-v",), "diagnose_mini_torch_v.txt"),
    (("-vv",), "diagnose_mini_torch_vv.txt"),
], ids=["default", "verbose", "every-path"])
def test_human_output_matches_golden(fixed_tree: Path, build_lib: BuildLib,
                                     flags: tuple[str, ...], golden_name: str) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    root = empty_root(fixed_tree / "root")
    build_lib(root / "opt" / "vendor" / "lib", "libmissing.so.1", soname="libmissing.so.1")
    run = run_cli("diagnose", "--site-packages", str(site), "--root", str(root), "--no-cache",
                  *flags)
    assert run.code == 1
    # The tree's place differs per run; the golden file names it <tree>.
    assert_golden(golden_name, run.stdout.replace(str(fixed_tree), "<tree>"))
    # Piped output is never wrapped, even past the terminal's 100 columns.
    assert f"target  {root}: x86_64, testos 1," in run.stdout
    assert max(len(line) for line in run.stdout.splitlines()) > 100


def test_ld_so_conf_registration_through_emulated_cache(fixed_tree: Path,
                                                        build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    root = empty_root(fixed_tree / "root")
    build_lib(root / "opt" / "vendor" / "lib", "libmissing.so.1", soname="libmissing.so.1")
    (root / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc" / "ld.so.conf.d").mkdir()
    (root / "etc" / "ld.so.conf.d" / "vendor.conf").write_text("/opt/vendor/lib\n")
    run = run_cli("diagnose", "--site-packages", str(site), "--root", str(root), "--json",
                  "--no-cache")
    document = run.json()
    assert run.code == 0
    assert document["target"]["ld_so_cache"] == "emulated from ld.so.conf"
    assert document["target"]["ld_so_conf_dirs"] == ["/opt/vendor/lib"]
    assert subjects(document, "info", "no-ld-so-cache") == {"/etc/ld.so.cache"}


def test_symlink_loop_and_escaping_link_in_root_are_findings(fixed_tree: Path,
                                                             build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    root = empty_root(fixed_tree / "root")
    lib = root / "usr" / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libmissing.so.1").symlink_to("libmissing.so.1")  # a loop onto itself
    (root / "lib").symlink_to("../../../../../../usr/lib")  # climbs out: stays inside the root
    run = run_cli("diagnose", "--site-packages", str(site), "--root", str(root), "--json",
                  "--no-cache")
    assert run.code == 1
    finding = next(f for f in run.json()["findings"] if f["subject"] == "libmissing.so.1")
    broken = [s for s in finding["searched"] if s["outcome"] == "broken symlink"]
    assert broken and "loop" in broken[0]["detail"]
    # /lib -> ../../../../../../usr/lib resolves to the root's own /usr/lib, never the host's.
    assert RootFS(str(root)).resolve("/lib").real == "/usr/lib"
    assert RootFS(str(root)).resolve("/lib/x86_64-linux-gnu/libmissing.so.1").problem is not None
    lib_steps = [s for s in finding["searched"] if s["path"].startswith("/lib/")]
    assert lib_steps and all(s["outcome"] != "found" for s in lib_steps)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "x.whl").write_text("not a zip"), "not a readable zip archive"),
        (lambda d: _zip(d / "evil-1.0-py3-none-any.whl", {"../../etc/passwd": "x"}),
         "escapes the archive's folder"),
        (lambda d: _zip(d / "abs-1.0-py3-none-any.whl", {"/etc/passwd": "x"}),
         "escapes the archive's folder"),
        (lambda d: _zip(d / "empty-1.0-py3-none-any.whl", {"a.txt": "x"}), "no torch package here"),
    ],
    ids=["not-a-zip", "member-climbs-out", "absolute-member", "no-torch"],
)
def test_bad_wheel_is_one_line_exit_2(tmp_path: Path, make: object, message: str) -> None:
    make(tmp_path)  # type: ignore[operator]
    wheel = next(tmp_path.glob("*.whl"))
    run = run_cli("diagnose", "--wheel", str(wheel), "--no-cache")
    assert run.code == 2
    assert message in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def _zip(path: Path, members: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--site-packages", "/nonexistent/site"], "--site-packages /nonexistent/site: not a"),
        (["--wheel", "/nonexistent.whl"], "--wheel /nonexistent.whl: no such file"),
        (["--site-packages", "/tmp", "--wheel", "/x.whl"], "give one of"),
        (["--site-packages", "/tmp", "--gpu-arch", "smX"], "--gpu-arch: expected sm_XY"),
        (["--site-packages", "/tmp", "--root", "/nonexistent/root"], "root is not a directory"),
        (["--python", "/nonexistent/python3"], "/nonexistent/python3: cannot run this interpreter"),
        (["--root", "/", "--fixture", "thor-jp7.0", "--site-packages", "/tmp"],
         "give --root or --fixture, not both"),
        (["--site-packages", "/tmp", "-vvv"], "-v: give it at most twice"),
        (["--fixture", "no-such-fixture", "--site-packages", "/tmp"], "no such fixture"),
    ],
    ids=["no-site", "no-wheel", "two-inputs", "bad-gpu", "no-root", "no-python", "root-and-fixture",
         "too-verbose", "no-fixture"],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], message: str) -> None:
    run = run_cli("diagnose", *args, "--no-cache")
    assert run.code == 2, run.stdout
    assert run.stderr.startswith("jetson-resolve: error: ")
    assert message in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_malformed_wheel_tag_and_unwritable_junit_are_not_tracebacks(
        fixed_tree: Path, build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    info = site / "torch-9.9.9.dist-info"
    info.mkdir()
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: cp312-cp312\n")
    run = run_cli("diagnose", "--site-packages", str(site), "--root",
                  str(empty_root(fixed_tree / "root")), "--json", "--no-cache")
    assert run.code == 1  # libmissing.so.1; the malformed tag is skipped, not a crash
    check = run_cli("check", "--fixture", "thor-jp7.0", "--torch-fixture",
                    "torch-2.9.1-aarch64-cpu", "--junit", "/nonexistent/dir/report.xml")
    assert check.code == 2
    assert check.stderr == ("jetson-resolve: error: --junit /nonexistent/dir/report.xml: "
                            "its folder does not exist\n")


def test_site_packages_in_a_dot_folder_of_the_root(fixed_tree: Path, build_lib: BuildLib) -> None:
    root = empty_root(fixed_tree / "root")
    make_mini_torch(root / ".venv" / "site", build_lib)
    run = run_cli("diagnose", "--site-packages", str(root / ".venv" / "site"), "--root",
                  str(root), "--json", "--no-cache")
    assert run.code == 1
    assert run.json()["torch"]["site"] == "/.venv/site"


def test_truncated_library_is_an_invalid_library_finding(fixed_tree: Path,
                                                         build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    lib = site / "torch" / "lib" / "libc10.so"
    lib.write_bytes(lib.read_bytes()[:40])
    run = run_cli("diagnose", "--site-packages", str(site), "--root",
                  str(empty_root(fixed_tree / "root")), "--json", "--no-cache")
    assert run.code == 1
    finding = next(f for f in run.json()["findings"] if f["kind"] == "invalid-library")
    assert finding["subject"] == "libc10.so"
    assert "invalid ELF header" in finding["message"]


def test_damaged_ld_so_cache_is_ignored_like_glibc(fixed_tree: Path, build_lib: BuildLib) -> None:
    site = make_mini_torch(fixed_tree / "site", build_lib)
    root = empty_root(fixed_tree / "root")
    cache = write_ld_so_cache([("libc10.so", "/usr/lib/libc10.so", 0x0303, 0)] * 8)
    (root / "etc" / "ld.so.cache").write_bytes(cache[:100])
    run = run_cli("diagnose", "--site-packages", str(site), "--root", str(root), "--json",
                  "--no-cache")
    document = run.json()
    assert document["target"]["ld_so_cache"] == "unreadable, ignored"
    note = next(f for f in document["findings"] if f["kind"] == "no-ld-so-cache")
    assert "cut short" in note["message"] and str(root / "etc" / "ld.so.cache") in note["message"]


def test_python_option_finds_torch_without_importing_it(torch_cpu: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    (purelib / "torch-cpu.pth").write_text(str(torch_cpu) + "\n")
    run = run_cli("diagnose", "--python", str(venv / "bin" / "python"), "--json", "--no-cache")
    assert run.code == 0, run.stderr
    assert run.json()["torch"]["site"] == str(torch_cpu)


def _torch_with_global_deps(site: Path, build_lib: BuildLib) -> None:
    """A mini torch whose libtorch_global_deps.so loads a libcudart from nvidia/cu13/lib."""
    lib = site / "torch" / "lib"
    cu13 = site / "nvidia" / "cu13" / "lib"
    build_lib(cu13, "libcudart.so.13", soname="libcudart.so.13")
    build_lib(lib, "libtorch_global_deps.so", soname="libtorch_global_deps.so",
              needed=["libcudart.so.13"], rpath="$ORIGIN/../../nvidia/cu13/lib", link_dirs=[cu13])
    build_lib(lib, "libtorch.so", soname="libtorch.so")
    build_lib(site / "torch", "_C.cpython-311-x86_64-linux-gnu.so", needed=["libtorch.so"],
              rpath="$ORIGIN/lib", link_dirs=[lib])
    (site / "torch" / "version.py").write_text("__version__ = '9.9.9'\ncuda = '13.0'\n")
    (site / "torch" / "__init__.py").write_text(
        "def _preload_cuda_deps():\n    cuda_libs = [\n"
        '        ("cublas", "libcublas.so.*[0-9]"),\n'
        '        ("cuda_runtime", "libcudart.so.*[0-9]"),\n    ]\n')


def test_failing_best_effort_preload_does_not_block_import(fixed_tree: Path,
                                                           build_lib: BuildLib) -> None:
    site = fixed_tree / "site"
    _torch_with_global_deps(site, build_lib)
    # nvidia/cublas holds a libcublas that cannot load: torch's best-effort preload swallows it.
    build_lib(site / "nvidia" / "cublas" / "lib", "libcublas.so.13", soname="libcublas.so.13",
              needed=["libnotthere.so.1"])
    run = run_cli("diagnose", "--site-packages", str(site), "--root",
                  str(empty_root(fixed_tree / "root")), "--json", "--no-cache")
    document = run.json()
    assert run.code == 0, document["findings"]
    preload = [a for a in document["attempts"] if "best-effort" in a["why"]]
    assert preload and preload[0]["ok"] is False and preload[0]["superseded"] is True
    assert document["torch"]["preload_source"] == "torch/__init__.py"


def test_failed_global_deps_recovers_through_the_required_preload(fixed_tree: Path,
                                                                  build_lib: BuildLib) -> None:
    site = fixed_tree / "site"
    _torch_with_global_deps(site, build_lib)
    # Move libcudart where RPATH does not look but torch's preload does (nvidia/cuda_runtime).
    moved = site / "nvidia" / "cuda_runtime" / "lib"
    moved.mkdir(parents=True)
    (site / "nvidia" / "cu13" / "lib" / "libcudart.so.13").rename(moved / "libcudart.so.13")
    build_lib(site / "nvidia" / "cublas" / "lib", "libcublas.so.13", soname="libcublas.so.13")
    run = run_cli("diagnose", "--site-packages", str(site), "--root",
                  str(empty_root(fixed_tree / "root")), "--json", "--no-cache")
    document = run.json()
    assert run.code == 0, document["findings"]
    first = document["attempts"][0]
    assert first["ok"] is False and first["superseded"] is True
    assert any(a["ok"] and "retry" in a["why"] for a in document["attempts"])
    # Without the library anywhere, torch's required preload raises: import fails.
    (moved / "libcudart.so.13").unlink()
    failed = run_cli("diagnose", "--site-packages", str(site), "--root",
                     str(fixed_tree / "root"), "--json", "--no-cache")
    assert failed.code == 1
    kinds = {f["kind"] for f in failed.json()["findings"] if f["severity"] == "blocks-import"}
    assert {"missing-library", "preload-not-found"} <= kinds

"""The whole process `import torch` runs in, against the real arm64 loader and a real import.

Every case starts from the complete aarch64 Thor root (Debian's arm64 python3.11 and libraries,
PyPI's torch 2.11.0 with every wheel it pins), link-copied, and changes it the way a user's
machine is changed: a DT_NEEDED removed with patchelf, a conda-style interpreter whose DT_RPATH
points at its own lib folder, a site-packages split between lib64 and lib, an LD_PRELOAD. The
expected answer comes from the root's own loader under qemu-user (trace mode, with
LD_BIND_NOW=1 and LD_WARN=1 where symbols matter) or from a real `import torch` under qemu-user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import _data
import pytest
from cli_helpers import validate

if TYPE_CHECKING:
    from pathlib import Path

SITE = _data.THOR_SITE
LAPACK = "libnvpl_lapack_lp64_gomp.so.0"
_UNDEFINED = re.compile(r"^undefined symbol: (?P<name>\S+)\t\((?P<path>[^)]+)\)$", re.MULTILINE)


def _diagnose(*args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-m", "resolver", "diagnose", "--json", "--no-cache",
                           *args], capture_output=True, text=True, check=False, timeout=600)
    assert done.stdout, done.stderr
    document = json.loads(done.stdout)
    validate("diagnose", document)
    return done.returncode, document, done.stderr


def _import_torch(root: Path, python: str, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """A real `import torch` by the root's interpreter under qemu-user (about 25 s)."""
    qemu = shutil.which(_data.QEMU_AARCH64)
    assert qemu is not None
    extra = [arg for key, value in (env or {}).items() for arg in ("-E", f"{key}={value}")]
    return subprocess.run([qemu, "-L", str(root), *extra, str(root / python.lstrip("/")), "-c",
                           "import torch; print(torch.__version__)"],
                          capture_output=True, text=True, check=False, timeout=900)


def _copy(thor_root_complete: Path, tmp_path: Path) -> Path:
    return _data.link_copy(thor_root_complete, tmp_path / "root")


def _blocking(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["severity"] == "blocks-import"]


def test_undefined_symbols_match_the_loader(thor_root_complete: Path, tmp_path: Path) -> None:
    """libtorch_cpu.so without its LAPACK DT_NEEDED: the file is still in torch/lib, so every
    library is found, but sgesdd_ and the other LAPACK routines are defined nowhere in scope."""
    root = _copy(thor_root_complete, tmp_path)
    lib = root / SITE.lstrip("/") / "torch" / "lib" / "libtorch_cpu.so"
    _data.patchelf("--remove-needed", LAPACK, str(_data.unshare_file(lib)))
    trace = _data.run_qemu_trace(root, lib, {"LD_BIND_NOW": "1", "LD_WARN": "1"})
    truth = {m["name"] for m in _UNDEFINED.finditer(trace.raw) if m["path"].endswith(lib.name)}
    assert "sgesdd_" in truth and not trace.not_found, trace.raw[-2000:]

    code, document, stderr = _diagnose("--root", str(root), "--site-packages",
                                       str(root / SITE.lstrip("/")))
    assert code == 1, stderr
    found = [f for f in document["findings"] if f["kind"] == "undefined-symbols"]
    assert len(found) == 1, document["findings"]
    finding = found[0]
    assert finding["library"] == f"{SITE}/torch/lib/libtorch_cpu.so"
    assert finding["severity"] == "blocks-import" and finding["phases"] == ["import"]
    assert {s.split("@")[0] for s in finding["symbols"]} == truth
    assert len(finding["symbols"]) == len(truth) == 72
    assert document["process"]["interpreter"] == "/usr/bin/python3.11"
    assert _blocking(document) == [finding]

    imported = _import_torch(root, "/usr/bin/python3.11")
    assert imported.returncode != 0
    said = re.search(r"undefined symbol: (\S+)", imported.stderr)
    assert said is not None and said.group(1) in truth, imported.stderr[-2000:]
    # No library to install fixes it: the plan says so instead of claiming to fix everything.
    planned = subprocess.run([sys.executable, "-m", "resolver", "plan", "--json", "--no-cache",
                              "--root", str(root), "--site-packages",
                              str(root / SITE.lstrip("/"))],
                             capture_output=True, text=True, check=False, timeout=600)
    assert planned.returncode == 1, planned.stderr
    plan = json.loads(planned.stdout)
    validate("plan", plan)
    assert any("undefined-symbols" in item["why"] for item in plan["unfixable"]), plan


def test_complete_root_binds_every_symbol(thor_root_complete: Path) -> None:
    """Unchanged, nothing is undefined: not in our binding, not in the real loader's."""
    lib = thor_root_complete / SITE.lstrip("/") / "torch" / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cuda.so"):
        trace = _data.run_qemu_trace(thor_root_complete, lib / name,
                                     {"LD_BIND_NOW": "1", "LD_WARN": "1"})
        assert not _UNDEFINED.search(trace.raw), trace.raw[-2000:]
    code, document, stderr = _diagnose("--root", str(thor_root_complete), "--site-packages",
                                       str(thor_root_complete / SITE.lstrip("/")))
    assert code == 0, stderr
    assert not [f for f in document["findings"] if f["kind"] == "undefined-symbols"]
    assert document["process"]["symbols_unjudged"] == []
    # The interpreter is the main program: its own libraries are loaded first.
    assert document["attempts"][0]["phase"] == "interpreter"
    assert document["objects"][0]["path"] == "/usr/bin/python3.11"


def _conda_root(thor_root_complete: Path, tmp_path: Path) -> Path:
    """A conda-style prefix /opt/conda: python3.11 with DT_RPATH $ORIGIN/../lib, torch in its
    site-packages, and the only libstdc++ in /opt/conda/lib (the system's moved there)."""
    root = _copy(thor_root_complete, tmp_path)
    conda = root / "opt" / "conda"
    (conda / "bin").mkdir(parents=True)
    (conda / "lib" / "python3.11").mkdir(parents=True)
    python = conda / "bin" / "python3.11"
    shutil.copy2(root / "usr" / "bin" / "python3.11", python)
    _data.patchelf("--force-rpath", "--set-rpath", "$ORIGIN/../lib", str(python))
    (root / SITE.lstrip("/")).rename(conda / "lib" / "python3.11" / "site-packages")
    system = root / "usr" / "lib" / "aarch64-linux-gnu"
    for path in sorted(system.glob("libstdc++.so.6*")):
        path.rename(conda / "lib" / path.name)
    return root


def test_interpreter_rpath_takes_part(thor_root_complete: Path, tmp_path: Path) -> None:
    """torch's libraries have DT_RPATH, so the main program's DT_RPATH ends their searches:
    libstdc++.so.6 comes from /opt/conda/lib, where only the interpreter's RPATH leads."""
    root = _conda_root(thor_root_complete, tmp_path)
    site = root / "opt/conda/lib/python3.11/site-packages"
    imported = _import_torch(root, "/opt/conda/bin/python3.11", {"PYTHONPATH": str(site)})
    assert imported.returncode == 0, imported.stderr[-2000:]

    for args in (("--site-packages", str(site)), ("--python", "/opt/conda/bin/python3.11",
                                                   "--site-packages", str(site))):
        code, document, stderr = _diagnose("--root", str(root), *args)
        assert code == 0, (args, stderr, _blocking(document))
        assert document["process"]["interpreter"] == "/opt/conda/bin/python3.11"
        libstdcxx = [o for o in document["objects"] if o["soname"] == "libstdc++.so.6"]
        # As glibc names it: the RPATH directory as written, `$ORIGIN` expanded.
        assert [o["path"] for o in libstdcxx] == ["/opt/conda/bin/../lib/libstdc++.so.6"]
        assert libstdcxx[0]["real"].startswith("/opt/conda/lib/libstdc++.so.6.")
        assert libstdcxx[0]["found_via"] == {"rule": "DT_RPATH",
                                             "owner": "/opt/conda/bin/python3.11"}

    # Without the interpreter (a wheel's view: no main program), nothing finds libstdc++.
    (root / "opt/conda/bin/python3.11").unlink()
    code, document, _ = _diagnose("--root", str(root), "--site-packages", str(site))
    assert code == 1
    assert "libstdc++.so.6" in {f["subject"] for f in _blocking(document)}


def test_python_in_another_root_is_run_under_qemu(thor_root_complete: Path) -> None:
    """--python names the root's interpreter: it runs under qemu-user and says where torch is."""
    code, document, stderr = _diagnose("--root", str(thor_root_complete), "--python",
                                       "/usr/bin/python3.11")
    assert code == 0, stderr
    assert document["torch"]["site"] == SITE
    assert SITE in document["process"]["sys_path"]
    assert "/usr/lib/python3.11" in document["process"]["sys_path"]


def test_sys_path_purelib_and_platlib(thor_root_complete: Path, tmp_path: Path) -> None:
    """torch in /usr/local/lib64/.../site-packages, the nvidia wheels in /usr/local/lib/...:
    its libraries' RPATH misses them, torch's preload finds them on sys.path."""
    root = _copy(thor_root_complete, tmp_path)
    purelib = root / "usr/local/lib/python3.11/site-packages"
    (root / SITE.lstrip("/")).rename(purelib)
    platlib = root / "usr/local/lib64/python3.11/site-packages"
    platlib.mkdir(parents=True)
    for path in [purelib / "torch", *purelib.glob("torch-*.dist-info")]:
        path.rename(platlib / path.name)
    guest = "/usr/local/lib64/python3.11/site-packages:/usr/local/lib/python3.11/site-packages"
    imported = _import_torch(root, "/usr/bin/python3.11", {"PYTHONPATH": guest})
    assert imported.returncode == 0, imported.stderr[-2000:]

    code, document, stderr = _diagnose("--root", str(root), "--site-packages", str(platlib))
    assert code == 0, (stderr, _blocking(document))
    assert document["process"]["sys_path"][:2] == ["/usr/local/lib64/python3.11/site-packages",
                                                   "/usr/local/lib/python3.11/site-packages"]
    assert any(a["why"].endswith("retry") and a["ok"] for a in document["attempts"])
    # Told a sys.path without the purelib, the preload cannot recover: as the loader says.
    code, document, _ = _diagnose("--root", str(root), "--site-packages", str(platlib),
                                  "--sys-path", "/usr/local/lib64/python3.11/site-packages")
    assert code == 1
    assert {f["kind"] for f in _blocking(document)} >= {"missing-library"}


def test_ld_preload_takes_part(thor_root_complete: Path) -> None:
    """LD_PRELOAD's library answers the same soname for everyone after it, as the loader does."""
    system_gomp = "/usr/lib/aarch64-linux-gnu/libgomp.so.1"
    assert (thor_root_complete / system_gomp.lstrip("/")).exists()
    lib = thor_root_complete / SITE.lstrip("/") / "torch" / "lib" / "libtorch_cpu.so"
    trace = _data.run_qemu_trace(thor_root_complete, lib, {"LD_PRELOAD": system_gomp})
    # The preload is listed first by its path; libtorch_cpu.so's libgomp.so.1 is that object.
    assert trace.found.get(system_gomp) == system_gomp, trace.raw[-2000:]
    assert "libgomp.so.1" not in trace.found, trace.raw[-2000:]
    code, document, stderr = _diagnose("--root", str(thor_root_complete), "--site-packages",
                                       str(thor_root_complete / SITE.lstrip("/")),
                                       "--ld-preload", system_gomp)
    assert code == 0, stderr
    gomp = [o["path"] for o in document["objects"] if o["soname"] == "libgomp.so.1"]
    assert gomp == [system_gomp]
    # A preload that does not exist is ignored, as ld.so does ("cannot be preloaded").
    code, document, _ = _diagnose("--root", str(thor_root_complete), "--site-packages",
                                  str(thor_root_complete / SITE.lstrip("/")),
                                  "--ld-preload", "/nowhere/libnothing.so")
    assert code == 0
    info = [f for f in document["findings"] if f["subject"] == "/nowhere/libnothing.so"]
    assert [f["severity"] for f in info] == ["info"]


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the Thor root's ld.so.cache is "
                                "built by its ldconfig -r, which chroots")


_TEGRA_R36_4 = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                "DATE: Wed Jan  8 01:49:37 UTC 2025\n")


def test_cpu_only_torch_on_a_jetson(thor_root_complete: Path, torch_arm_cpu_wheel: Path,
                                    tmp_path: Path) -> None:
    """PyPI's aarch64 torch 2.9.1 is a CPU build: on an L4T R36.4 root (Orin, sm_87) it imports
    and CUDA is unusable, which is a finding of its own severity; without L4T it is none."""
    root = _copy(thor_root_complete, tmp_path)
    target = root / "opt" / "torch291"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--only-binary=:all:", "--platform", "manylinux_2_28_aarch64",
                    "--python-version", "3.11", "--target", str(target),
                    str(torch_arm_cpu_wheel)], check=True, capture_output=True, timeout=900)
    real = subprocess.run(
        [_data.QEMU_AARCH64, "-L", str(root), "-E", f"PYTHONPATH=/opt/torch291:{SITE}",
         str(root / "usr/bin/python3.11"), "-c",
         "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"],
        capture_output=True, text=True, check=False, timeout=900)
    assert real.returncode == 0, real.stderr[-2000:]
    version, cuda, available = real.stdout.split()
    assert (cuda, available) == ("None", "False")

    code, document, stderr = _diagnose("--root", str(root), "--wheel", str(torch_arm_cpu_wheel))
    assert code == 0, stderr
    assert not [f for f in document["findings"] if f["kind"] == "cpu-only-torch"]
    release = root / "etc" / "nv_tegra_release"
    release.write_text(_TEGRA_R36_4)
    code, document, stderr = _diagnose("--root", str(root), "--wheel", str(torch_arm_cpu_wheel))
    assert code == 0, stderr
    found = [f for f in document["findings"] if f["kind"] == "cpu-only-torch"]
    assert len(found) == 1, document["findings"]
    assert found[0]["severity"] == "cuda-unusable"
    assert found[0]["torch_version"] == version and found[0]["gpu_arch"] == 87
    assert found[0]["evidence"] == "L4T R36.4.3"
    assert document["summary"]["findings"]["cuda-unusable"] == 1


def _load_after_torch(root: Path, modules: list[str]) -> dict[str, str]:
    """A real `import torch`, then ctypes.CDLL (RTLD_NOW, RTLD_LOCAL) of each module: what
    `import torchvision` does with its compiled modules. "ok" or the loader's error, each."""
    script = ("import ctypes, json, sys, torch\n"
              "said = {}\n"
              "for m in sys.argv[1:]:\n"
              "    try:\n"
              "        ctypes.CDLL(m); said[m] = 'ok'\n"
              "    except OSError as err:\n"
              "        said[m] = str(err)\n"
              "print(json.dumps(said))\n")
    done = subprocess.run([_data.QEMU_AARCH64, "-L", str(root), str(root / "usr/bin/python3.11"),
                           "-c", script, *modules],
                          capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_extensions_that_load_torch(thor_root_complete: Path,
                                    torchvision_arm_wheels: dict[str, Path],
                                    tmp_path: Path) -> None:
    """torchvision is found from its dist-info (it pins torch, its modules link torch's
    libraries), and diagnosed as its own phase: the one built for torch 2.11.0 loads; the one
    built for torch 2.9.1 misses its pin and a C++ symbol, as the real loader says, while
    `import torch` itself is fine."""
    modules = [f"{SITE}/torchvision/_C.so", f"{SITE}/torchvision/image.so"]
    for version, good in (("0.26.0", True), ("0.24.1", False)):
        root = _data.link_copy(thor_root_complete, tmp_path / version)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--only-binary=:all:", "--platform", "manylinux_2_28_aarch64",
                        "--python-version", "3.11", "--target", str(root / SITE.lstrip("/")),
                        str(torchvision_arm_wheels[version])],
                       check=True, capture_output=True, timeout=900)
        real = _load_after_torch(root, modules)
        code, document, stderr = _diagnose("--root", str(root), "--site-packages",
                                           str(root / SITE.lstrip("/")))
        assert code == 0, stderr
        ours = [f for f in document["findings"] if f["phases"] == ["import torchvision"]]
        assert {a["name"] for a in document["attempts"]
                if a["phase"] == "import torchvision"} == set(modules)
        if good:
            assert real == dict.fromkeys(modules, "ok")
            assert ours == []
            continue
        said = re.search(r"undefined symbol: (\S+)", real[modules[0]])
        assert said is not None, real
        assert real[modules[1]] == "ok"
        kinds = {f["kind"]: f for f in ours}
        assert set(kinds) == {"torch-pin-mismatch", "undefined-symbols"}
        assert kinds["torch-pin-mismatch"]["requirement"] == "torch (==2.9.1)"
        assert kinds["torch-pin-mismatch"]["torch_version"] == "2.11.0+cu130"
        undefined = kinds["undefined-symbols"]
        assert undefined["library"] == modules[0] and said.group(1) in undefined["symbols"]
        assert {f["severity"] for f in ours} == {"breaks-feature"}


def test_running_the_root_s_python_runs_nothing_else(thor_root_complete: Path,
                                                      tmp_path: Path) -> None:
    """--python runs only a Python interpreter, isolated: not another program of the root (its
    ldconfig would write this machine's cache through qemu -L), not the root's .pth code, not
    this shell's PYTHONPATH; a root given through a symlink works the same."""
    root = _copy(thor_root_complete, tmp_path)
    marker = tmp_path / "pth-ran"
    (root / "opt" / "extra").mkdir(parents=True)
    (root / SITE.lstrip("/") / "zz-evil.pth").write_text(
        f"/opt/extra\nimport pathlib; pathlib.Path({str(marker)!r}).write_text('x')\n")
    host_cache = os.stat("/etc/ld.so.cache")
    done = subprocess.run([sys.executable, "-m", "resolver", "diagnose", "--root", str(root),
                           "--python", "/sbin/ldconfig", "--no-cache"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 2 and "not a Python interpreter" in done.stderr, done.stderr
    assert os.stat("/etc/ld.so.cache").st_mtime_ns == host_cache.st_mtime_ns
    link = tmp_path / "root-link"
    link.symlink_to(root)
    env = {**os.environ, "PYTHONPATH": "/opt/from-this-shell"}
    done = subprocess.run([sys.executable, "-m", "resolver", "diagnose", "--root", str(link),
                           "--python", "/usr/bin/python3.11", "--json", "--no-cache"],
                          capture_output=True, text=True, check=False, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["torch"]["site"] == SITE
    assert "/opt/from-this-shell" not in document["process"]["sys_path"]
    # Its .pth path lines are read (its import lines are not run), after their folder.
    sys_path = document["process"]["sys_path"]
    assert sys_path.index("/opt/extra") == sys_path.index(SITE) + 1
    assert document["target"]["python"] == "3.11"
    assert not marker.exists()

"""The Python process a root holds, derived without running it: its interpreter, its sys.path
(Lib/site.py's rules, PEP 405 venvs, .pth files), and the pins of packages that load torch
(PEP 508 markers evaluated for the target). Inputs are real files: a real ELF interpreter
copied from this machine, text files as site.py reads them."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from packaging.version import Version

from resolver.findings.derive import cpu_only_findings, pin_findings
from resolver.loader.extensions import Extension, import_phase
from resolver.loader.torch_import import find_torch_install
from resolver.target.platform import read_platform
from resolver.target.python_env import default_interpreter, find_interpreter, site_sys_path
from resolver.target.rootfs import RootFS

if TYPE_CHECKING:
    from pathlib import Path


def _python(root: Path, path: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(sys.executable), target)


def test_venv_with_system_site_packages(tmp_path: Path) -> None:
    base_site = tmp_path / "usr/local/lib/python3.11/dist-packages"
    (base_site / "nvidia").mkdir(parents=True)
    venv = tmp_path / "opt/venv"
    (venv / "lib/python3.11/site-packages/torch").mkdir(parents=True)
    _python(tmp_path, "/usr/bin/python3.11")
    (venv / "bin").mkdir()
    (venv / "bin/python3").symlink_to("/usr/bin/python3.11")
    config = venv / "pyvenv.cfg"
    config.write_text("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n")
    rootfs = RootFS(tmp_path)
    site = "/opt/venv/lib/python3.11/site-packages"
    assert site_sys_path(rootfs, site) == (site,)
    assert find_interpreter(rootfs, site) == "/opt/venv/bin/python3"
    config.write_text("home = /usr/bin\ninclude-system-site-packages = true\n")
    assert site_sys_path(RootFS(tmp_path), site) == (
        site, "/usr/local/lib/python3.11/dist-packages")


def test_pth_lines_as_site_py_reads_them(tmp_path: Path) -> None:
    site = tmp_path / "usr/local/lib/python3.11/dist-packages"
    (site / "extra").mkdir(parents=True)
    (tmp_path / "opt/abs").mkdir(parents=True)
    (site / "a.pth").write_bytes(b"# comment\nextra\nimport os; os.getcwd()\n/opt/abs\n"
                                 b"missing\nnu\x00l\n")
    dirs = site_sys_path(RootFS(tmp_path), "/usr/local/lib/python3.11/dist-packages")
    assert dirs == ("/usr/local/lib/python3.11/dist-packages",
                    "/usr/local/lib/python3.11/dist-packages/extra", "/opt/abs")


def test_a_wheel_is_imported_by_the_newest_python3_x(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3.9").write_text("#!/bin/sh\n")  # a shim is not the process
    _python(tmp_path, "/usr/bin/python3.11")
    assert default_interpreter(RootFS(tmp_path)) == "/usr/bin/python3.11"
    _python(tmp_path, "/usr/bin/python3")
    assert default_interpreter(RootFS(tmp_path)) == "/usr/bin/python3"


def test_pins_for_another_machine_or_python_do_not_count(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch/version.py").write_text("__version__ = '2.11.0+cu130'\ncuda = '13.0'\n")
    torch = find_torch_install(RootFS(tmp_path), "/site")
    platform = read_platform(RootFS(tmp_path), python=Version("3.11"))

    def ext(requirement: str) -> Extension:
        return Extension(name="tv", version="1", package="tv", modules=("/site/tv/_C.so",),
                         torch_requirements=(requirement,))

    other = "aarch64" if platform.arch == "x86_64" else "x86_64"
    pins = [ext("torch==2.9.1; python_version < '3.8'"),
            ext(f"torch==2.9.1; platform_machine == '{other}'"),
            ext("torch (==2.11.0)"), ext("torch>=2.12")]
    found = pin_findings(pins, torch, import_phase, platform)
    assert [f.requirement for f in found] == ["torch>=2.12"]


def test_no_version_py_is_not_a_cpu_build(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch/lib").mkdir(parents=True)
    (site / "torch/lib/libtorch_cuda.so").write_bytes(b"")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R38 (release), REVISION: 2.0, GCID: 1\n")
    rootfs = RootFS(tmp_path)
    platform = read_platform(rootfs)
    torch = find_torch_install(rootfs, "/site")
    assert torch is not None and torch.version is None and not torch.version_known
    assert cpu_only_findings(torch, platform) == ()
    (site / "torch/version.py").write_text("__version__ = '2.9.1+cpu'\ncuda = None\n")
    torch = find_torch_install(RootFS(tmp_path), "/site")
    # version.py says CPU, but libtorch_cuda.so is there: not taken as a CPU build either.
    assert cpu_only_findings(torch, platform) == ()
    (site / "torch/lib/libtorch_cuda.so").unlink()
    torch = find_torch_install(RootFS(tmp_path), "/site")
    [finding] = cpu_only_findings(torch, platform)
    assert finding.evidence == "L4T R38.2.0" and finding.gpu_arch == 110

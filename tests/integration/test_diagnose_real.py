"""diagnose on real torch installs, checked against the real glibc loader in trace mode.

x86_64: torch 2.14.1 (CUDA 13) alone, with its nvidia-* wheels, and torch 2.13.0+cpu, on this
host's live root, traced by this host's own ld.so. What that root holds is the host's business
(a CUDA toolkit or cuDNN registered in ld.so.conf, an NVIDIA driver's libcuda.so.1): every
assertion is relative to what its loader finds, never a fixed list of missing libraries. Only an
x86_64 host can run those: on any other every x86_64 library is the wrong architecture for the
live root and its loader cannot trace them, so they skip. aarch64: torch 2.11.0 from PyPI (a
CUDA 13 SBSA build) in a root of real arm64 Debian packages, traced by Debian's arm64 ld.so under
qemu, on any host. "Exactly what the real loader does not find" is the assertion.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import _data
import pytest
from cli_helpers import run_cli, subjects, validate

if TYPE_CHECKING:
    from pathlib import Path

    from _data import HostTrace, QemuTrace

pytestmark = pytest.mark.slow
x86_64_live_root = pytest.mark.skipif(
    _data.HOST_MACHINE != _data.EM_X86_64,
    reason="x86_64 torch on this host's live root needs an x86_64 host: elsewhere every library "
    "is the wrong architecture and the host's loader cannot trace them",
)


def _lib(site: Path, name: str) -> Path:
    return site / "torch" / "lib" / name


def _extension(site: Path) -> Path:
    return next((site / "torch").glob("_C.*.so"))


def _cuda_feature_missing(document: dict[str, Any], site: Path, host_trace: HostTrace) -> None:
    """libcuda.so.1 (the driver, which no wheel brings) is reported missing for a feature
    exactly when the real loader cannot find it for libcaffe2_nvrtc.so, which needs it: missing
    here, found on a host with the NVIDIA driver installed."""
    nvrtc = host_trace(_lib(site, "libcaffe2_nvrtc.so"), {})
    assert "libcuda.so.1" in nvrtc.not_found | set(nvrtc.found)
    reported = subjects(document, "breaks-feature", "missing-library")
    assert ("libcuda.so.1" in reported) == ("libcuda.so.1" in nvrtc.not_found)


@x86_64_live_root
def test_torch_alone_misses_exactly_what_ld_so_misses(torch_x86_alone: Path,
                                                      host_trace: HostTrace) -> None:
    run = run_cli("diagnose", "--site-packages", str(torch_x86_alone), "--json",
                  "--ld-library-path", "")
    document = run.json()
    validate("diagnose", document)
    traces = [host_trace(_lib(torch_x86_alone, "libtorch_global_deps.so"), {}),
              host_trace(_extension(torch_x86_alone), {})]
    real = frozenset().union(*(trace.not_found for trace in traces))
    assert subjects(document, "blocks-import", "missing-library") == set(real)
    # The CUDA libraries torch's RPATH looks for in nvidia/*: wherever this host has them
    # (nowhere, or a toolkit in ld.so.conf), import fails exactly when the loader fails.
    fails = bool(real) or any(trace.version_errors for trace in traces)
    assert run.code == int(fails), run.stderr
    _cuda_feature_missing(document, torch_x86_alone, host_trace)


@x86_64_live_root
def test_torch_with_nvidia_wheels_lacks_at_most_the_driver(torch_x86_full: Path,
                                                           host_trace: HostTrace) -> None:
    run = run_cli("diagnose", "--site-packages", str(torch_x86_full), "--json",
                  "--ld-library-path", "")
    assert run.code == 0, run.stdout[-2000:]
    document = run.json()
    validate("diagnose", document)
    assert subjects(document, "blocks-import") == set()
    assert host_trace(_extension(torch_x86_full), {}).not_found == frozenset()
    # Everything else torch opens later comes with the wheels: only the driver may be missing.
    nvrtc = host_trace(_lib(torch_x86_full, "libcaffe2_nvrtc.so"), {})
    assert nvrtc.not_found <= {"libcuda.so.1"}
    assert subjects(document, "breaks-feature", "missing-library") == set(nvrtc.not_found)
    _cuda_feature_missing(document, torch_x86_full, host_trace)
    # Every library the real loader found for torch._C is the file we say it loads.
    ours = {o["soname"]: os.path.realpath(o["real"]) for o in document["objects"] if o["soname"]}
    for name, path in host_trace(_extension(torch_x86_full), {}).found.items():
        if name in ours and "ld-linux" not in name:
            assert ours[name] == os.path.realpath(path), name


@x86_64_live_root
def test_cpu_torch_is_clean(torch_cpu: Path) -> None:
    run = run_cli("diagnose", "--site-packages", str(torch_cpu), "--json", "--ld-library-path", "")
    assert run.code == 0
    document = run.json()
    validate("diagnose", document)
    assert [f for f in document["findings"] if f["severity"] != "info"] == []
    assert document["torch"]["cuda"] is None


@x86_64_live_root
def test_wheel_gives_the_same_findings_as_its_install(torch_x86_wheel: Path,
                                                      torch_x86_alone: Path) -> None:
    from_wheel = run_cli("diagnose", "--wheel", str(torch_x86_wheel), "--json",
                         "--ld-library-path", "")
    installed = run_cli("diagnose", "--site-packages", str(torch_x86_alone), "--json",
                        "--ld-library-path", "")
    assert from_wheel.code == installed.code
    for severity in ("blocks-import", "breaks-feature"):
        assert subjects(from_wheel.json(), severity) == subjects(installed.json(), severity)
    validate("diagnose", from_wheel.json())


def test_aarch64_torch_in_arm64_root_matches_qemu_ld_so(torch_arm_site: Path, arm64_root: Path,
                                                         qemu_trace: QemuTrace,
                                                         tmp_path: Path) -> None:
    # qemu's ld.so needs the files inside its root: a copy of the root with a link to the site.
    root = tmp_path / "root"
    shutil.copytree(arm64_root, root, symlinks=True)
    (root / "opt").mkdir(exist_ok=True)
    (root / "opt" / "site").symlink_to(torch_arm_site)
    guest_site = root / "opt" / "site"
    run = run_cli("diagnose", "--site-packages", str(torch_arm_site), "--root", str(arm64_root),
                  "--gpu-arch", "sm_110", "--json")
    assert run.code == 1
    document = run.json()
    validate("diagnose", document)
    assert document["target"]["arch"] == "aarch64"
    real = qemu_trace(root, _lib(guest_site, "libtorch_global_deps.so")).not_found
    real |= qemu_trace(root, guest_site / "torch" / _extension(torch_arm_site).name).not_found
    assert subjects(document, "blocks-import", "missing-library") == set(real)
    # NVPL is bundled in torch/lib of PyPI's aarch64 wheel: never reported missing.
    assert not any("nvpl" in s for s in subjects(document, "blocks-import"))
    # The CUDA 13 SBSA build carries code the Thor GPU (sm_110) can run.
    cuda = next(o for o in document["objects"] if o["soname"] == "libtorch_cuda.so")
    assert cuda["gpu_code"]
    assert "no-kernel-for-gpu" not in {f["kind"] for f in document["findings"]}


def test_x86_wheel_on_arm64_root_is_the_wrong_architecture(torch_x86_wheel: Path,
                                                           arm64_root: Path) -> None:
    run = run_cli("diagnose", "--wheel", str(torch_x86_wheel), "--root", str(arm64_root), "--json")
    assert run.code == 1
    document = run.json()
    kinds = {f["kind"] for f in document["findings"] if f["severity"] == "blocks-import"}
    assert "wheel-tag-mismatch" in kinds
    assert "wrong-architecture" in kinds


@x86_64_live_root
def test_no_kernel_for_a_gpu_the_wheel_was_not_built_for(torch_x86_full: Path) -> None:
    # torch 2.14.1 x86_64 carries sm_75..sm_121a but not sm_110 (Thor) nor sm_87 (Orin).
    thor = run_cli("diagnose", "--site-packages", str(torch_x86_full), "--gpu-arch", "sm_110",
                   "--json", "--ld-library-path", "")
    document = thor.json()
    validate("diagnose", document)
    missing = [f for f in document["findings"] if f["kind"] == "no-kernel-for-gpu"]
    assert {f["library"].rsplit("/", 1)[-1] for f in missing} >= {"libtorch_cuda.so"}
    assert all(f["severity"] == "cuda-unusable" and f["gpu_arch"] == 110 for f in missing)
    carried = next(f["codes"] for f in missing if f["library"].endswith("libtorch_cuda.so"))
    assert "sm_120" in carried and "sm_110" not in carried
    assert thor.code == 0  # import works; CUDA kernels do not
    hopper = run_cli("diagnose", "--site-packages", str(torch_x86_full), "--gpu-arch", "9.0",
                     "--json", "--ld-library-path", "")
    assert "no-kernel-for-gpu" not in {f["kind"] for f in hopper.json()["findings"]}

"""Verification: the target's own interpreter imports torch and computes, in a subprocess.

`VERIFY_SCRIPT` runs in the target interpreter (never in ours: this tool does not import
torch) and prints one JSON object: `torch.__version__`, `torch.version.cuda`,
`torch.backends.cudnn.version()`, the build's CUDA architectures (`torch.cuda.get_arch_list()`,
which is empty without a driver, so from `torch._C._cuda_getArchFlags()` where it exists; an
empty list is no verdict: diagnose reads the kernels themselves), whether CUDA is available,
a CPU matmul and a LAPACK call (`torch.linalg.svd`, which runs NVPL or OpenBLAS on aarch64),
each checked for a right answer and timed; and where CUDA is available, a CUDA matmul and a
cuDNN convolution timed against the same work on the CPU. `judge` turns that into a verdict
against what the run expects: a torch that became a CPU build, lost its CUDA version, or has
no code for the target's GPU fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from resolver.errors import ApplyError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["VERIFY_SCRIPT", "Expectation", "Verdict", "judge", "run_verification"]

VERIFY_SCRIPT = r"""
import json, sys, time
out = {}
def timed(work, repeat=3):
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        spent = time.perf_counter() - started
        best = spent if best is None else min(best, spent)
    return result, round(best * 1000, 3)
try:
    import torch
except BaseException as err:
    print(json.dumps({"import_error": "%s: %s" % (type(err).__name__, err)}))
    sys.exit(0)
out["version"] = torch.__version__
out["cuda"] = torch.version.cuda
try:
    out["cudnn"] = torch.backends.cudnn.version()
except BaseException as err:
    out["cudnn"] = None
    out["cudnn_error"] = "%s: %s" % (type(err).__name__, err)
# get_arch_list() is empty without a driver; the build's own flags are there regardless.
flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
out["arch_list"] = flags.split() if flags else list(torch.cuda.get_arch_list())
out["cuda_available"] = bool(torch.cuda.is_available())
out["errors"] = []
try:
    torch.manual_seed(0)
    a = torch.randn(512, 512, dtype=torch.float64)
    product, out["cpu_matmul_ms"] = timed(lambda: a @ a)
    if abs(float(product[3, 5]) - float((a[3] * a[:, 5]).sum())) > 1e-9:
        out["errors"].append("CPU matmul: wrong result")
    m = torch.randn(64, 64, dtype=torch.float64)
    (u, s, vh), out["svd_ms"] = timed(lambda: torch.linalg.svd(m))
    error = float((u @ torch.diag(s) @ vh - m).abs().max())
    if error > 1e-8:
        out["errors"].append("torch.linalg.svd: reconstruction off by %g" % error)
except BaseException as err:
    out["errors"].append("CPU: %s: %s" % (type(err).__name__, err))
if out["cuda_available"]:
    try:
        x = torch.randn(2048, 2048)
        _, out["cpu_matmul_2048_ms"] = timed(lambda: x @ x, 1)
        g = x.cuda()
        def on_gpu():
            r = g @ g
            torch.cuda.synchronize()
            return r
        on_gpu()
        _, out["cuda_matmul_2048_ms"] = timed(on_gpu)
        images = torch.randn(8, 32, 64, 64)
        conv = torch.nn.Conv2d(32, 64, 3)
        with torch.no_grad():
            _, out["cpu_conv_ms"] = timed(lambda: conv(images), 1)
            conv_gpu, images_gpu = conv.cuda(), images.cuda()
            def conv_on_gpu():
                r = conv_gpu(images_gpu)
                torch.cuda.synchronize()
                return r
            conv_on_gpu()
            _, out["cudnn_conv_ms"] = timed(conv_on_gpu)
    except BaseException as err:
        out["errors"].append("CUDA: %s: %s" % (type(err).__name__, err))
print(json.dumps(out))
"""

_TIMEOUT = 900.0  # seconds: an aarch64 import under qemu-user takes about half a minute


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """What the verified torch must be."""

    cuda_build: bool  # the torch the run installed or kept is a CUDA build
    gpu_arch: int | None = None  # the target's GPU (sm_XY as 10*X+Y), when known
    gpu_present: bool = False  # the target has a GPU and its driver: CUDA must be available


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The target interpreter's report and what is wrong with it."""

    ok: bool
    problems: tuple[str, ...]
    report: Mapping[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def run_verification(argv: Sequence[str], env: Mapping[str, str] | None = None,
                     timeout: float = _TIMEOUT) -> tuple[dict[str, object], float]:
    """Run `VERIFY_SCRIPT` with the interpreter `argv`; its report and the seconds it took.

    Raises:
        ApplyError: the interpreter cannot be run, times out, or prints no report.

    """
    started = time.monotonic()
    try:
        done = subprocess.run([*argv, "-c", VERIFY_SCRIPT], capture_output=True, text=True,
                              check=False, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ApplyError(f"{argv[-1]}: cannot run the verification: {err}") from None
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ApplyError(f"{argv[-1]}: the verification printed no report (exit "
                         f"{done.returncode}: {said})")
    return report, time.monotonic() - started


def _has_code_for(arch_list: Sequence[str], gpu_arch: int) -> bool:
    """True when the build can run on `gpu_arch`.

    It can with SASS of the GPU's major at or below its minor, or PTX at or below the GPU
    (NVIDIA's CUDA C++ Programming Guide, "Binary Compatibility").
    """
    major = gpu_arch // 10
    for entry in arch_list:
        kind, _, number = entry.partition("_")
        digits = number.rstrip("af")
        if not digits.isdigit():
            continue
        value = int(digits)
        if kind == "sm" and value // 10 == major and value <= gpu_arch:
            return True
        if kind == "compute" and value <= gpu_arch:
            return True
    return False


def judge(report: Mapping[str, object], expect: Expectation, seconds: float = 0.0) -> Verdict:
    """What is wrong with the report, given what the run expects."""
    problems: list[str] = []
    if "import_error" in report:
        problems.append(f"import torch failed: {report['import_error']}")
        return Verdict(ok=False, problems=tuple(problems), report=report, seconds=seconds)
    arch_list = [str(a) for a in report.get("arch_list") or []]  # type: ignore[attr-defined]
    if expect.cuda_build and not report.get("cuda"):
        problems.append(f"torch {report.get('version')} is a CPU build (torch.version.cuda is "
                        "None); a CUDA build was expected")
    if expect.cuda_build and expect.gpu_arch is not None and arch_list and not _has_code_for(
            arch_list, expect.gpu_arch):
        problems.append(f"torch has no code for sm_{expect.gpu_arch} (it holds "
                        f"{', '.join(arch_list) or 'none'})")
    if expect.cuda_build and expect.gpu_present and not report.get("cuda_available"):
        problems.append("torch.cuda.is_available() is False on a target with a GPU")
    problems += [str(e) for e in report.get("errors") or []]  # type: ignore[attr-defined]
    return Verdict(ok=not problems, problems=tuple(problems), report=report, seconds=seconds)

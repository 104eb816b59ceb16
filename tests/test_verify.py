"""Verification's verdict on the target interpreter's report: what the script prints (as the
real x86 and aarch64 runs printed it) judged against what the run expects; and the script
itself run by this interpreter, which has no torch, says so in one report."""

from __future__ import annotations

import sys

from resolver.apply.verify import Expectation, judge, run_verification

# What VERIFY_SCRIPT printed for torch 2.14.1+cu130 in an x86 venv here (no GPU), and for
# torch 2.11.0+cu130 aarch64 under qemu before it read the build's arch flags directly
# (`torch.cuda.get_arch_list()` is [] without a driver).
X86 = {"arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
       "cpu_matmul_ms": 7.056, "cuda": "13.0", "cuda_available": False, "cudnn": 92400,
       "errors": [], "svd_ms": 1.22, "version": "2.14.1+cu130"}
THOR = {"arch_list": [], "cpu_matmul_ms": 942.38, "cuda": "13.0", "cuda_available": False,
        "cudnn": 91900, "errors": [], "svd_ms": 27.374, "version": "2.11.0+cu130"}


def test_a_cuda_build_with_code_for_the_gpu_passes_without_a_driver() -> None:
    verdict = judge(X86, Expectation(cuda_build=True, gpu_arch=120))
    assert verdict.ok and verdict.problems == ()
    # No arch list (no driver, an older script): no verdict on the GPU's code from it.
    assert judge(THOR, Expectation(cuda_build=True, gpu_arch=110)).ok


def test_sass_of_the_same_major_or_ptx_at_or_below_the_gpu_is_enough() -> None:
    # sm_87 (Orin) runs sm_80 SASS; sm_121 runs sm_120 SASS; compute_120 PTX JITs for sm_121.
    assert judge(X86, Expectation(cuda_build=True, gpu_arch=87)).ok
    assert judge(X86, Expectation(cuda_build=True, gpu_arch=121)).ok
    assert judge({**X86, "arch_list": ["sm_90", "compute_120"]},
                 Expectation(cuda_build=True, gpu_arch=121)).ok
    lacking = judge(X86, Expectation(cuda_build=True, gpu_arch=110))  # Thor: x86 has no sm_11x
    assert not lacking.ok and "no code for sm_110" in lacking.problems[0]


def test_a_cpu_build_or_lost_cuda_fails_when_cuda_was_expected() -> None:
    cpu = {**X86, "version": "2.13.0+cpu", "cuda": None, "cudnn": None, "arch_list": []}
    verdict = judge(cpu, Expectation(cuda_build=True, gpu_arch=None))
    assert not verdict.ok and "is a CPU build" in verdict.problems[0]
    assert judge(cpu, Expectation(cuda_build=False)).ok  # a CPU known-good build is fine


def test_no_cuda_on_a_machine_with_a_gpu_fails_and_errors_are_problems() -> None:
    assert not judge(X86, Expectation(cuda_build=True, gpu_arch=120, gpu_present=True)).ok
    broken = judge({**X86, "errors": ["torch.linalg.svd: reconstruction off by 0.5"]},
                   Expectation(cuda_build=True, gpu_arch=120))
    assert broken.problems == ("torch.linalg.svd: reconstruction off by 0.5",)
    failed = judge({"import_error": "ImportError: libcufile.so.0: cannot open shared object "
                    "file"}, Expectation(cuda_build=True))
    assert not failed.ok and failed.problems[0].startswith("import torch failed: ImportError")


def test_the_script_runs_in_an_interpreter_without_torch() -> None:
    report, seconds = run_verification([sys.executable, "-I"])
    assert "import_error" in report and "torch" in str(report["import_error"])
    assert seconds > 0
    assert not judge(report, Expectation(cuda_build=False)).ok

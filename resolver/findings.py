"""Typed findings: what will fail to load, why, and how badly; built from a finished walk.

A finding is data. Its severity says whether it stops `import torch` (the import phase failed
and torch did not recover), breaks one feature used later (a library torch or a CUDA library
opens with dlopen on first use), or is informational. Missing libraries carry the loader's trail
of paths in order and, when a file of that name exists elsewhere in the root or in
site-packages, where ("found at X, which is on no search path").

This module neither reads files nor prints; `resolver.diagnose` gathers its inputs.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.loader.torch_import import IMPORT
from resolver.loader.walk import Candidate, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from resolver.elf.facts import GpuCode
    from resolver.loader.torch_import import Attempt, TorchInstall
    from resolver.loader.walk import LoadedObject, Request, VersionProblem
    from resolver.platform import Platform

__all__ = [
    "Finding",
    "FindingKind",
    "Severity",
    "cudnn_findings",
    "driver_findings",
    "gpu_findings",
    "load_findings",
]


class Severity(enum.Enum):
    """How much a finding hurts."""

    BLOCKS_IMPORT = "blocks-import"
    BREAKS_FEATURE = "breaks-feature"
    INFO = "info"


class FindingKind(enum.Enum):
    """What kind of problem a finding reports."""

    MISSING_LIBRARY = "missing-library"
    VERSION_NOT_FOUND = "version-not-found"
    WRONG_ARCHITECTURE = "wrong-architecture"
    INVALID_LIBRARY = "invalid-library"
    PRELOAD_NOT_FOUND = "preload-not-found"
    NO_KERNEL_FOR_GPU = "no-kernel-for-gpu"
    WHEEL_TAG_MISMATCH = "wheel-tag-mismatch"
    CUDNN_TOO_OLD = "cudnn-too-old"
    NO_VERSION_INFO = "no-version-information"
    NO_LD_SO_CACHE = "no-ld-so-cache"
    DRIVER_TOO_OLD = "driver-too-old"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem. `subject` is what is missing or wrong (a soname, a version, a tag)."""

    kind: FindingKind
    severity: Severity
    subject: str
    message: str
    requested_by: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()  # "import" and/or the features that hit it
    searched: tuple[Candidate, ...] = ()  # the loader's trail, in order
    found_elsewhere: tuple[str, ...] = ()
    provider: str | None = None


def _severity(phases: Iterable[str]) -> Severity:
    return Severity.BLOCKS_IMPORT if IMPORT in phases else Severity.BREAKS_FEATURE


def load_findings(
    attempts: Sequence[Attempt],
    requests: Sequence[Request],
    objects: Sequence[LoadedObject],
    versions: Sequence[VersionProblem],
    *,
    locate_elsewhere: Callable[[str], tuple[str, ...]],
) -> tuple[Finding, ...]:
    """Findings from torch's dlopen attempts: missing, invalid, wrong-arch, versions."""
    counted = [
        requests[i] for attempt in attempts if not attempt.superseded for i in attempt.requests
    ]
    failed: dict[str, list[Request]] = {}
    for request in counted:
        if request.target is None:
            failed.setdefault(request.name, []).append(request)
    findings = [
        _failed_request_finding(name, misses, objects, locate_elsewhere)
        for name, misses in failed.items()
    ]
    findings += [
        Finding(
            kind=FindingKind.PRELOAD_NOT_FOUND, severity=_severity([attempt.phase]),
            subject=attempt.name, message=f"{attempt.why}: import torch raises ValueError",
            requested_by=("torch/__init__.py",), phases=(attempt.phase,))
        for attempt in attempts
        if not attempt.ok and not attempt.requests and not attempt.superseded
    ]
    kept = [versions[i] for attempt in attempts if not attempt.superseded
            for i in attempt.versions]
    findings += _version_findings(kept, objects)
    return tuple(findings)


def _failed_request_finding(
    name: str,
    misses: Sequence[Request],
    objects: Sequence[LoadedObject],
    locate_elsewhere: Callable[[str], tuple[str, ...]],
) -> Finding:
    """The one finding for every failed request of `name`: invalid, wrong-arch or missing."""
    phases = tuple(dict.fromkeys(r.phase for r in misses))
    requesters = tuple(dict.fromkeys(
        "python" if r.requester is None else objects[r.requester].path for r in misses))
    trail = misses[0].candidates
    wrong = [c for c in trail if c.outcome in (Outcome.WRONG_CLASS, Outcome.WRONG_MACHINE)]
    error = next((r.error for r in misses if r.error), None)
    if error:
        where = next((c.path for c in trail if c.outcome is Outcome.NOT_ELF), name)
        kind, message = FindingKind.INVALID_LIBRARY, f"{where}: {error}"
    elif wrong:
        kind = FindingKind.WRONG_ARCHITECTURE
        message = (f"{name}: only files for another architecture were found "
                   f"({', '.join(f'{c.path} ({c.detail})' for c in wrong[:3])})")
    else:
        kind, message = FindingKind.MISSING_LIBRARY, f"{name}: not found"
    elsewhere = () if error else locate_elsewhere(name)
    if elsewhere and kind is FindingKind.MISSING_LIBRARY:
        message += f"; found at {elsewhere[0]}, which is on no search path"
    return Finding(
        kind=kind, severity=_severity(phases), subject=name, message=message,
        requested_by=requesters, phases=phases, searched=trail, found_elsewhere=elsewhere)


def _version_findings(
    versions: Sequence[VersionProblem], objects: Sequence[LoadedObject]
) -> list[Finding]:
    """One finding per distinct (requester, file, version) problem, in the order met."""
    findings: list[Finding] = []
    seen: set[tuple[int, str, str]] = set()
    for problem in versions:
        key = (problem.requester, problem.file, problem.version)
        if key in seen:
            continue
        seen.add(key)
        requester, provider = objects[problem.requester], objects[problem.provider]
        if problem.fatal:
            findings.append(Finding(
                kind=FindingKind.VERSION_NOT_FOUND, severity=_severity([problem.phase]),
                subject=problem.version,
                message=f"{provider.path}: version `{problem.version}' not found "
                        f"(required by {requester.path})",
                requested_by=(requester.path,), phases=(problem.phase,), provider=provider.path))
        else:
            findings.append(Finding(
                kind=FindingKind.NO_VERSION_INFO, severity=Severity.INFO, subject=problem.version,
                message=f"{provider.path}: no version information available "
                        f"(required by {requester.path})",
                requested_by=(requester.path,), phases=(problem.phase,), provider=provider.path))
    return findings


def gpu_findings(
    objects: Sequence[LoadedObject],
    platform: Platform,
    find_kernel_for: Callable[[Iterable[GpuCode], int], GpuCode | None],
) -> tuple[Finding, ...]:
    """`NoKernelForGpu` for each loaded library with GPU code but none for the target GPU."""
    if platform.gpu_arch is None:
        return ()
    findings = []
    for obj in objects:
        if obj.facts.gpu_code and find_kernel_for(obj.facts.gpu_code, platform.gpu_arch) is None:
            carried = ", ".join(str(code) for code in obj.facts.gpu_code)
            findings.append(Finding(
                kind=FindingKind.NO_KERNEL_FOR_GPU, severity=Severity.BREAKS_FEATURE,
                subject=f"sm_{platform.gpu_arch}",
                message=f"{obj.path}: no kernel for sm_{platform.gpu_arch} and no PTX to JIT "
                        f"(carries {carried})",
                requested_by=(obj.path,), phases=(obj.phase,)))
    return tuple(findings)


def _pinned_cudnn(requires: Iterable[str]) -> tuple[int, int] | None:
    for line in requires:
        match = re.match(r"nvidia-cudnn-cu\d+\s*==\s*(\d+)\.(\d+)", line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def cudnn_findings(
    torch: TorchInstall | None,
    objects: Sequence[LoadedObject],
    runtime_version: Callable[[LoadedObject], str | None],
) -> tuple[Finding, ...]:
    """Torch refuses a cuDNN of another major, or of its major with a lower minor.

    torch/backends/cudnn/__init__.py compares the runtime cuDNN with the one it was built with
    on first use; the built-with version is what the wheel pins (`nvidia-cudnn-cu13==9.19...`).
    """
    pinned = _pinned_cudnn(torch.requires) if torch else None
    cudnn = next((o for o in objects if (o.facts.soname or "").startswith("libcudnn.so.")), None)
    if pinned is None or cudnn is None:
        return ()
    version = runtime_version(cudnn)
    if version is None:
        return ()
    major, minor = (int(p) for p in version.split(".")[:2])
    if major == pinned[0] and minor >= pinned[1]:
        return ()
    return (Finding(
        kind=FindingKind.CUDNN_TOO_OLD, severity=Severity.BREAKS_FEATURE,
        subject=f"cuDNN {version}",
        message=f"{cudnn.path} is cuDNN {version}; this torch was built with cuDNN "
                f"{pinned[0]}.{pinned[1]} and refuses a runtime of "
                f"{'another major' if major != pinned[0] else 'a lower minor'}",
        requested_by=(cudnn.path,), phases=("cuDNN",), provider=cudnn.path),)


# The oldest driver branch each CUDA major runs on (NVIDIA CUDA Toolkit release notes, "CUDA
# Driver" table: 13.x needs >= 580, 12.x >= 525 with minor-version compatibility).
_MIN_DRIVER = {"13": 580, "12": 525, "11": 450}


def driver_findings(torch: TorchInstall | None, driver: str | None) -> tuple[Finding, ...]:
    """`DriverTooOld` when the target's driver branch is older than torch's CUDA needs."""
    if torch is None or torch.cuda is None or driver is None:
        return ()
    needed = _MIN_DRIVER.get(torch.cuda.split(".")[0])
    branch = int(driver.split(".")[0]) if driver.split(".")[0].isdigit() else None
    if needed is None or branch is None or branch >= needed:
        return ()
    return (Finding(
        kind=FindingKind.DRIVER_TOO_OLD, severity=Severity.BREAKS_FEATURE,
        subject=f"driver {driver}",
        message=f"the NVIDIA driver is {driver}; torch built with CUDA {torch.cuda} needs "
                f"{needed} or newer: torch imports, but CUDA is unavailable",
        phases=("any CUDA work",)),)

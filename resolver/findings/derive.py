"""Findings from a finished walk: what failed, how badly, and the facts a fix needs.

Severity follows the phase: a failure in a dlopen of `import torch` that torch does not recover
from blocks the import; one in a library opened later for a feature breaks that feature.
Missing libraries carry the loader's trail and every file elsewhere in the root (or on
`sys.path`) that carries the soname or another major of it.

This module neither reads files nor prints; `resolver.diagnose` gathers its inputs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from resolver.findings.model import (
    CpuOnlyTorch,
    CudnnTooOld,
    DriverTooOld,
    FileElsewhere,
    Finding,
    GpuUndetermined,
    InvalidLibrary,
    MissingLibrary,
    NoKernelForGpu,
    NoVersionInformation,
    PreloadNotFound,
    Severity,
    StaticTlsExhausted,
    TorchPinMismatch,
    UndefinedSymbols,
    VersionNotFound,
    WrongArchitecture,
)
from resolver.loader.binding import STATIC_TLS_SURPLUS
from resolver.loader.torch_import import IMPORT
from resolver.loader.walk import INTERPRETER, PRELOAD, PRELOADED, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from resolver.elf.facts import GpuCode
    from resolver.loader.binding import SymbolProblem, TlsProblem
    from resolver.loader.extensions import Extension
    from resolver.loader.torch_import import Attempt, TorchInstall
    from resolver.loader.walk import LoadedObject, Request, VersionProblem
    from resolver.target.platform import Platform

__all__ = [
    "cpu_only_findings",
    "cudnn_findings",
    "driver_findings",
    "gpu_findings",
    "gpu_undetermined_findings",
    "load_findings",
    "pin_findings",
]


def _severity(phases: Iterable[str]) -> Severity:
    phases = tuple(phases)
    if any(p in (IMPORT, INTERPRETER) for p in phases):
        return Severity.BLOCKS_IMPORT
    # An LD_PRELOAD entry that cannot be loaded is ignored with a message (rtld.c do_preload).
    # So is a library said to be loaded already that we cannot load: it is not torch's problem.
    ignored = {PRELOAD, PRELOADED}
    return Severity.INFO if phases and set(phases) <= ignored else Severity.BREAKS_FEATURE


def load_findings(  # noqa: PLR0913 - the walk's records, then keyword-only helpers
    attempts: Sequence[Attempt],
    requests: Sequence[Request],
    objects: Sequence[LoadedObject],
    versions: Sequence[VersionProblem],
    *,
    locate_elsewhere: Callable[[str], tuple[FileElsewhere, ...]],
    symbols: Sequence[SymbolProblem] = (),
    tls: Sequence[TlsProblem] = (),
) -> tuple[Finding, ...]:
    """Findings from torch's dlopen attempts: missing, invalid, wrong-arch, versions.

    Attempts torch recovers from (a retry that worked, its best-effort preload) do not count.
    """
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
        PreloadNotFound(severity=_severity([attempt.phase]), phases=(attempt.phase,),
                        folder=attempt.preload[0], pattern=attempt.preload[1],
                        sys_path=attempt.preload_dirs)
        for attempt in attempts
        if not attempt.ok and attempt.preload is not None and not attempt.superseded
    ]
    kept = [versions[i] for attempt in attempts if not attempt.superseded
            for i in attempt.versions]
    findings += _version_findings(kept, objects)
    findings += [
        UndefinedSymbols(severity=_severity([problem.phase]), phases=(problem.phase,),
                         library=objects[problem.requester].path, symbols=problem.symbols,
                         defined_elsewhere=tuple(objects[i].path
                                                 for i in problem.defined_elsewhere))
        for attempt in attempts if not attempt.superseded
        for problem in (symbols[i] for i in attempt.symbols)
    ]
    findings += [
        StaticTlsExhausted(severity=_severity([problem.phase]), phases=(problem.phase,),
                           library=objects[problem.requester].path, needed=problem.needed,
                           available=problem.available, surplus=STATIC_TLS_SURPLUS)
        for attempt in attempts if not attempt.superseded
        for problem in (tls[i] for i in attempt.tls)
    ]
    return tuple(findings)


def _failed_request_finding(
    name: str,
    misses: Sequence[Request],
    objects: Sequence[LoadedObject],
    locate_elsewhere: Callable[[str], tuple[FileElsewhere, ...]],
) -> Finding:
    """The one finding for every failed request of `name`: invalid, wrong-arch or missing."""
    phases = tuple(dict.fromkeys(r.phase for r in misses))
    requesters = tuple(dict.fromkeys(
        "python" if r.requester is None else objects[r.requester].path for r in misses))
    trail = misses[0].candidates
    severity = _severity(phases)
    error = next((r.error for r in misses if r.error), None)
    if error:
        where = next((c.path for c in trail if c.outcome is Outcome.NOT_ELF), name)
        return InvalidLibrary(severity=severity, phases=phases, soname=name, path=where,
                              reason=error, requested_by=requesters, searched=trail)
    wrong = tuple(c for c in trail if c.outcome in (Outcome.WRONG_CLASS, Outcome.WRONG_MACHINE))
    if wrong:
        return WrongArchitecture(severity=severity, phases=phases, soname=name, rejected=wrong,
                                 requested_by=requesters, searched=trail)
    return MissingLibrary(severity=severity, phases=phases, soname=name,
                          requested_by=requesters, searched=trail,
                          found_elsewhere=locate_elsewhere(name))


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
        requester, provider = objects[problem.requester].path, objects[problem.provider].path
        found = objects[problem.provider].found
        via = {"provider_via": found.via.value if found else None,
               "provider_via_owner": found.owner if found else None}
        if problem.fatal:
            findings.append(VersionNotFound(
                severity=_severity([problem.phase]), phases=(problem.phase,),
                version=problem.version, file=problem.file, requester=requester,
                provider=provider, **via))
        else:
            findings.append(NoVersionInformation(
                severity=Severity.INFO, phases=(problem.phase,), version=problem.version,
                file=problem.file, requester=requester, provider=provider, **via))
    return findings


def gpu_findings(
    objects: Sequence[LoadedObject],
    platform: Platform,
    find_kernel_for: Callable[[Iterable[GpuCode], int], GpuCode | None],
) -> tuple[NoKernelForGpu, ...]:
    """`NoKernelForGpu` for each of torch's libraries with GPU code but none for the target GPU.

    torch imports, but no kernel of its own can run: CUDA is unusable.
    """
    if platform.gpu_arch is None:
        return ()
    return tuple(
        NoKernelForGpu(severity=Severity.CUDA_UNUSABLE, phases=("CUDA kernels",),
                       library=obj.path,
                       gpu_arch=platform.gpu_arch, codes=obj.facts.gpu_code)
        for obj in objects
        if obj.facts.gpu_code and find_kernel_for(obj.facts.gpu_code, platform.gpu_arch) is None
    )


def gpu_undetermined_findings(
    objects: Sequence[LoadedObject],
    platform: Platform,
    find_kernel_for: Callable[[Iterable[GpuCode], int], GpuCode | None],
) -> tuple[Finding, ...]:
    """Where the release runs on several GPUs and none is named: which of them torch covers.

    Covering none of them is as sure as a named GPU: `NoKernelForGpu` for the first library,
    for each candidate.
    """
    if platform.gpu_arch is not None or not platform.gpu_candidates or platform.l4t is None:
        return ()
    coded = [o for o in objects if o.facts.gpu_code]
    if not coded:
        return ()
    covered = tuple(g for g in platform.gpu_candidates
                    if all(find_kernel_for(o.facts.gpu_code, g) is not None for o in coded))
    if not covered:
        return tuple(
            NoKernelForGpu(severity=Severity.CUDA_UNUSABLE, phases=("CUDA kernels",),
                           library=coded[0].path, gpu_arch=g, codes=coded[0].facts.gpu_code)
            for g in platform.gpu_candidates)
    return (GpuUndetermined(severity=Severity.INFO, phases=(), l4t=platform.l4t,
                            candidates=platform.gpu_candidates, covered=covered),)


def cpu_only_findings(torch: TorchInstall | None, platform: Platform) -> tuple[CpuOnlyTorch, ...]:
    """`CpuOnlyTorch` when torch has no CUDA and the target says it has an NVIDIA GPU.

    The evidence is the first of: an L4T release (every Jetson has one), a driver's file
    (`libcuda.so.<version>`), a GPU named with `--gpu-arch` or by a fixture.
    """
    if torch is None or torch.cuda is not None or not torch.version_known:
        return ()
    if any(name.startswith("libtorch_cuda") for name in torch.lib_files):
        return ()  # version.py says no CUDA, but the CUDA library is there: not a CPU build
    if platform.l4t is not None:
        evidence = f"L4T R{platform.l4t}"
    elif platform.driver is not None:
        evidence = f"NVIDIA driver {platform.driver}"
    elif platform.gpu_arch is not None:
        evidence = f"GPU sm_{platform.gpu_arch}"
    else:
        return ()
    return (CpuOnlyTorch(severity=Severity.CUDA_UNUSABLE, phases=("any CUDA work",),
                         torch_version=torch.version, gpu_arch=platform.gpu_arch,
                         evidence=evidence),)


def pinned_cudnn(requires: Iterable[str]) -> Version | None:
    """The cuDNN a torch was built with: its `nvidia-cudnn-cuNN==X.Y...` Requires-Dist pin."""
    for line in requires:
        match = re.match(r"nvidia-cudnn-cu\d+\s*==\s*(\d+\.\d+(?:\.\d+)*)", line)
        if match:
            return Version(match.group(1))
    return None


def cudnn_findings(
    torch: TorchInstall | None,
    objects: Sequence[LoadedObject],
    runtime_version: Callable[[LoadedObject], Version | None],
) -> tuple[CudnnTooOld, ...]:
    """Torch refuses a cuDNN of another major, or of its major with a lower minor.

    torch/backends/cudnn/__init__.py compares the runtime cuDNN with the one it was built with
    on first use; the built-with version is what the wheel pins (`nvidia-cudnn-cu13==9.19...`).
    """
    pinned = pinned_cudnn(torch.requires) if torch else None
    cudnn = next((o for o in objects if (o.facts.soname or "").startswith("libcudnn.so.")), None)
    if pinned is None or cudnn is None:
        return ()
    runtime = runtime_version(cudnn)
    if runtime is None:
        return ()
    if runtime.major == pinned.major and runtime.minor >= pinned.minor:
        return ()
    return (CudnnTooOld(severity=Severity.BREAKS_FEATURE, phases=("cuDNN",), library=cudnn.path,
                        built_with=pinned, runtime=runtime),)


# The oldest driver branch each CUDA major runs on (NVIDIA CUDA Toolkit release notes, "CUDA
# Driver" table: 13.x needs >= 580, 12.x >= 525 with minor-version compatibility).
_MIN_DRIVER = {13: 580, 12: 525, 11: 450}


def driver_findings(torch: TorchInstall | None, driver: Version | None,
                    driver_cuda: Version | None = None) -> tuple[DriverTooOld, ...]:
    """`DriverTooOld` when the target's driver is older than torch's CUDA needs.

    The driver branch decides when it is known; else the newest CUDA the driver runs (a Jetson
    release's own CUDA): a newer CUDA major cannot run on it.
    """
    if torch is None or torch.cuda is None or (driver is None and driver_cuda is None):
        return ()
    try:
        cuda = Version(torch.cuda)
    except InvalidVersion:
        return ()
    needed = _MIN_DRIVER.get(cuda.major)
    if needed is None:
        return ()
    if driver is not None:
        if driver.major >= needed:
            return ()
    elif driver_cuda is None or driver_cuda.major >= cuda.major:
        return ()
    return (DriverTooOld(severity=Severity.CUDA_UNUSABLE, phases=("any CUDA work",),
                         driver=driver, needed_branch=needed, cuda=cuda,
                         driver_cuda=driver_cuda),)


def _marker_environment(platform: Platform) -> dict[str, str]:
    """The PEP 508 marker values of the target, where the platform says them."""
    environment = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "platform_machine": platform.arch, "extra": ""}
    if platform.python is not None:
        environment["python_version"] = str(platform.python)
        environment["python_full_version"] = f"{platform.python}.0"
    return environment


def pin_findings(extensions: Sequence[Extension], torch: TorchInstall | None,
                 phase_of: Callable[[Extension], str], platform: Platform,
                 ) -> tuple[TorchPinMismatch, ...]:
    """`TorchPinMismatch` for each package whose torch requirement the installed torch misses.

    PEP 440 matching, pre-releases allowed (a nightly pins one); `==2.11.0` matches
    `2.11.0+cu130`, as PEP 440 ignores the local label for a pin without one. A requirement
    whose PEP 508 marker is false on the target (another Python, another machine) is skipped.
    """
    if torch is None or torch.version is None:
        return ()
    if not any(extension.torch_requirements for extension in extensions):
        return ()
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

    try:
        installed = Version(torch.version)
    except InvalidVersion:
        return ()
    findings = []
    for extension in extensions:
        for text in extension.torch_requirements:
            try:
                requirement = Requirement(text)
                if requirement.marker is not None and not requirement.marker.evaluate(
                        _marker_environment(platform)):
                    continue
            except (InvalidRequirement, ValueError):
                continue  # unparsable, or a marker naming a value we cannot evaluate
            specifier = requirement.specifier
            if specifier and not specifier.contains(installed, prereleases=True):
                phase = phase_of(extension)
                findings.append(TorchPinMismatch(
                    severity=Severity.BREAKS_FEATURE, phases=(phase,),
                    distribution=extension.name, version=extension.version,
                    requirement=text, torch_version=torch.version))
    return tuple(findings)

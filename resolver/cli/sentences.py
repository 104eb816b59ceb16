"""The sentences people read about a finding, written from its typed fields.

Every renderer (the human report, JSON's `message`, JUnit's failure text, `check`'s table) says
the same thing in the same words; the findings themselves hold no English.
"""

from __future__ import annotations

import posixpath
from functools import singledispatch
from typing import TYPE_CHECKING

from resolver.findings.model import (
    CpuOnlyTorch,
    CudnnTooOld,
    DriverTooOld,
    Finding,
    GpuUndetermined,
    InvalidLibrary,
    LdSoCacheIgnored,
    MissingLibrary,
    NoKernelForGpu,
    NoVersionInformation,
    PreloadNotFound,
    StaticTlsExhausted,
    TagMismatch,
    TorchPinMismatch,
    UndefinedSymbols,
    VersionNotFound,
    WheelTagMismatch,
    WrongArchitecture,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["describe", "name_list", "where_it_is"]


def name_list(paths: Sequence[str], limit: int = 3) -> str:
    """`a.so, b.so, c.so and 2 more`: base names, in order."""
    names = [posixpath.basename(p) for p in paths]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def where_it_is(finding: MissingLibrary) -> str:
    """Where the missing soname (or another version of it) actually is, or that it is nowhere."""
    same = [f.path for f in finding.found_elsewhere if f.same_soname]
    if same:
        more = f" (and {len(same) - 1} more place(s))" if len(same) > 1 else ""
        return f"it is at {same[0]}{more}, on no search path"
    other = [f for f in finding.found_elsewhere if not f.same_soname]
    if other:
        return ("only another version is under the root: "
                + ", ".join(f"{f.name} at {f.path}" for f in other[:2]))
    return "no file of that name under the root or on sys.path"


@singledispatch
def describe(finding: Finding) -> str:
    """One sentence about `finding` (without its severity, which renderers show their way)."""
    return f"{finding.subject}: {finding.kind}"


@describe.register
def _(finding: MissingLibrary) -> str:
    return (f"{finding.soname} not found, needed by {name_list(finding.requested_by)}; "
            f"{where_it_is(finding)}")


@describe.register
def _(finding: InvalidLibrary) -> str:
    return (f"{finding.soname}: the loader stops at {finding.path}: {finding.reason} "
            f"(needed by {name_list(finding.requested_by)})")


@describe.register
def _(finding: WrongArchitecture) -> str:
    rejected = ", ".join(f"{c.path} ({c.detail or c.outcome.value})" for c in finding.rejected[:3])
    return (f"{finding.soname}: only files for another architecture were found: {rejected} "
            f"(needed by {name_list(finding.requested_by)})")


def _found_through(finding: VersionNotFound | NoVersionInformation) -> str:
    """`, found through the DT_RPATH of /opt/conda/bin/python3.11`, or nothing."""
    if finding.provider_via is None:
        return ""
    if finding.provider_via_owner is not None:
        return f", found through the {finding.provider_via} of {finding.provider_via_owner}"
    return f", found through {finding.provider_via}"


@describe.register
def _(finding: VersionNotFound) -> str:
    return (f"version {finding.version} not found in {finding.provider} ({finding.file}"
            f"{_found_through(finding)}), required by {posixpath.basename(finding.requester)}")


@describe.register
def _(finding: NoVersionInformation) -> str:
    return (f"{finding.provider} ({finding.file}) has no version information; "
            f"{posixpath.basename(finding.requester)} asks for {finding.version}")


@describe.register
def _(finding: UndefinedSymbols) -> str:
    count = len(finding.symbols)
    more = f" and {count - 1} more" if count > 1 else ""
    text = (f"{posixpath.basename(finding.library)}: undefined symbol {finding.symbols[0]}{more}: "
            "nothing in its lookup scope defines "
            f"{'it' if count == 1 else 'them'}")
    if finding.defined_elsewhere:
        text += (f"; {name_list(finding.defined_elsewhere)} "
                 "(loaded, but not in its scope) does")
    return text


@describe.register
def _(finding: StaticTlsExhausted) -> str:
    return (f"{posixpath.basename(finding.library)}: cannot allocate memory in static TLS "
            f"block: its initial-exec TLS needs {finding.needed} bytes, {finding.available} of "
            f"the {finding.surplus}-byte surplus are left; preload it (LD_PRELOAD="
            f"{finding.library}) so it gets its TLS at start")


@describe.register
def _(finding: TorchPinMismatch) -> str:
    return (f"{finding.distribution} {finding.version or '?'} was built for another torch: it "
            f"requires {finding.requirement}, the installed torch is {finding.torch_version}")


@describe.register
def _(finding: PreloadNotFound) -> str:
    entries = len(finding.sys_path)
    return (f"torch/__init__.py finds no nvidia/{finding.folder}/lib/{finding.pattern} in the "
            f"{entries} sys.path {'entry' if entries == 1 else 'entries'}: import torch raises "
            "ValueError")


@describe.register
def _(finding: NoKernelForGpu) -> str:
    carried = ", ".join(str(code) for code in finding.codes) or "nothing"
    return (f"{posixpath.basename(finding.library)} has no kernel for sm_{finding.gpu_arch} "
            f"and no PTX to JIT (carries {carried})")


@describe.register
def _(finding: WheelTagMismatch) -> str:
    if finding.mismatch is TagMismatch.ARCHITECTURE:
        platforms = sorted({t.rsplit("-", 1)[-1] for t in finding.tags})
        why = f"built for {', '.join(platforms)}, the target is {finding.target_arch}"
    elif finding.mismatch is TagMismatch.GLIBC:
        why = f"needs a newer glibc than the target's {finding.target_glibc}"
    else:
        interpreters = sorted({t.split("-", 1)[0] for t in finding.tags})
        why = (f"built for {', '.join(interpreters)}, the target runs Python "
               f"{finding.target_python}")
    return f"{finding.wheel}: no tag fits the target ({why})"


@describe.register
def _(finding: CudnnTooOld) -> str:
    same_major = finding.runtime.major == finding.built_with.major
    other = "a lower minor" if same_major else "another major"
    return (f"{finding.library} is cuDNN {finding.runtime}; this torch was built with cuDNN "
            f"{finding.built_with} and refuses {other}")


@describe.register
def _(finding: DriverTooOld) -> str:
    if finding.driver is None:
        return (f"the NVIDIA driver runs CUDA {finding.driver_cuda} at most; torch built with "
                f"CUDA {finding.cuda} needs a {finding.needed_branch} driver or newer: torch "
                "imports, but CUDA is unavailable")
    return (f"the NVIDIA driver is {finding.driver}; torch built with CUDA {finding.cuda} needs "
            f"{finding.needed_branch} or newer: torch imports, but CUDA is unavailable")


@describe.register
def _(finding: CpuOnlyTorch) -> str:
    gpu = f" (sm_{finding.gpu_arch})" if finding.gpu_arch else ""
    return (f"torch {finding.torch_version or '?'} is a CPU-only build (torch.version.cuda is "
            f"None), and the target has an NVIDIA GPU{gpu} ({finding.evidence}): torch imports, "
            "but torch.cuda.is_available() is False")


@describe.register
def _(finding: GpuUndetermined) -> str:
    names = ", ".join(f"sm_{g}" for g in finding.candidates)
    covered = ", ".join(f"sm_{g}" for g in finding.covered)
    return (f"L4T R{finding.l4t} runs on several GPUs ({names}) and the root does not say "
            f"which; torch carries code for {covered}. --gpu-arch names it")


@describe.register
def _(finding: LdSoCacheIgnored) -> str:
    if finding.present:
        return (f"{finding.reason}; the loader ignores it, so nothing registered through "
                "ld.so.conf is found until ldconfig is run")
    return f"{finding.reason}: its lookups are emulated from ld.so.conf"

"""The typed findings: one record per kind of problem, holding the facts a fix needs.

A finding is data, not a sentence: a recipe matcher reads its fields (the soname, the symbol
version node, the cuDNN versions as `packaging.version.Version`, the GPU and the codes present);
the sentences people read are written by the renderers in `resolver.cli`. Every finding has a
`severity` (does it stop `import torch`, break one feature used later, or only inform) and the
`phases` that hit it ("import", or the feature whose dlopen failed).

This module holds types only; `resolver.findings.derive` builds them from a finished walk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from packaging.version import Version

    from resolver.elf.facts import GpuCode
    from resolver.loader.walk import Candidate

__all__ = [
    "CAUSE_ORDER",
    "CpuOnlyTorch",
    "CudnnTooOld",
    "DriverTooOld",
    "FileElsewhere",
    "Finding",
    "GpuUndetermined",
    "InvalidLibrary",
    "LdSoCacheIgnored",
    "LibraryFinding",
    "MissingLibrary",
    "NoKernelForGpu",
    "NoVersionInformation",
    "PreloadNotFound",
    "Severity",
    "StaticTlsExhausted",
    "TagMismatch",
    "TorchPinMismatch",
    "UndefinedSymbols",
    "VersionFinding",
    "VersionNotFound",
    "WheelTagMismatch",
    "WrongArchitecture",
]


class Severity(enum.Enum):
    """How much a finding hurts (DESIGN.md, "Severities of a finding"), worst first.

    CUDA_UNUSABLE: torch imports, but no CUDA work can run (a CPU-only build on a machine with
    an NVIDIA GPU, no code for the GPU, a driver too old for torch's CUDA).
    """

    BLOCKS_IMPORT = "blocks-import"
    CUDA_UNUSABLE = "cuda-unusable"
    BREAKS_FEATURE = "breaks-feature"
    INFO = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """What every finding has: how bad it is, and which phases of the process hit it."""

    kind: ClassVar[str]
    severity: Severity
    phases: tuple[str, ...] = ()  # "import", "install", or the features that hit it

    @property
    def subject(self) -> str:
        """The thing that is missing or wrong, as a short key (a soname, a version node)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class FileElsewhere:
    """A file under the root (or on `sys.path`) that a missing soname could have been."""

    path: str  # in the root's namespace
    name: str  # its file name: the soname itself, or another major of it
    same_soname: bool  # False for another major (`libmpi_cxx.so.40` when `.so.20` is wanted)


@dataclass(frozen=True, slots=True, kw_only=True)
class LibraryFinding(Finding):
    """A soname the loader searched for and could not use: what every such finding holds."""

    soname: str
    requested_by: tuple[str, ...]  # the objects whose DT_NEEDED (or dlopen) named it; "python"
    searched: tuple[Candidate, ...]  # the loader's trail, in order

    @property
    def subject(self) -> str:
        """The soname."""
        return self.soname


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingLibrary(LibraryFinding):
    """No file of this soname on any search path the loader used (`cannot open shared object`)."""

    kind: ClassVar[str] = "missing-library"
    found_elsewhere: tuple[FileElsewhere, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidLibrary(LibraryFinding):
    """The search stopped at a file that is not a loadable ELF object (glibc's `open_verify`)."""

    kind: ClassVar[str] = "invalid-library"
    path: str  # the file the loader stopped at
    reason: str  # what is wrong with it, from the ELF reader


@dataclass(frozen=True, slots=True, kw_only=True)
class WrongArchitecture(LibraryFinding):
    """Only files of another ELF class or machine carry this soname on the search path."""

    kind: ClassVar[str] = "wrong-architecture"
    rejected: tuple[Candidate, ...]  # the candidates skipped, with what they are built for


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionFinding(Finding):
    """A `.gnu.version_r` requirement checked against the chosen provider (elf/dl-version.c)."""

    version: str  # the version node, `GLIBCXX_3.4.32` or `libcublas.so.13`
    file: str  # the vn_file the requirement names (the provider's soname)
    requester: str  # the object with the requirement
    provider: str  # the object the loader chose for `file`
    # The search rule that chose the provider (`DT_RPATH`, `ld.so.cache`, ...) and the object
    # whose DT_RPATH/DT_RUNPATH it was: a conda interpreter's RPATH bringing an old libstdc++.
    provider_via: str | None = None
    provider_via_owner: str | None = None

    @property
    def subject(self) -> str:
        """The version node."""
        return self.version


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionNotFound(VersionFinding):
    """The provider defines versions, but not this one: a hard error."""

    kind: ClassVar[str] = "version-not-found"


@dataclass(frozen=True, slots=True, kw_only=True)
class NoVersionInformation(VersionFinding):
    """The provider defines no versions at all: glibc only warns."""

    kind: ClassVar[str] = "no-version-information"


@dataclass(frozen=True, slots=True, kw_only=True)
class UndefinedSymbols(Finding):
    """An object's undefined symbols that nothing in its lookup scope defines (RTLD_NOW fails).

    glibc reports the first as `undefined symbol: NAME` (elf/dl-lookup.c); all are listed.
    """

    kind: ClassVar[str] = "undefined-symbols"
    library: str  # the object with the references
    symbols: tuple[str, ...]  # `name` or `name@VERSION`, sorted
    # Loaded objects that define some of them but are not in the library's scope (opened
    # RTLD_LOCAL by another dlopen): the link is there, the scope is wrong.
    defined_elsewhere: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """The first undefined symbol."""
        return self.symbols[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticTlsExhausted(Finding):
    """`cannot allocate memory in static TLS block`.

    A library opened with dlopen uses initial-exec TLS bigger than what is left of glibc's
    static TLS surplus. Loading it at start instead (LD_PRELOAD) gives it static TLS without
    that limit.
    """

    kind: ClassVar[str] = "static-tls-exhausted"
    library: str
    needed: int  # bytes of its TLS block
    available: int  # bytes left of the surplus when it was opened
    surplus: int  # the whole surplus, bytes

    @property
    def subject(self) -> str:
        """The library's file name."""
        return self.library.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class TorchPinMismatch(Finding):
    """A package built against another torch: its `Requires-Dist: torch==...` is not met.

    Its compiled modules use torch's C++ ABI, which changes between releases; the pin is how
    its wheel says which torch it was built for.
    """

    kind: ClassVar[str] = "torch-pin-mismatch"
    distribution: str  # `torchvision`
    version: str | None  # the distribution's version
    requirement: str  # the Requires-Dist entry, as written
    torch_version: str  # the installed torch's

    @property
    def subject(self) -> str:
        """`<distribution> <version>`."""
        return f"{self.distribution} {self.version or '?'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PreloadNotFound(Finding):
    """torch's `_preload_cuda_lib` finds no `nvidia/<folder>/lib/<pattern>` on `sys.path`."""

    kind: ClassVar[str] = "preload-not-found"
    folder: str  # the `cuda_libs` key (`cublas`, `cu13`)
    pattern: str  # the glob (`libcublas.so.*[0-9]`)
    sys_path: tuple[str, ...]  # where torch looked

    @property
    def subject(self) -> str:
        """The library glob."""
        return self.pattern


@dataclass(frozen=True, slots=True, kw_only=True)
class NoKernelForGpu(Finding):
    """A library with GPU code carries no kernel for the target GPU and no PTX to JIT."""

    kind: ClassVar[str] = "no-kernel-for-gpu"
    library: str
    gpu_arch: int  # sm_XY as 10*X+Y
    codes: tuple[GpuCode, ...]  # what it carries

    @property
    def subject(self) -> str:
        """`sm_XY` of the target GPU."""
        return f"sm_{self.gpu_arch}"


class TagMismatch(enum.Enum):
    """Which part of a wheel's tags the target cannot install (PEP 425, PEP 600)."""

    ARCHITECTURE = "architecture"
    GLIBC = "glibc"
    PYTHON = "python"


@dataclass(frozen=True, slots=True, kw_only=True)
class WheelTagMismatch(Finding):
    """None of the wheel's tags is one the target's pip would install."""

    kind: ClassVar[str] = "wheel-tag-mismatch"
    wheel: str  # the wheel's file name, or "torch" for an installed dist
    tags: tuple[str, ...]
    mismatch: TagMismatch
    target_arch: str
    target_glibc: Version | None
    target_python: Version | None

    @property
    def subject(self) -> str:
        """The wheel."""
        return self.wheel


@dataclass(frozen=True, slots=True, kw_only=True)
class CudnnTooOld(Finding):
    """torch refuses a cuDNN of another major, or of its major with a lower minor."""

    kind: ClassVar[str] = "cudnn-too-old"
    library: str  # the libcudnn.so.N the loader chose
    built_with: Version  # what the torch wheel pins
    runtime: Version  # what the chosen library is

    @property
    def subject(self) -> str:
        """`cuDNN <runtime version>`."""
        return f"cuDNN {self.runtime}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverTooOld(Finding):
    """The target's NVIDIA driver is older than torch's CUDA needs."""

    kind: ClassVar[str] = "driver-too-old"
    driver: Version | None  # the driver version or branch (`540`, `575.57.08`), when known
    needed_branch: int  # the oldest branch the CUDA major runs on
    cuda: Version  # torch.version.cuda
    # The newest CUDA the driver runs (a Jetson release's own CUDA), when that is what is known.
    driver_cuda: Version | None = None

    @property
    def subject(self) -> str:
        """`driver <version>`, or the CUDA it supports."""
        if self.driver is None:
            return f"driver for CUDA {self.driver_cuda}"
        return f"driver {self.driver}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuOnlyTorch(Finding):
    """A torch built without CUDA (`torch.version.cuda` is None) on a machine with an NVIDIA GPU."""

    kind: ClassVar[str] = "cpu-only-torch"
    torch_version: str | None
    gpu_arch: int | None  # the target GPU, when known
    evidence: str  # what says the target has one ("L4T R36.4", "driver 575.57.08", "--gpu-arch")

    @property
    def subject(self) -> str:
        """`torch <version>`."""
        return f"torch {self.torch_version or '?'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuUndetermined(Finding):
    """The target's release runs on several GPUs and nothing in the root says which."""

    kind: ClassVar[str] = "gpu-undetermined"
    l4t: Version
    candidates: tuple[int, ...]  # sm_XY as 10*X+Y, of each module the release runs on
    covered: tuple[int, ...]  # those torch's own libraries carry code for

    @property
    def subject(self) -> str:
        """`L4T <release>`."""
        return f"L4T {self.l4t}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LdSoCacheIgnored(Finding):
    """The root's `/etc/ld.so.cache` is missing or unreadable, so the loader does without it."""

    kind: ClassVar[str] = "no-ld-so-cache"
    path: str
    present: bool  # False: no cache; True: a cache the loader cannot read
    reason: str

    @property
    def subject(self) -> str:
        """The cache's path."""
        return self.path


# Root causes first: a wheel the target cannot install, a driver too old, a GPU without code,
# then what the loader cannot find (DESIGN.md; issue "a report people read first").
CAUSE_ORDER: tuple[type[Finding], ...] = (
    WheelTagMismatch,
    CpuOnlyTorch,
    DriverTooOld,
    NoKernelForGpu,
    GpuUndetermined,
    TorchPinMismatch,
    WrongArchitecture,
    InvalidLibrary,
    MissingLibrary,
    PreloadNotFound,
    VersionNotFound,
    UndefinedSymbols,
    StaticTlsExhausted,
    CudnnTooOld,
    NoVersionInformation,
    LdSoCacheIgnored,
)

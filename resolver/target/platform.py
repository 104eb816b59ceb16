"""Facts about the target machine that the loader emulation and the findings depend on.

`read_platform` reads them through a `RootFS` (live `/` or a directory): the architecture (from
the root's C library), its glibc, multiarch layout, L4T/JetPack release, OS, CUDA, cuDNN and
Python versions. What the filesystem cannot tell (the GPU of a live machine) comes in as an
argument; detecting the live host is the CLI's business. Nothing here runs at import time.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from resolver.elf.facts import ElfClass, Endian, Machine

if TYPE_CHECKING:
    from resolver.elf.cache import FactsCache
    from resolver.elf.facts import ElfFacts
    from resolver.target.rootfs import RootFS

__all__ = [
    "JetsonRelease",
    "Platform",
    "find_jetson_release",
    "jetson_releases",
    "parse_cudnn_header",
    "parse_jetson_releases",
    "parse_nv_tegra_release",
    "parse_os_release",
    "parse_version",
    "read_platform",
]

# Debian/Ubuntu multiarch triplets and the glibc $PLATFORM string per e_machine.
_TRIPLETS = {
    Machine.X86_64: "x86_64-linux-gnu",
    Machine.AARCH64: "aarch64-linux-gnu",
    Machine.I386: "i386-linux-gnu",
    Machine.PPC64: "powerpc64le-linux-gnu",
    Machine.S390: "s390x-linux-gnu",
    Machine.RISCV: "riscv64-linux-gnu",
}
_PLATFORM_NAMES = {
    Machine.X86_64: "x86_64",
    Machine.AARCH64: "aarch64",
    Machine.I386: "i686",
    Machine.PPC64: "ppc64le",
    Machine.S390: "s390x",
    Machine.RISCV: "riscv64",
}



@dataclass(frozen=True, slots=True, kw_only=True)
class JetsonRelease:
    """One L4T release: its JetPack, the GPUs it runs on and the driver it ships."""

    l4t: Version
    jetpack: Version
    jetpack_label: str  # as NVIDIA writes it ("6.0 DP")
    gpus: tuple[int, ...]  # sm_XY as 10*X+Y of every module the release runs on
    driver: Version | None  # the driver branch, when known
    cuda: Version | None  # the CUDA release it ships: the newest its driver runs
    driver_dir: str | None  # where libcuda.so.1 lives

    @property
    def gpu_arch(self) -> int | None:
        """The GPU, when the release runs on one kind only."""
        return self.gpus[0] if len(self.gpus) == 1 else None


def parse_jetson_releases(text: str) -> tuple[JetsonRelease, ...]:
    """The releases of `jetson_releases.json`, oldest first.

    Raises:
        ValueError: the data file is malformed (a bug of the package, not of the target).

    """
    data = json.loads(text)
    releases = [
        JetsonRelease(l4t=Version(row["l4t"]), jetpack=Version(row["jetpack"]),
                      jetpack_label=row.get("jetpack_label", row["jetpack"]),
                      gpus=tuple(int(g) for g in row["gpus"]),
                      driver=Version(row["driver"]) if row.get("driver") else None,
                      cuda=Version(row["cuda"]) if row.get("cuda") else None,
                      driver_dir=row.get("driver_dir"))
        for row in data["releases"]
    ]
    return tuple(sorted(releases, key=lambda r: r.l4t))


@functools.cache
def jetson_releases() -> tuple[JetsonRelease, ...]:
    """The bundled Jetson release table (`resolver/target/jetson_releases.json`)."""
    text = resources.files("resolver.target").joinpath("jetson_releases.json").read_text("utf-8")
    return parse_jetson_releases(text)


def find_jetson_release(l4t: Version) -> JetsonRelease | None:
    """The table's row for an L4T release (`36.4` is `36.4.0`), None when it is not listed."""
    return next((release for release in jetson_releases() if release.l4t == l4t), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """What is known about one target machine; None where the root does not say."""

    machine: int
    elf_class: ElfClass
    endian: Endian = Endian.LITTLE  # its C library's byte order (EI_DATA)
    multiarch: str | None  # "aarch64-linux-gnu" on Debian-style roots
    system_dirs: tuple[str, ...]  # the loader's default directories, in order
    lib_token: str  # what $LIB expands to
    platform_token: str  # what $PLATFORM expands to
    glibc: Version | None = None
    os_id: str | None = None
    os_version: str | None = None  # VERSION_ID as written ("24.04", "bookworm" has none)
    l4t: Version | None = None
    jetpack: Version | None = None
    jetpack_label: str | None = None  # as NVIDIA names it ("6.0 DP")
    cuda: Version | None = None
    cuda_flavour: str | None = None  # "sbsa" or "tegra" (aarch64-linux) when the toolkit says
    cudnn: Version | None = None
    python: Version | None = None
    gpu_arch: int | None = None  # sm_XY as 10*X+Y
    # Every GPU the target may have, when its release runs on several and nothing says which.
    gpu_candidates: tuple[int, ...] = ()
    driver: Version | None = None  # NVIDIA driver version or branch ("580", "575.57.08")
    driver_cuda: Version | None = None  # the newest CUDA the driver runs, when that is known

    @property
    def arch(self) -> str:
        """The architecture name used in wheel tags (`x86_64`, `aarch64`)."""
        return self.platform_token


def parse_nv_tegra_release(text: str) -> str | None:
    """`# R38 (release), REVISION: 2.0, ...` -> `38.2.0`."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release(5), quotes removed."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def parse_cudnn_header(text: str) -> str | None:
    """CUDNN_MAJOR/MINOR/PATCHLEVEL from cudnn_version.h -> `9.12.0`."""
    found = dict(re.findall(r"#define\s+CUDNN_(MAJOR|MINOR|PATCHLEVEL)\s+(\d+)", text))
    if "MAJOR" not in found or "MINOR" not in found:
        return None
    return f"{found['MAJOR']}.{found['MINOR']}.{found.get('PATCHLEVEL', '0')}"


def _glibc_of(facts: ElfFacts) -> str | None:
    versions = [
        tuple(int(p) for p in name.removeprefix("GLIBC_").split("."))
        for name in facts.version_defs
        if re.fullmatch(r"GLIBC_\d+(\.\d+)+", name)
    ]
    return ".".join(str(p) for p in max(versions)) if versions else None


def _read_libc(rootfs: RootFS, machine_hint: int | None, cache: FactsCache | None
               ) -> tuple[ElfFacts | None, str | None]:
    from resolver.elf.cache import FactsCache, read_facts  # noqa: PLC0415
    from resolver.errors import InvalidElf  # noqa: PLC0415

    facts_cache = cache if cache is not None else FactsCache(None)

    order = sorted(_TRIPLETS, key=lambda m: m != machine_hint)
    candidates: list[tuple[str, str | None]] = [
        (f"{lib}/{_TRIPLETS[m]}", _TRIPLETS[m]) for lib in ("/lib", "/usr/lib") for m in order
    ]
    candidates += [("/lib64", None), ("/usr/lib64", None), ("/lib", None), ("/usr/lib", None)]
    for directory, triplet in candidates:
        found = rootfs.find_file(directory, "libc.so.6")
        if found is None or not found.ok or found.real is None:
            continue
        try:
            return read_facts(rootfs, found.real, facts_cache), triplet
        except InvalidElf:
            continue
    return None, None


def _read_cuda(rootfs: RootFS) -> tuple[str | None, str | None]:
    """CUDA toolkit version and flavour: version.json, else CUDART_VERSION, else the dir name."""
    names = ["cuda", *sorted((n for n in rootfs.list_dir("/usr/local") if n.startswith("cuda-")),
                             reverse=True)]
    for name in names:
        top = f"/usr/local/{name}"
        if not rootfs.list_dir(top):
            continue
        targets = rootfs.list_dir(f"{top}/targets")
        flavour = ("sbsa" if "sbsa-linux" in targets
                   else "tegra" if "aarch64-linux" in targets else None)
        version: str | None = None
        text = rootfs.read_text(f"{top}/version.json")
        if text is not None:
            try:
                version = str(json.loads(text)["cuda"]["version"])
            except (ValueError, KeyError, TypeError):
                version = None
        if version is None:
            headers = [f"{top}/include/cuda_runtime_api.h",
                       *(f"{top}/targets/{t}/include/cuda_runtime_api.h" for t in sorted(targets))]
            for header in headers:
                # The define sits near the top of a 600 KB header: read only the start.
                text = rootfs.read_text(header, 16384, prefix=True) or ""
                match = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", text)
                if match:
                    number = int(match.group(1))
                    version = f"{number // 1000}.{number % 1000 // 10}"
                    break
        if version is None:
            real = rootfs.resolve(top).real or top
            match = re.search(r"cuda-(\d+\.\d+)$", real)
            version = match.group(1) if match else None
        if version is not None:
            return version, flavour
    return None, None


def _read_cudnn(rootfs: RootFS, triplet: str | None) -> str | None:
    headers = ["/usr/include/cudnn_version.h"]
    if triplet:
        headers.insert(0, f"/usr/include/{triplet}/cudnn_version.h")
    headers += [f"/usr/include/{n}" for n in sorted(rootfs.list_dir("/usr/include"))
                if n.startswith("cudnn_version_v")]
    for header in headers:
        text = rootfs.read_text(header)
        version = parse_cudnn_header(text) if text else None
        if version:
            return version
    for directory in ([f"/usr/lib/{triplet}"] if triplet else []) + ["/usr/lib64", "/usr/lib"]:
        for name in sorted(rootfs.list_dir(directory)):
            match = re.fullmatch(r"libcudnn\.so\.(\d+\.\d+\.\d+)", name)
            if match:
                return match.group(1)
    return None


def _read_driver(rootfs: RootFS, triplet: str | None) -> str | None:
    """The driver version from a desktop driver's file name (`libcuda.so.575.57.08`)."""
    dirs = [f"/usr/lib/{triplet}", f"/usr/lib/{triplet}/nvidia"] if triplet else []
    for directory in [*dirs, "/usr/lib64", "/usr/lib"]:
        for name in sorted(rootfs.list_dir(directory)):
            match = re.fullmatch(r"libcuda\.so\.(\d{3}\.\d+(?:\.\d+)?)", name)
            if match:
                return match.group(1)
    return None


def parse_version(text: str | None) -> Version | None:
    """`text` as a PEP 440 version, None when it is absent or not one."""
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ReleaseFacts:
    release: JetsonRelease | None
    gpus: tuple[int, ...]
    driver: Version | None
    cuda: Version | None


def _release_facts(l4t: Version) -> _ReleaseFacts:
    """The release's row with its GPUs, driver and CUDA.

    For an unlisted release: no row, and whatever every listed release of its major.minor (else
    of its major) agrees on; GPUs: all of theirs.
    """
    release = find_jetson_release(l4t)
    if release is not None:
        return _ReleaseFacts(release=release, gpus=release.gpus, driver=release.driver,
                             cuda=release.cuda)
    same = ([r for r in jetson_releases() if r.l4t.release[:2] == l4t.release[:2]]
            or [r for r in jetson_releases() if r.l4t.major == l4t.major])
    drivers = {r.driver for r in same}
    cudas = {r.cuda for r in same}
    return _ReleaseFacts(
        release=None, gpus=tuple(sorted({g for r in same for g in r.gpus})),
        driver=drivers.pop() if len(drivers) == 1 else None,
        cuda=cudas.pop() if len(cudas) == 1 else None)


def _read_python(rootfs: RootFS) -> str | None:
    """The version `/usr/bin/python3` names (`python3.12`), following links by their text."""
    path = "/usr/bin/python3"
    for _ in range(8):
        match = re.search(r"python(\d+\.\d+)$", path)
        if match:
            return match.group(1)
        target = rootfs.read_link(path)
        if target is None:
            return None
        path = target if target.startswith("/") else f"{path.rsplit('/', 1)[0]}/{target}"
    return None


def read_platform(
    rootfs: RootFS,
    *,
    machine_hint: int | None = None,
    gpu_arch: int | None = None,
    python: Version | None = None,
    cache: FactsCache | None = None,
) -> Platform:
    """Read the platform facts of a root.

    `machine_hint` is the e_machine to assume when the root holds no C library (a bare
    directory); `gpu_arch` and `python` override what the root says; `cache` serves the C
    library's facts without reading it again.
    """
    libc, triplet = _read_libc(rootfs, machine_hint, cache)
    machine = libc.machine if libc else (machine_hint or Machine.X86_64)
    elf_class = libc.elf_class if libc else ElfClass.ELF64
    if (triplet is None and machine in _TRIPLETS
            and rootfs.list_dir(f"/usr/lib/{_TRIPLETS[Machine(machine)]}")):
        triplet = _TRIPLETS[Machine(machine)]
    system_dirs: tuple[str, ...]
    if triplet:
        # Debian's glibc: slibdir and libdir are multiarch; /lib and /usr/lib follow.
        system_dirs = (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib")
        lib_token = f"lib/{triplet}"
    elif elf_class is ElfClass.ELF64:
        system_dirs, lib_token = ("/lib64", "/usr/lib64"), "lib64"
    else:
        system_dirs, lib_token = ("/lib", "/usr/lib"), "lib"
    # Only their first MiB: both are a few lines, and nothing of the loader's depends on them.
    os_release = parse_os_release(rootfs.read_text("/etc/os-release", prefix=True) or "")
    tegra = rootfs.read_text("/etc/nv_tegra_release", prefix=True)
    l4t = parse_version(parse_nv_tegra_release(tegra) if tegra else None)
    facts = _release_facts(l4t) if l4t else _ReleaseFacts(release=None, gpus=(), driver=None,
                                                          cuda=None)
    release = facts.release
    cuda, flavour = _read_cuda(rootfs)
    if gpu_arch is None and len(facts.gpus) == 1:
        gpu_arch = facts.gpus[0]
    return Platform(
        machine=machine,
        elf_class=elf_class,
        endian=libc.endian if libc else Endian.LITTLE,
        multiarch=triplet,
        system_dirs=system_dirs,
        lib_token=lib_token,
        platform_token=_PLATFORM_NAMES.get(Machine(machine), "unknown")
        if machine in _PLATFORM_NAMES else "unknown",
        glibc=parse_version(_glibc_of(libc) if libc else None),
        os_id=os_release.get("ID"),
        os_version=os_release.get("VERSION_ID"),
        l4t=l4t,
        jetpack=release.jetpack if release else None,
        jetpack_label=release.jetpack_label if release else None,
        cuda=parse_version(cuda),
        cuda_flavour=flavour,
        cudnn=parse_version(_read_cudnn(rootfs, triplet)),
        python=python or parse_version(_read_python(rootfs)),
        gpu_arch=gpu_arch,
        gpu_candidates=facts.gpus if gpu_arch is None and len(facts.gpus) > 1 else (),
        driver=parse_version(_read_driver(rootfs, triplet)) or facts.driver,
        driver_cuda=facts.cuda,
    )

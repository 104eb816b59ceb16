from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
import time
import zipfile
from contextlib import contextmanager
from typing import TYPE_CHECKING

import _data
import pytest
from conftest import unavailable
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.elf.facts import GpuCode, parse_gpu_code
from resolver.elf.fatbin import find_kernel_for, iter_fatbin_codes, parse_fatbin_codes
from resolver.errors import InvalidElf

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import TypeAlias

    Read: TypeAlias = Callable[[int, int], bytes]
    Library: TypeAlias = Callable[[str], Path]
    Tools: TypeAlias = Callable[[str, tuple[str, ...]], Path]


def codes(*names: str) -> set[GpuCode]:
    return {parse_gpu_code(name) for name in names}


# What the real libraries carry, as `cuobjdump --list-elf` reports it (none carries PTX).
SMALL_LIBRARIES = {
    "x86-libtorch_nvshmem": codes("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
    "arm-libtorch_nvshmem": codes("sm_80", "sm_90", "sm_100", "sm_110", "sm_120"),
    "x86-libtorch_cuda_linalg": codes("sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
}
ARM_LIBTORCH_CUDA = codes(
    "sm_80", "sm_90", "sm_90a", "sm_100", "sm_100a", "sm_103a", "sm_110", "sm_110a",
    "sm_120", "sm_120a", "sm_121a",
)
# sm_103 is family-specific (`sm_103f`, flag 0x200000) in the file; cuobjdump lists it `sm_103`.
X86_LIBTORCH_CUDA = codes(
    "sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "sm_100", "sm_100a", "sm_103",
    "sm_120", "sm_120a", "sm_121a",
)


@pytest.fixture(scope="session")
def library(request: pytest.FixtureRequest, data_dir: Path) -> Library:
    """`key` "x86-libtorch_cuda" -> torch/lib/libtorch_cuda.so of that wheel, extracted once."""

    def extract(key: str) -> Path:
        platform, _, name = key.partition("-")

        def build(tmp: Path) -> None:
            wheel = request.getfixturevalue(f"torch_{platform}_wheel")
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(f"torch/lib/{name}.so") as src,
                (tmp / f"{name}.so").open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)

        return _data.build_once(data_dir / "fatbin" / platform / name, build) / f"{name}.so"

    return extract


@pytest.fixture(scope="session")
def nvidia_tools(data_dir: Path) -> Tools:
    """A directory with `bin/<tool>` of an NVIDIA wheel from PyPI for each tool, fetched once.

    A download the network stops is `unavailable` (a skip, a failure on CI); any other failure
    (pip refusing the request, a wheel without the tool) is an error.
    """

    def fetch(package: str, tools: tuple[str, ...]) -> Path:
        try:
            return _data.ensure_nvidia_tools(data_dir, package, tools)
        except _data.DataUnavailable as err:
            unavailable(str(err))
            raise

    return fetch


def fatbin_section(path: Path) -> tuple[int, int]:
    """File offset and size of `.nv_fatbin`, as `readelf -S --wide` reports them."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run(
        ["readelf", "-S", "--wide", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\]\s+\.nv_fatbin\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", out)
    assert found, f"{path}: no .nv_fatbin in readelf output"
    return int(found[1], 16), int(found[2], 16)


@contextmanager
def section_reader(path: Path, log: list[int] | None = None) -> Iterator[tuple[Read, int]]:
    offset, size = fatbin_section(path)
    with path.open("rb") as fh:

        def read(at: int, length: int) -> bytes:
            if log is not None:
                log.append(length)
            fh.seek(offset + at)
            return fh.read(length)

        yield read, size


def over(data: bytes) -> Read:
    return lambda at, length: data[at : at + length]


def cuobjdump_codes(nvidia_tools: Tools, path: Path) -> set[GpuCode]:
    """The codes `cuobjdump --list-elf/--list-ptx` names (it writes `f` only for PTX; dropped)."""
    tool = nvidia_tools("nvidia-cuda-cuobjdump", ("cuobjdump",)) / "cuobjdump"
    found = set()
    for option in ("--list-elf", "--list-ptx"):
        out = subprocess.run(
            [str(tool), option, str(path)], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            match = re.fullmatch(r"(ELF|PTX) file\s+\d+: .*\.sm_(\d+)(a?)f?\.(?:cubin|ptx)", line)
            assert match, f"unexpected cuobjdump line {line!r}"
            prefix = "sm" if match[1] == "ELF" else "compute"
            found.add(parse_gpu_code(f"{prefix}_{match[2]}{match[3]}"))
    return found


@pytest.mark.parametrize("key", sorted(SMALL_LIBRARIES))
def test_small_library_codes_are_the_known_set(library: Library, key: str) -> None:
    with section_reader(library(key)) as (read, size):
        assert set(parse_fatbin_codes(read, size, origin=key)) == SMALL_LIBRARIES[key]


@pytest.mark.network
@pytest.mark.parametrize("key", sorted(SMALL_LIBRARIES))
def test_small_library_codes_match_cuobjdump(
    library: Library, nvidia_tools: Tools, key: str
) -> None:
    path = library(key)
    with section_reader(path) as (read, size):
        found = set(parse_fatbin_codes(read, size, origin=key))
    assert found == cuobjdump_codes(nvidia_tools, path)


@pytest.mark.slow
def test_arm_libtorch_cuda_has_thor_code_and_parses_fast(library: Library) -> None:
    log: list[int] = []
    with section_reader(library("arm-libtorch_cuda"), log) as (read, size):
        start = time.perf_counter()
        found = parse_fatbin_codes(read, size, origin="libtorch_cuda.so")
        elapsed = time.perf_counter() - start
    assert size > 200_000_000
    assert set(found) == ARM_LIBTORCH_CUDA
    assert find_kernel_for(found, 110) == parse_gpu_code("sm_110")
    assert elapsed < 1.0, f"parsing took {elapsed:.3f} s"
    assert max(log) <= 256, "only headers and short zero-padding probes are read"
    assert sum(log) < size // 500


@pytest.mark.slow
def test_x86_libtorch_cuda_has_no_thor_code(library: Library) -> None:
    log: list[int] = []
    with section_reader(library("x86-libtorch_cuda"), log) as (read, size):
        found = parse_fatbin_codes(read, size, origin="libtorch_cuda.so")
    assert set(found) == X86_LIBTORCH_CUDA
    assert find_kernel_for(found, 110) is None
    assert find_kernel_for(found, 103) == parse_gpu_code("sm_103")
    assert max(log) <= 48, "no padding here, so every read is a header"


@pytest.mark.slow
@pytest.mark.network
def test_arm_libtorch_cuda_matches_cuobjdump(library: Library, nvidia_tools: Tools) -> None:
    path = library("arm-libtorch_cuda")
    with section_reader(path) as (read, size):
        found = set(parse_fatbin_codes(read, size, origin="libtorch_cuda.so"))
    assert found == cuobjdump_codes(nvidia_tools, path)


PTX_SOURCE = ".version 9.0\n.target sm_{}\n.address_size 64\n.visible .entry k() {{ ret; }}\n"
# (kind, target) images packed by NVIDIA's own `fatbinary`: no plain sm_100 cubin and no plain
# compute_110 PTX, so those two can only come from the family-specific (`f`) entries.
IMAGES = ["elf:75", "elf:90a", "elf:100a", "elf:100f", "elf:110", "elf:110a", "elf:110f",
          "ptx:75", "ptx:90a", "ptx:100", "ptx:110f"]


@pytest.fixture(scope="module")
def nvidia_fatbin(tmp_path_factory: pytest.TempPathFactory, nvidia_tools: Tools) -> Path:
    tools = nvidia_tools("nvidia-cuda-nvcc", ("ptxas", "fatbinary"))
    work = tmp_path_factory.mktemp("fatbin")
    specs = []
    for kind, target in (image.split(":") for image in IMAGES):
        image = work / f"k_{target}.ptx"
        image.write_text(PTX_SOURCE.format(target))
        if kind == "elf":
            cubin = image.with_suffix(".cubin")
            subprocess.run([str(tools / "ptxas"), f"-arch=sm_{target}", str(image), "-o",
                            str(cubin)], check=True)
            image = cubin
        specs.append(f"--image3=kind={kind},sm={target},file={image}")
    out = work / "mix.fatbin"
    subprocess.run([str(tools / "fatbinary"), "-64", f"--create={out}", *specs], check=True)
    return out


@pytest.mark.network
def test_nvidia_fatbin_flags_read_as_cuobjdump_reads_them(
    nvidia_fatbin: Path, nvidia_tools: Tools
) -> None:
    data = nvidia_fatbin.read_bytes()
    found = parse_fatbin_codes(over(data), len(data), origin="mix.fatbin")
    assert [str(code) for code in found] == [
        "sm_75", "sm_90a", "sm_100", "sm_100a", "sm_110", "sm_110a",
        "compute_75", "compute_90a", "compute_100", "compute_110",
    ]
    assert set(found) == cuobjdump_codes(nvidia_tools, nvidia_fatbin)


def sass(name: str) -> GpuCode:
    return parse_gpu_code(f"sm_{name}")


def ptx(name: str) -> GpuCode:  # compute_XY: PTX for the driver to JIT
    return parse_gpu_code(f"compute_{name}")


@pytest.mark.parametrize(
    ("available", "gpu", "expected"),
    [
        pytest.param([sass("100")], 103, sass("100"), id="same-major-lower-minor"),
        pytest.param([sass("110")], 110, sass("110"), id="same-arch"),
        pytest.param([sass("103")], 100, None, id="same-major-higher-minor-no"),
        pytest.param([sass("100a")], 103, None, id="arch-specific-other-minor-no"),
        pytest.param([sass("110a")], 110, sass("110a"), id="arch-specific-exact-only"),
        pytest.param([ptx("90")], 110, ptx("90"), id="ptx-jit"),
        pytest.param([ptx("120")], 110, None, id="ptx-newer-no"),
        pytest.param([ptx("90a")], 110, None, id="arch-specific-ptx-other-no"),
        pytest.param([ptx("90a")], 90, ptx("90a"), id="arch-specific-ptx-exact"),
        pytest.param([sass("100"), sass("120")], 110, None, id="other-major-no"),
        pytest.param([sass("101")], 110, None, id="sm101-is-not-thor-under-cuda13"),
        pytest.param([ptx("100"), sass("110")], 110, sass("110"), id="sass-over-ptx"),
        pytest.param([sass("80"), sass("86"), sass("89")], 87, sass("86"), id="highest-minor"),
        pytest.param([sass("110a"), sass("110")], 110, sass("110"), id="plain-over-specific"),
        pytest.param([ptx("75"), ptx("100"), sass("90")], 110, ptx("100"), id="highest-ptx"),
        pytest.param([], 110, None, id="empty"),
    ],
)
def test_find_kernel_for(available: list[GpuCode], gpu: int, expected: GpuCode | None) -> None:
    assert find_kernel_for(available, gpu) == expected
    assert find_kernel_for(iter(available), gpu) == expected


def entry(kind: int, arch: int, flags: int = 0x8011, payload: int = 16, header: int = 64) -> bytes:
    head = struct.pack("<HHIQ12xI8xQ", kind, 0x101, header, payload, arch, flags)
    return head.ljust(header, b"\0") + b"\x5a" * payload


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


TWO = container(entry(2, 90), entry(1, 100, flags=0x108011)) + bytes(24) + container(
    entry(2, 110, flags=0x1200011, header=112), entry(4, 120), entry(2, 100, flags=0x1100011)
)


def test_synthetic_containers_with_padding_and_unknown_kind() -> None:
    data = bytes(8) + TWO + bytes(13)
    assert [str(code) for code in iter_fatbin_codes(over(data), len(data), origin="x")] == [
        "sm_90", "compute_100a", "sm_110", "sm_100a",
    ]
    data = (bytes(8) + TWO + bytes(16)) * 2
    assert parse_fatbin_codes(over(data), len(data), origin="x") == (
        sass("90"), sass("100a"), sass("110"), ptx("100a"),
    )


def test_empty_and_all_zero_sections_have_no_code() -> None:
    assert parse_fatbin_codes(over(b""), 0, origin="x") == ()
    size = 64 << 20
    start = time.perf_counter()
    assert parse_fatbin_codes(lambda at, n: bytes(min(n, size - at)), size, origin="x") == ()
    assert time.perf_counter() - start < 1.0


def assert_invalid(data: bytes, size: int | None = None, origin: str = "lib.so") -> str:
    with pytest.raises(InvalidElf) as caught:
        parse_fatbin_codes(over(data), len(data) if size is None else size, origin=origin)
    message = str(caught.value)
    assert message.startswith(f"{origin}: ")
    assert "\n" not in message
    return message


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


ONE = container(entry(2, 90))
FIRST = len(container(entry(2, 90), entry(1, 100, flags=0x108011)))
BAD = {
    "zero-entry-header-size": (patch(ONE, 16 + 4, "<I", 0), "header size 0 is below 64"),
    "zero-container-header-size": (patch(ONE, 6, "<H", 0), "header size 0"),
    "container-past-end": (patch(ONE, 8, "<Q", len(ONE)), "runs past the section end"),
    "container-size-overflows": (patch(ONE, 8, "<Q", 2**64 - 1), "runs past the section end"),
    "entry-past-container": (patch(ONE, 16 + 8, "<Q", 17), "run past its container's end"),
    "entry-header-cut-by-container": (container(entry(2, 90), bytes(40)), "only 40 bytes left"),
    "stray-byte-in-padding": (patch(TWO, FIRST + 9, "<B", 1), "stray byte 0x01"),
    "unaligned-container": (bytes(4) + TWO, "offset 0x4: stray byte 0x50"),
    "wrong-magic": (b"\x7fELF" + TWO[4:], "magic 0x464c457f"),
    "wrong-version": (patch(TWO, 4, "<H", 2), "version 2"),
    "no-arch": (container(entry(2, 0)), "names no architecture"),
    "header-cut-short": (TWO[:10], "cut short"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_section_raises_invalid_elf_naming_origin(case: str) -> None:
    data, fragment = BAD[case]
    assert fragment in assert_invalid(data)


def test_every_truncation_and_short_read_of_synthetic_section_is_invalid() -> None:
    for length in range(1, len(TWO)):
        if FIRST <= length <= FIRST + 24:  # ends in the zero padding: a complete section
            assert parse_fatbin_codes(over(TWO[:length]), length, origin="x")
        else:
            assert_invalid(TWO[:length])
    assert_invalid(TWO, size=len(TWO) + 64)  # the callback returns less than the size claims
    assert "cut short" in assert_invalid(TWO[:40], size=len(TWO))


def random_bytes(seed: int, length: int) -> bytes:
    blocks = (hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(length // 32 + 1))
    return b"\xff" + b"".join(blocks)[: length - 1]


@pytest.mark.parametrize("length", [1, 7, 16, 64, 1000, 1 << 16])
def test_random_bytes_are_invalid(length: int) -> None:
    for seed in range(20):
        assert_invalid(random_bytes(seed, length), origin=f"random{seed}")


@pytest.fixture(scope="module")
def nvshmem_section(library: Library) -> bytes:
    with section_reader(library("x86-libtorch_nvshmem")) as (read, size):
        return read(0, size)


def test_truncated_real_section_is_invalid_at_many_lengths(nvshmem_section: bytes) -> None:
    data = nvshmem_section  # one container: every proper prefix is cut short
    for length in [1, 4, 8, 15, 16, 17, 47, 64, 80, 81, 63136, 100_000, len(data) - 8,
                   len(data) - 1]:
        assert_invalid(data[:length], origin="libtorch_nvshmem.so")
    assert_invalid(data, size=len(data) + 8)


@pytest.mark.fuzz
@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 4096),
)
def test_mutated_real_section_parses_or_raises_invalid_elf(
    nvshmem_section: bytes, mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(nvshmem_section)
    for index, value in mutations:
        data[index] = value
    mutated = bytes(data[: len(data) - cut])
    try:
        found = parse_fatbin_codes(over(mutated), len(mutated), origin="fuzz.so")
    except InvalidElf as err:
        message = str(err)
    else:
        assert all(code.arch > 0 for code in found)
        return
    assert message.startswith("fuzz.so: .nv_fatbin")
    assert "\n" not in message

"""ElfFacts from our reader, cross-checked with binutils readelf on real x86_64 and aarch64.

The host's own libraries are found through its ld.so.cache (`_data.host_library`), whatever its
architecture; the torch libraries are x86_64 and aarch64 on every host.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import struct
import subprocess
import time
from typing import TYPE_CHECKING

import _data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.elf.cache import FactsCache, read_facts
from resolver.elf.facts import ElfFacts, Machine, VersionNeed, facts_to_json, parse_facts_json
from resolver.elf.reader import read_elf_facts
from resolver.errors import InvalidElf
from resolver.target.rootfs import RootFS

if TYPE_CHECKING:
    from pathlib import Path

_MACHINES = {"Advanced Micro Devices X86-64": Machine.X86_64, "AArch64": Machine.AARCH64}


def _readelf(path: Path, *flags: str) -> str:
    return subprocess.run(["readelf", "-W", *flags, str(path)], capture_output=True, text=True,
                          check=True).stdout


def readelf_facts(path: Path) -> dict[str, object]:
    """The facts readelf prints, in our shape."""
    header = _readelf(path, "-h")
    dynamic = _readelf(path, "-d")
    versions = _readelf(path, "-V")

    def tag(name: str) -> list[str]:
        return re.findall(rf"\({name}\)\s+.*\[(.*)\]", dynamic)

    machine = re.search(r"Machine:\s+(.*)", header)
    defs: list[str] = []
    section = re.search(r"Version definition section.*?(?=\n\n|\Z)", versions, re.DOTALL)
    if section:
        for flags, name in re.findall(r"Flags: (\S+)\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)",
                                      section.group(0)):
            if "BASE" not in flags:
                defs.append(name)
    needs: list[VersionNeed] = []
    section = re.search(r"Version needs section.*?(?=\n\n|\Z)", versions, re.DOTALL)
    if section:
        current = ""
        for line in section.group(0).splitlines():
            file_match = re.search(r"File: (\S+)", line)
            if file_match:
                current = file_match.group(1)
            name_match = re.search(r"Name: (\S+)\s+Flags: (\S+)", line)
            if name_match:
                needs.append(VersionNeed(file=current, name=name_match.group(1),
                                         weak="WEAK" in name_match.group(2)))
    flags_1 = re.search(r"\(FLAGS_1\)\s+Flags: (.*)", dynamic)
    return {
        "machine": _MACHINES.get(machine.group(1).strip(), -1) if machine else -1,
        "soname": next(iter(tag("SONAME")), None),
        "needed": tuple(tag("NEEDED")),
        "rpath": next(iter(tag("RPATH")), None),
        "runpath": next(iter(tag("RUNPATH")), None),
        "nodeflib": bool(flags_1 and "NODEFLIB" in flags_1.group(1)),
        "version_defs": tuple(defs),
        "version_needs": tuple(needs),
    }


def ours(facts: ElfFacts) -> dict[str, object]:
    return {
        "machine": facts.machine, "soname": facts.soname, "needed": facts.needed,
        "rpath": facts.rpath, "runpath": facts.runpath, "nodeflib": facts.nodeflib,
        "version_defs": facts.version_defs, "version_needs": facts.version_needs,
    }


def read(path: Path) -> ElfFacts:
    with path.open("rb") as handle:
        return read_elf_facts(handle, origin=str(path))


def host_lib(soname: str) -> Path:
    """This host's `soname` (its ld.so.cache's entry for the host's machine); skip if none."""
    found = _data.host_library(soname)
    if found is None:
        pytest.skip(f"this host's ld.so.cache has no {soname}")
    return found


@functools.cache
def small_library() -> bytes:
    """A small real library of this host: libz.so.1, or libm.so.6 where zlib is missing."""
    found = _data.host_library("libz.so.1") or _data.host_library("libm.so.6")
    assert found is not None, "a glibc host has libm.so.6 in its ld.so.cache"
    return found.resolve().read_bytes()


@pytest.mark.parametrize("soname", ["libc.so.6", "libstdc++.so.6", "libz.so.1", "libm.so.6",
                                    "libgcc_s.so.1"])
def test_host_library_matches_readelf(soname: str) -> None:
    path = host_lib(soname)
    facts = read(path)
    assert (int(facts.elf_class), facts.machine) == (_data.HOST_ELF_CLASS, _data.HOST_MACHINE)
    assert ours(facts) == readelf_facts(path)


@pytest.mark.slow
def test_torch_libraries_match_readelf(torch_x86_full: Path) -> None:
    libs = sorted((torch_x86_full / "torch" / "lib").glob("*.so*"))
    libs += sorted((torch_x86_full / "nvidia").glob("*/lib/*.so*"))
    assert len(libs) > 30
    for path in libs:
        assert ours(read(path)) == readelf_facts(path), path


@pytest.mark.slow
def test_aarch64_libraries_match_readelf(torch_arm_site: Path, arm64_root: Path) -> None:
    libs = sorted((torch_arm_site / "torch" / "lib").glob("*.so*"))
    libs += sorted((arm64_root / "usr" / "lib" / "aarch64-linux-gnu").glob("lib*.so.*"))
    libs = [p for p in libs if p.is_file() and not p.is_symlink()]
    assert len(libs) > 20
    for path in libs:
        facts = read(path)
        assert facts.machine == Machine.AARCH64, path
        assert ours(facts) == readelf_facts(path), path


@pytest.mark.slow
def test_big_library_costs_milliseconds_not_a_full_read(torch_x86_full: Path) -> None:
    path = torch_x86_full / "torch" / "lib" / "libtorch_cuda.so"
    assert path.stat().st_size > 200_000_000
    started = time.perf_counter()
    facts = read(path)
    elapsed = time.perf_counter() - started
    assert facts.gpu_code, "libtorch_cuda.so carries GPU code"
    # Generous bound for a loaded CI machine; reading the file whole takes far longer cold.
    assert elapsed < 1.0, elapsed


def _strip_section_headers(data: bytes) -> bytes:
    # ELF64: e_shoff at 0x28, e_shnum at 0x3c, e_shstrndx at 0x3e, in the file's byte order.
    assert data[4] == 2, "an ELF64 file"
    order = "<" if data[5] == 1 else ">"
    out = bytearray(data)
    struct.pack_into(order + "Q", out, 0x28, 0)
    struct.pack_into(order + "HH", out, 0x3C, 0, 0)
    return bytes(out)


@pytest.mark.skipif(_data.HOST_ELF_CLASS != 2, reason="strips an ELF64 header: a 64-bit host")
def test_stripped_section_headers_still_give_dynamic_facts(tmp_path: Path) -> None:
    source = host_lib("libstdc++.so.6").resolve()
    stripped = tmp_path / "libstripped.so"
    stripped.write_bytes(_strip_section_headers(source.read_bytes()))
    assert "There are no sections" in _readelf(stripped, "-S")
    assert ours(read(stripped)) == ours(read(source)) == readelf_facts(source)
    # readelf -V needs section headers; its -d reads PT_DYNAMIC and still agrees.
    dynamic_only = {k: v for k, v in readelf_facts(stripped).items() if not k.startswith("version")}
    assert {k: v for k, v in ours(read(stripped)).items() if k in dynamic_only} == dynamic_only


@pytest.mark.parametrize("data", [b"", b"\x7fEL", b"#!/bin/sh\n", b"GROUP ( libc.so.6 )\n",
                                  b"\x7fELF" + b"\0" * 12], ids=["empty", "short-magic", "script",
                                                                 "linker-script", "header-only"])
def test_non_elf_is_one_line_invalid_elf(data: bytes) -> None:
    with pytest.raises(InvalidElf) as caught:
        read_elf_facts(io.BytesIO(data), origin="x.so")
    assert str(caught.value).startswith("x.so: ")
    assert "\n" not in str(caught.value)


def test_truncated_real_library_never_escapes_invalid_elf() -> None:
    data = small_library()
    for length in [*range(0, 256, 7), *range(256, len(data), max(1, len(data) // 300))]:
        try:
            read_elf_facts(io.BytesIO(data[:length]), origin="cut.so")
        except InvalidElf as err:
            assert str(err).startswith("cut.so: ")


@pytest.mark.fuzz
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_elf_gives_facts_or_invalid_elf(data: st.DataObject) -> None:
    original = small_library()[:16384]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 16))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    try:
        read_elf_facts(io.BytesIO(bytes(mutated[:cut])), origin="fuzz.so")
    except InvalidElf as err:
        assert str(err).startswith("fuzz.so: ")


@pytest.mark.fuzz
@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 5000))
def test_damaged_cache_file_is_ignored(tmp_path_factory: pytest.TempPathFactory, junk: bytes,
                                       cut: int) -> None:
    directory = tmp_path_factory.mktemp("cache")
    lib = directory / "libz.so.1"
    lib.write_bytes(small_library())
    cache_file = directory / "facts.json"
    cache = FactsCache(cache_file)
    rootfs = RootFS(directory)
    expected = read_facts(rootfs, "/libz.so.1", cache)
    cache.save()
    text = cache_file.read_bytes()
    cache_file.write_bytes(text[:cut] + junk + text[cut:])
    again = FactsCache(cache_file)
    assert read_facts(rootfs, "/libz.so.1", again) == expected


def test_cache_hit_skips_reading_and_round_trips(tmp_path: Path) -> None:
    lib = tmp_path / "libstdc++.so.6"
    shutil.copy(host_lib("libstdc++.so.6").resolve(), lib)
    rootfs = RootFS(tmp_path)
    cache = FactsCache(tmp_path / "facts.json")
    first = read_facts(rootfs, "/libstdc++.so.6", cache)
    cache.save()
    warm = FactsCache(tmp_path / "facts.json")
    assert read_facts(RootFS(tmp_path), "/libstdc++.so.6", warm) == first
    assert (warm.hits, warm.misses) == (1, 0)
    assert parse_facts_json(facts_to_json(first)) == first
    lib.write_bytes(lib.read_bytes() + b"\0")  # size changes: the key changes, the file is re-read
    changed = FactsCache(tmp_path / "facts.json")
    read_facts(RootFS(tmp_path), "/libstdc++.so.6", changed)
    assert changed.misses == 1

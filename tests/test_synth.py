"""The fixture synthesiser: its files read back by readelf, our reader, cuobjdump and ld.so.

The loader tests write the libraries for this host's class, byte order and machine and run the
host's own loader (the interpreter's PT_INTERP) on them; the aarch64 one runs Debian's arm64
loader under qemu on any host.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import _data
import pytest
from conftest import unavailable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.elf.facts import (
    ElfClass,
    ElfFacts,
    Endian,
    GpuCode,
    VersionNeed,
    parse_gpu_code,
)
from resolver.elf.fatbin import parse_fatbin_codes
from resolver.elf.reader import read_elf_facts
from resolver.errors import InvalidFixture
from resolver.fixture.synth.elf import build_fatbin, elf_hash, synthesize_elf

if TYPE_CHECKING:
    from collections.abc import Sequence

READELF = shutil.which("readelf")
needs_readelf = pytest.mark.skipif(READELF is None, reason="binutils readelf is not installed")
on_glibc_host = pytest.mark.skipif(
    _data.HOST_LOADER is None, reason="needs a glibc host (the interpreter names no loader)"
)

# readelf -h names; the numbers are what the facts hold.
MACHINES = {"Advanced Micro Devices X86-64": 62, "AArch64": 183, "ARM": 40, "PowerPC64": 21}
TYPES = {"REL": 1, "EXEC": 2, "DYN": 3, "CORE": 4}
CUBIN_ENTRY = 64 + 208  # entry header + the minimal cubin
PTX_ENTRY = 80 + 8  # entry header with its 16-byte tail + empty PTX


def facts(**changes: object) -> ElfFacts:
    base = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=62, osabi=0,
                    elf_type=3)
    return replace(base, **changes)  # type: ignore[arg-type]


def need(file: str, name: str, *, weak: bool = False) -> VersionNeed:
    return VersionNeed(file=file, name=name, weak=weak)


def gpu(*names: str) -> tuple[GpuCode, ...]:
    return tuple(sorted((parse_gpu_code(n) for n in names), key=lambda c: c.sort_key))


# Each case's facts, by the id its tests carry.
FACTS_BY_ID: dict[str, ElfFacts] = {
    "soname-only": facts(soname="libsoname.so.1"),
    "rpath-and-runpath": facts(
        soname="libtorch_cuda.so", needed=("libc10_cuda.so", "libc.so.6"),
        rpath="$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN/../../nvidia/cu13/lib:$ORIGIN",
        runpath="/opt/jr/lib::$ORIGIN/lib",
    ),
    "nodeflib": facts(soname="libnodeflib.so", nodeflib=True, runpath=""),
    "versions-def-and-need": facts(
        soname="libcublas.so.13", needed=("libcublasLt.so.13", "libc.so.6", "libm.so.6"),
        version_defs=("libcublas.so.13", "libcublas.so.13.1"),
        version_needs=(need("libcublasLt.so.13", "libcublasLt.so.13"),
                       need("libc.so.6", "GLIBC_2.2.5"), need("libc.so.6", "GLIBC_2.14"),
                       need("libm.so.6", "GLIBC_2.29")),
    ),
    "weak-need": facts(
        soname="libweak.so.1", needed=("libc.so.6",),
        version_needs=(need("libc.so.6", "GLIBC_2.38", weak=True),
                       need("libc.so.6", "GLIBC_2.17")),
    ),
    "fatbin-sass-ptx-a": facts(
        soname="libtorch_cuda_linalg.so", needed=("libcusolver.so.12",),
        gpu_code=gpu("sm_80", "sm_90a", "sm_110", "compute_120", "compute_110a"),
    ),
    "aarch64": facts(
        machine=183, soname="libcudss.so.0", needed=("libnvpl_lapack_lp64_gomp.so.0", "libc.so.6"),
        rpath="$ORIGIN", nodeflib=True, version_defs=("libcudss.so.0",),
        version_needs=(need("libc.so.6", "GLIBC_2.17"),), gpu_code=gpu("sm_110", "sm_87"),
    ),
    "no-soname-many-needed": facts(needed=tuple(f"libneeded{i:02}.so.{i}" for i in range(40))),
    "elf32-arm-exec-gnu-osabi": facts(
        elf_class=ElfClass.ELF32, machine=40, osabi=3, elf_type=2, soname="libarm32.so.6",
        needed=("libc.so.6",), version_defs=("ARM_1",), version_needs=(need("libc.so.6", "G_2"),),
        gpu_code=gpu("sm_72"),
    ),
    "ppc64-big-endian": facts(
        endian=Endian.BIG, machine=21, soname="libbig.so.1", needed=("libc.so.6",),
        runpath="/usr/lib64", version_defs=("BIG_1",), version_needs=(need("libc.so.6", "G_2"),),
        gpu_code=gpu("sm_90"),
    ),
    "no-dynamic": facts(has_dynamic=False, elf_type=2, gpu_code=gpu("sm_90")),
}
FACTS = list(FACTS_BY_ID.values())
CASES = [pytest.param(given, id=name) for name, given in FACTS_BY_ID.items()]


@dataclass
class ReadBack:
    """What readelf prints about a file, in the facts' terms."""

    elf_class: int = 0
    endian: str = ""
    osabi: int = -1
    machine: int = -1
    elf_type: int = -1
    soname: str | None = None
    needed: list[str] = field(default_factory=list)
    rpath: str | None = None
    runpath: str | None = None
    flags_1: str | None = None
    verdefs: list[tuple[str, int, str]] = field(default_factory=list)  # flags, index, name
    verneeds: list[tuple[str, str, str, int]] = field(default_factory=list)  # file, name, flags, #
    sections: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # type, offset, size
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # offset, vaddr, align
    segments: list[str] = field(default_factory=list)


_SECTION = re.compile(
    r"^\s+\[\s*\d+\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s", re.MULTILINE)
_SEGMENT = re.compile(
    r"^\s+([A-Z_]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x[0-9a-f]+"
    r"\s+[RWE ]+?\s+0x([0-9a-f]+)$", re.MULTILINE)
_DYNAMIC = re.compile(r"^\s*0x[0-9a-f]+ \((\w+)\)\s+(.*)$", re.MULTILINE)
_VERDEF = re.compile(
    r"^\s+(?:0x)?[0-9a-f]+: Rev: 1\s+Flags: (\S+)\s+Index: (\d+)\s+Cnt: 1\s+Name: (.*)$",
    re.MULTILINE)
_VERNEED_FILE = re.compile(r"^\s+(?:0x)?[0-9a-f]+: Version: 1\s+File: (.*?)\s+Cnt: (\d+)$")
_VERNEED_NAME = re.compile(r"^\s+0x[0-9a-f]+:\s+Name: (.*?)\s+Flags: (\S+)\s+Version: (\d+)$")


def readelf(path: Path) -> ReadBack:
    """Run `readelf --wide -a` (-h -l -S -s -r -d -V -A -I) and parse it; stderr must be empty."""
    assert READELF is not None
    proc = subprocess.run([READELF, "--wide", "-a", str(path)], capture_output=True, text=True,
                          check=False)
    assert proc.stderr == "", f"readelf warned about {path.name}:\n{proc.stderr}"
    assert proc.returncode == 0
    seen = ReadBack()
    for parse in (parse_header, parse_dynamic, parse_versions, parse_layout):
        parse(proc.stdout, seen)
    return seen


def parse_header(out: str, seen: ReadBack) -> None:
    magic = re.search(r"Magic:\s+((?:[0-9a-f]{2} ){16})", out)
    data = re.search(r"Data:\s+2's complement, (\w+) endian", out)
    machine = re.search(r"Machine:\s+(.*)", out)
    elf_type = re.search(r"Type:\s+(\w+) ", out)
    assert magic is not None
    assert data is not None
    assert machine is not None
    assert elf_type is not None
    ident = bytes.fromhex(magic[1])
    seen.elf_class, seen.osabi = ident[4], ident[7]
    seen.endian = {1: "little", 2: "big"}[ident[5]]
    assert data[1] == seen.endian
    seen.machine, seen.elf_type = MACHINES[machine[1].strip()], TYPES[elf_type[1]]


def parse_dynamic(out: str, seen: ReadBack) -> None:
    for tag, value in _DYNAMIC.findall(out):
        text = re.search(r"\[(.*)\]$", value)
        if tag in ("NEEDED", "SONAME", "RPATH", "RUNPATH"):
            assert text is not None
            if tag == "NEEDED":
                seen.needed.append(text[1])
            else:
                setattr(seen, tag.lower(), text[1])
        elif tag == "FLAGS_1":
            seen.flags_1 = value.strip().removeprefix("Flags: ")


def parse_versions(out: str, seen: ReadBack) -> None:
    seen.verdefs = [(f, int(i), name) for f, i, name in _VERDEF.findall(out)]
    file = ""
    for line in out.splitlines():
        if (m := _VERNEED_FILE.match(line)) is not None:
            file = m[1]
        elif (m := _VERNEED_NAME.match(line)) is not None:
            seen.verneeds.append((file, m[1], m[2], int(m[3])))


def parse_layout(out: str, seen: ReadBack) -> None:
    for name, kind, offset, size in _SECTION.findall(out):
        seen.sections[name] = (kind, int(offset, 16), int(size, 16))
    for kind, offset, vaddr, align in _SEGMENT.findall(out):
        seen.segments.append(kind)
        if kind == "LOAD":
            seen.loads.append((int(offset, 16), int(vaddr, 16), int(align, 16)))


def expected_verneeds(given: ElfFacts) -> list[tuple[str, str, str, int]]:
    """Grouped by file in first-appearance order, numbered after the definitions."""
    groups: dict[str, list[VersionNeed]] = {}
    for item in given.version_needs:
        groups.setdefault(item.file, []).append(item)
    first = len(given.version_defs) + 2 if given.version_defs else 2
    flat = [item for items in groups.values() for item in items]
    return [(n.file, n.name, "WEAK" if n.weak else "none", first + i) for i, n in enumerate(flat)]


def expected_verdefs(given: ElfFacts) -> list[tuple[str, int, str]]:
    if not given.version_defs:
        return []
    base = [("BASE", 1, given.soname or "")]
    return base + [("none", i, name) for i, name in enumerate(given.version_defs, start=2)]


def fatbin_size(given: ElfFacts) -> int:
    return 16 + sum(CUBIN_ENTRY if c.kind.value == "sass" else PTX_ENTRY for c in given.gpu_code)


def assert_readelf_matches(path: Path, given: ElfFacts) -> ReadBack:
    seen = readelf(path)
    assert (seen.elf_class, seen.endian, seen.machine, seen.osabi, seen.elf_type) == (
        int(given.elf_class), given.endian.value, given.machine, given.osabi, given.elf_type)
    assert seen.soname == given.soname
    assert seen.needed == list(given.needed)
    assert seen.rpath == given.rpath
    assert seen.runpath == given.runpath
    assert seen.flags_1 == ("NODEFLIB" if given.nodeflib else None)
    assert seen.verdefs == expected_verdefs(given)
    assert seen.verneeds == expected_verneeds(given)
    if given.gpu_code:
        assert seen.sections[".nv_fatbin"][:1] == ("PROGBITS",)
        assert seen.sections[".nv_fatbin"][2] == fatbin_size(given)
    else:
        assert ".nv_fatbin" not in seen.sections
    return seen


@needs_readelf
@pytest.mark.parametrize("given", CASES)
def test_readelf_reads_back_exactly_the_facts(given: ElfFacts, tmp_path: Path) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(synthesize_elf(given))
    seen = assert_readelf_matches(path, given)
    dynamic = ["LOAD", "DYNAMIC"] if given.has_dynamic else []
    assert sorted(seen.segments) == sorted(["LOAD", "GNU_STACK", *dynamic])
    assert all(offset % align == vaddr % align for offset, vaddr, align in seen.loads)
    assert seen.loads[0][:2] == (0, 0)  # the headers are mapped, as glibc expects
    named = {".shstrtab", *([".dynamic", ".dynstr", ".dynsym"] if given.has_dynamic else [])}
    assert named <= set(seen.sections)
    versioned = bool(given.version_defs or given.version_needs)
    assert (".gnu.version" in seen.sections) == versioned
    assert (".gnu.version_d" in seen.sections) == bool(given.version_defs)
    assert (".gnu.version_r" in seen.sections) == bool(given.version_needs)


@pytest.mark.parametrize("given", CASES)
def test_reader_reads_back_exactly_the_facts(given: ElfFacts) -> None:
    data = synthesize_elf(given)
    assert read_elf_facts(io.BytesIO(data), origin="synth", size=len(data)) == given


@pytest.mark.parametrize("given", CASES)
def test_synthesis_is_deterministic(given: ElfFacts) -> None:
    assert synthesize_elf(given) == synthesize_elf(replace(given))


def test_different_facts_give_different_bytes() -> None:
    images = {synthesize_elf(given) for given in FACTS}
    assert len(images) == len(FACTS)


def test_elf_hash_matches_the_hashes_glibc_writes() -> None:
    # vna_hash values in Debian's libz.so.1 (x86_64), read with pyelftools.
    assert elf_hash("GLIBC_2.2.5") == 0x09691A75
    assert elf_hash("GLIBC_2.14") == 0x06969194
    assert elf_hash("GLIBC_2.3.4") == 0x09691974
    assert elf_hash("") == 0


def test_fatbin_entries_carry_the_fields_real_ones_do() -> None:
    codes = gpu("sm_80", "sm_90a", "compute_120", "compute_110a")
    data = build_fatbin(codes)
    magic, version, header, payload = struct.unpack_from("<IHHQ", data)
    assert (magic, version, header, payload) == (0xBA55ED50, 1, 16, len(data) - 16)
    pos, seen = 16, []
    while pos < len(data):
        kind, _, size, length = struct.unpack_from("<HHIQ", data, pos)
        (arch,) = struct.unpack_from("<I", data, pos + 28)
        (flags,) = struct.unpack_from("<Q", data, pos + 40)
        body = data[pos + size : pos + size + length]
        seen.append((kind, size, arch, flags))
        if kind == 2:  # a cubin: an ELF for EM_CUDA whose e_flags name the SM
            assert body[:4] == b"\x7fELF"
            assert struct.unpack_from("<H", body, 18)[0] == 190
            assert (struct.unpack_from("<I", body, 48)[0] >> 8) & 0xFF == arch
        pos += size + length
    assert pos == len(data)
    assert seen == [(2, 64, 80, 0x11), (2, 64, 90, 0x100011), (1, 80, 110, 0x100011),
                    (1, 80, 120, 0x11)]
    assert parse_fatbin_codes(lambda at, n: data[at : at + n], len(data), origin="t") == codes


def test_unwritable_facts_raise_invalid_fixture() -> None:
    with pytest.raises(InvalidFixture, match="NUL"):
        synthesize_elf(facts(soname="lib\0x.so"))
    with pytest.raises(InvalidFixture, match="machine 70000"):
        synthesize_elf(facts(machine=70000))
    with pytest.raises(InvalidFixture, match="without a dynamic section"):
        synthesize_elf(facts(has_dynamic=False, needed=("libc.so.6",)))
    with pytest.raises(InvalidFixture, match="GPU architecture 0"):
        synthesize_elf(facts(gpu_code=(replace(parse_gpu_code("sm_80"), arch=0),)))
    with pytest.raises(ValueError, match="osabi 256"):
        synthesize_elf(facts(osabi=256))


@pytest.fixture(scope="session")
def nvidia_tools(data_dir: Path) -> Path:
    """NVIDIA's cuobjdump for this host, from PyPI's nvidia-cuda-cuobjdump (as test_fatbin's)."""
    try:
        tools = _data.ensure_nvidia_tools(data_dir, "nvidia-cuda-cuobjdump", ("cuobjdump",))
    except _data.DataUnavailable as err:
        unavailable(str(err))
        raise
    return tools / "cuobjdump"


# cuobjdump reads little-endian files only (it lists nothing in a big-endian ELF).
GPU_CASES = [pytest.param(given, id=name) for name, given in FACTS_BY_ID.items()
             if given.gpu_code and given.endian is Endian.LITTLE]


@pytest.mark.parametrize("given", GPU_CASES)
def test_cuobjdump_lists_the_gpu_code(given: ElfFacts, tmp_path: Path, nvidia_tools: Path) -> None:
    tool = nvidia_tools
    path = tmp_path / "lib.so"
    path.write_bytes(synthesize_elf(given))
    listed = []
    for option in ("--list-elf", "--list-ptx"):
        proc = subprocess.run([str(tool), option, str(path)], capture_output=True, text=True,
                              check=False)
        assert "fatal" not in proc.stderr, proc.stderr
        listed += re.findall(r"\.(sm_\d+a?)\.(cubin|ptx)$", proc.stdout, re.MULTILINE)
    # cuobjdump names a cubin's SM from the cubin's own e_flags, which carry no `a`.
    expected = [(f"sm_{c.arch}" + ("a" if c.arch_specific and c.kind.value == "ptx" else ""),
                 "cubin" if c.kind.value == "sass" else "ptx") for c in given.gpu_code]
    assert sorted(listed) == sorted(expected)


A, B, C = "libjr_a.so.1", "libjr_b.so.2", "libjr_c.so.3"


def chain(*, b_defs: Sequence[str] = ("JR_B_1.0", "JR_B_2.0"), weak: Sequence[str] = (),
          **a_changes: object) -> list[ElfFacts]:
    """A needs B (and versions of it), B needs C; A's other facts from `a_changes`."""
    needs = (need(B, "JR_B_2.0"), need(B, "JR_B_1.0"), *(need(B, n, weak=True) for n in weak))
    return [
        facts(soname=A, needed=(B,), version_needs=needs, **a_changes),
        facts(soname=B, needed=(C,), version_defs=tuple(b_defs)),
        facts(soname=C),
    ]


def write(directory: Path, libs: Sequence[ElfFacts]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for lib in libs:
        assert lib.soname is not None
        (directory / lib.soname).write_bytes(synthesize_elf(lib))


def on_host(libs: Sequence[ElfFacts]) -> list[ElfFacts]:
    """`libs` for this host's class, byte order and machine: what its own loader accepts."""
    endian = Endian.LITTLE if sys.byteorder == "little" else Endian.BIG
    return [replace(lib, elf_class=ElfClass(_data.HOST_ELF_CLASS), endian=endian,
                    machine=_data.HOST_MACHINE) for lib in libs]


@on_glibc_host
def test_real_loader_finds_every_dependency(tmp_path: Path, host_trace: _data.HostTrace) -> None:
    write(tmp_path, on_host(chain()))
    result = host_trace(tmp_path / A, {"LD_LIBRARY_PATH": str(tmp_path)})
    assert dict(result.found) == {B: str(tmp_path / B), C: str(tmp_path / C)}, result.raw
    assert not result.not_found
    assert not result.version_errors
    assert result.returncode == 0
    assert "error" not in result.raw


@on_glibc_host
def test_real_loader_reports_a_version_the_provider_lacks(
    tmp_path: Path, host_trace: _data.HostTrace
) -> None:
    write(tmp_path, on_host(chain(b_defs=("JR_B_1.0",))))
    result = host_trace(tmp_path / A, {"LD_LIBRARY_PATH": str(tmp_path)})
    assert result.version_errors == (
        f"{tmp_path / B}: version `JR_B_2.0' not found (required by {tmp_path / A})",
    )


@on_glibc_host
def test_real_loader_lets_a_weak_version_be_missing(
    tmp_path: Path, host_trace: _data.HostTrace
) -> None:
    write(tmp_path, on_host(chain(weak=["JR_B_9.0"])))
    env = {"LD_LIBRARY_PATH": str(tmp_path)}
    assert not host_trace(tmp_path / A, env).version_errors
    verbose = host_trace(tmp_path / A, {**env, "LD_VERBOSE": "1"})
    assert "weak version `JR_B_9.0' not found" in verbose.raw
    assert f"{B} (JR_B_9.0) [WEAK] => not found" in verbose.raw


@on_glibc_host
@pytest.mark.parametrize(("tag", "c_found"), [("rpath", True), ("runpath", False)],
                         ids=["rpath-inherited", "runpath-not-inherited"])
def test_real_loader_follows_the_search_path_tags(
    tag: str, c_found: bool, tmp_path: Path, host_trace: _data.HostTrace
) -> None:
    libs = on_host(chain(**{tag: "$ORIGIN/deps"}))
    write(tmp_path, libs[:1])
    write(tmp_path / "deps", libs[1:])
    result = host_trace(tmp_path / A)
    assert result.found[B] == str(tmp_path / "deps" / B)
    assert (C in result.found) == c_found
    assert (C in result.not_found) == (not c_found)


@on_glibc_host
@pytest.mark.parametrize("nodeflib", [False, True], ids=["default-dirs", "nodeflib"])
def test_real_loader_honours_nodeflib(
    nodeflib: bool, tmp_path: Path, host_trace: _data.HostTrace
) -> None:
    write(tmp_path, on_host([facts(soname=A, needed=("libc.so.6",), nodeflib=nodeflib)]))
    result = host_trace(tmp_path / A)
    assert ("libc.so.6" in result.not_found) == nodeflib


@on_glibc_host
def test_real_loader_verifies_them_as_shared_objects(tmp_path: Path) -> None:
    write(tmp_path, on_host(chain()))
    static = tmp_path / "static.so"
    (static_facts,) = on_host([facts(has_dynamic=False, elf_type=2)])
    static.write_bytes(synthesize_elf(static_facts))

    def verify(path: Path) -> int:
        argv = [str(_data.HOST_LOADER), "--verify", str(path)]
        return subprocess.run(argv, capture_output=True, check=False).returncode

    # rtld.c: 0 a dynamic executable with PT_INTERP, 2 dynamic without (any real .so), 1 neither.
    assert verify(tmp_path / A) == 2
    libm = _data.host_library("libm.so.6")
    assert libm is not None
    assert verify(libm) == 2
    assert verify(static) == 1


def test_real_aarch64_loader_finds_every_dependency(
    tmp_path: Path, arm64_root: Path, qemu_trace: _data.QemuTrace
) -> None:
    if shutil.which(_data.QEMU_AARCH64) is None:
        pytest.skip(f"{_data.QEMU_AARCH64} is not installed")
    # A root of links to the shared arm64 root, plus our directory: the shared one stays as is.
    root = tmp_path / "root"
    root.mkdir()
    for entry in arm64_root.iterdir():
        (root / entry.name).symlink_to(entry)
    libs = [replace(lib, machine=183) for lib in chain()]
    # A real library too: libc.so.6 comes from the root's ld.so.cache.
    libs[0] = replace(libs[0], needed=(B, "libc.so.6"))
    write(root / "synth", libs)
    result = qemu_trace(root, root / "synth" / A, {"LD_LIBRARY_PATH": "/synth"})
    assert {B: f"/synth/{B}", C: f"/synth/{C}"}.items() <= result.found.items(), result.raw
    assert result.found["libc.so.6"] == "/lib/aarch64-linux-gnu/libc.so.6"
    assert not result.not_found
    assert not result.version_errors
    write(root / "synth", [replace(libs[1], version_defs=("JR_B_1.0",))])
    missing = qemu_trace(root, root / "synth" / A, {"LD_LIBRARY_PATH": "/synth"})
    assert missing.version_errors == (
        f"/synth/{B}: version `JR_B_2.0' not found (required by /synth/{A})",
    )


def host_lib(soname: str) -> Path:
    """This host's `soname`, from its ld.so.cache; skip if it has none."""
    found = _data.host_library(soname)
    if found is None:
        pytest.skip(f"this host's ld.so.cache has no {soname}")
    return found


def read_facts(path: Path) -> ElfFacts:
    with path.open("rb") as stream:
        return read_elf_facts(stream, origin=str(path))


@needs_readelf
@pytest.mark.parametrize("name", ["libc.so.6", "libz.so.1", "libstdc++.so.6"])
def test_real_library_facts_survive_synthesis(name: str, tmp_path: Path) -> None:
    real = read_facts(host_lib(name))
    assert real.symbols is not None and real.symbols.undefined and len(real.symbols) > 0
    path = tmp_path / name
    path.write_bytes(synthesize_elf(real))
    # Fixtures keep no symbol tables: the synthesised file says its symbols are unknown.
    assert read_facts(path) == dataclasses.replace(real, symbols=None, tls=None, static_tls=False)
    assert_readelf_matches(path, real)


@on_glibc_host
def test_real_loader_accepts_a_materialised_real_library(
    tmp_path: Path, host_trace: _data.HostTrace
) -> None:
    # The facts of the host's libstdc++ as a fixture would record them, written out: the real
    # loader checks our GLIBCXX definitions and its GLIBC requirements against the real libc.
    real = read_facts(host_lib("libstdc++.so.6"))
    assert "GLIBCXX_3.4" in real.version_defs
    (tmp_path / "libstdc++.so.6").write_bytes(synthesize_elf(real))
    user = facts(soname=A, needed=("libstdc++.so.6",),
                 version_needs=(need("libstdc++.so.6", "GLIBCXX_3.4"),))
    write(tmp_path, [user])
    result = host_trace(tmp_path / A, {"LD_LIBRARY_PATH": str(tmp_path)})
    assert result.found["libstdc++.so.6"] == str(tmp_path / "libstdc++.so.6")
    assert {"libc.so.6", "libm.so.6"} <= set(result.found)
    assert not result.not_found
    assert not result.version_errors, result.raw


NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+",
               min_size=1, max_size=24)
PATHS = st.none() | st.text("abcdefghijklmnopqrstuvwxyz0123456789._-/:$", max_size=60)


@st.composite
def random_facts(draw: st.DrawFn) -> ElfFacts:
    groups = draw(st.dictionaries(NAME, st.lists(st.tuples(NAME, st.booleans()), min_size=1,
                                                 max_size=4), max_size=4))
    return ElfFacts(
        elf_class=draw(st.sampled_from(ElfClass)),
        endian=draw(st.sampled_from(Endian)),
        machine=draw(st.sampled_from(sorted(MACHINES.values()))),
        osabi=draw(st.sampled_from([0, 3])),
        elf_type=draw(st.sampled_from([2, 3])),
        soname=draw(st.none() | NAME),
        needed=tuple(draw(st.lists(NAME, max_size=8))),
        rpath=draw(PATHS),
        runpath=draw(PATHS),
        nodeflib=draw(st.booleans()),
        version_defs=tuple(draw(st.lists(NAME, max_size=5))),
        version_needs=tuple(need(file, name, weak=weak)
                            for file, names in groups.items() for name, weak in names),
    )


@needs_readelf
@pytest.mark.fuzz
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(given=random_facts())
def test_random_facts_round_trip_through_readelf_and_the_reader(given: ElfFacts) -> None:
    data = synthesize_elf(given)
    # The reader keeps each DT_NEEDED name once, in order (a repeat loads nothing new).
    once = dataclasses.replace(given, needed=tuple(dict.fromkeys(given.needed)))
    assert read_elf_facts(io.BytesIO(data), origin="fuzz", size=len(data)) == once
    with tempfile.TemporaryDirectory(prefix="jr-synth-") as scratch:
        path = Path(scratch) / "lib.so"
        path.write_bytes(data)
        assert_readelf_matches(path, given)


# The name shapes of issue 10: bytes that are not UTF-8 (held as surrogateescape's \udc80-
# \udcff), terminal escapes and line breaks, names past NAME_MAX (255) and up to 4,000 bytes.
HOSTILE_NAME = st.text(st.sampled_from([*"abc.-_", *map(chr, range(0xDC80, 0xDD00, 7)),
                                        "\x1b", "\n", "\x07", "\x7f", "é"]),
                       min_size=1, max_size=40) | st.builds(
    lambda n: "lib" + "x" * n + ".so.1", st.integers(250, 3994))


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(needed=st.lists(HOSTILE_NAME, max_size=6), soname=st.none() | HOSTILE_NAME,
       rpath=st.none() | HOSTILE_NAME)
def test_hostile_names_round_trip_through_the_reader(needed: list[str], soname: str | None,
                                                     rpath: str | None) -> None:
    """Names from a file are data: whatever bytes a DT_NEEDED, DT_SONAME or DT_RPATH holds
    (no NUL) come back byte for byte, never a UnicodeError."""
    given = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=62, osabi=0,
                     elf_type=3, soname=soname, needed=tuple(needed), rpath=rpath)
    data = synthesize_elf(given)

    def as_read(name: str) -> str:  # escaped bytes that happen to be UTF-8 read back as text
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")

    expected = dataclasses.replace(
        given, needed=tuple(dict.fromkeys(map(as_read, needed))),
        soname=soname and as_read(soname), rpath=rpath and as_read(rpath))
    assert read_elf_facts(io.BytesIO(data), origin="fuzz", size=len(data)) == expected


@needs_readelf
def test_a_dynamic_section_of_70000_needed_is_read_whole(tmp_path: Path) -> None:
    """65,536 DT_NEEDED once hid the DT_STRTAB after them behind a bound (issue 10): the
    reader takes the dynamic section whole, as glibc does, and agrees with readelf."""
    names = tuple(f"libn{i:05d}.so.1" for i in range(70_000))
    given = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=62, osabi=0,
                     elf_type=3, soname="libmany.so", needed=names)
    path = tmp_path / "libmany.so"
    path.write_bytes(synthesize_elf(given))
    facts = read_elf_facts(io.BytesIO(path.read_bytes()), origin="libmany.so")
    assert facts.needed == names and facts.soname == "libmany.so"
    assert READELF is not None
    dynamic = subprocess.run([READELF, "-dW", str(path)], capture_output=True, text=True,
                             check=True).stdout
    assert dynamic.count("(NEEDED)") == len(names)
    assert "Library soname: [libmany.so]" in dynamic

"""Write `ElfFacts` back out as a tiny ELF shared object that carries exactly those facts.

A recorded fixture holds the facts of every library on a target machine; `synthesize_elf` turns
each into a file of one to a few kilobytes that the ordinary reading and loader-emulation code,
and glibc's own loader, read as if it were the real library: the ELF header (class, byte order,
e_machine, EI_OSABI, e_type), PT_LOAD/PT_DYNAMIC/PT_GNU_STACK program headers, a dynamic table
with DT_NEEDED (in order), DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 (DF_1_NODEFLIB), the
symbol-version sections, a `.nv_fatbin` listing the GPU code, and named section headers so
`readelf` shows it all. ELF32 and ELF64, little- and big-endian, are all written.

It does not reproduce anything the facts do not hold: there is no code, no symbol but the null
one, no relocations, and each `.nv_fatbin` entry carries an empty cubin or empty PTX, so the
files load (`LD_TRACE_LOADED_OBJECTS`) and list (`cuobjdump`) but must never be run. Version
requirements are grouped by file in first-appearance order, as a linker writes them. A version
definition section is written only when `version_defs` is non-empty: glibc then accepts any
version required of the file (it says "no version information available" only under
LD_VERBOSE), as it would for a real library without one.
The output depends on the facts alone, so the same facts always give the same bytes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from resolver.elf._constants import (
    DF_1_NODEFLIB,
    DT_FLAGS_1,
    DT_GNU_HASH,
    DT_NEEDED,
    DT_RPATH,
    DT_RUNPATH,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    DT_SYMENT,
    DT_SYMTAB,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
    DT_VERNEEDNUM,
    DT_VERSYM,
    VER_FLG_BASE,
    VER_FLG_WEAK,
)
from resolver.elf._synth_layout import (
    SHT_DYNSYM,
    SHT_GNU_HASH,
    SHT_GNU_VERDEF,
    SHT_GNU_VERNEED,
    SHT_GNU_VERSYM,
    SHT_PROGBITS,
    SHT_STRTAB,
    Codec,
    ElfHeader,
    Section,
    StringTable,
    build_image,
)
from resolver.elf.facts import ElfClass, ElfFacts, Endian, GpuCode, GpuCodeKind
from resolver.errors import InvalidFixture

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_fatbin", "elf_hash", "synthesize_elf"]

# `.nv_fatbin` (FACTS.md), checked against torch 2.14.1's x86_64 libtorch_cuda.so and against what
# CUDA 13.5's `fatbinary --compress=false` writes: a cubin entry has kind 2, 0x0101 in its second
# u16, a 64-byte header (112 for sm_100 and up, whose extra bytes we do not read), version 1.8 at
# offset 24, flags 0x11 (64-bit, Linux) plus 0x100000 for `sm_XXa` (0x200000 is `sm_XXf`, which
# ElfFacts does not model; 0x8000 marks zstd, which we do not use, so the compressed and
# decompressed sizes at offsets 16 and 56 stay 0). A PTX entry has kind 1, an 80-byte header
# whose offset 20 points at a 16-byte tail starting with 0x48, and PTX ISA version 8.0.
_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")
_FATBIN_PTX_TAIL = struct.pack("<IIII", 0x48, 0, 0, 0)
_FATBIN_FLAG_64BIT = 0x1
_FATBIN_FLAG_LINUX = 0x10
_FATBIN_FLAG_ARCH_SPECIFIC = 0x100000
# Our PTX is empty text; our cubin is an ELF header and a `.shstrtab`, the least that cuobjdump
# 13.5 accepts: EM_CUDA, ELFOSABI_CUDA (0x41) ABI version 8, and e_flags holding the SM number in
# bits 8-15 as ptxas 13.5 writes them (0x6000000 | sm << 8 | 4 below sm_100, 2 from sm_100 on).
_PTX_PAYLOAD = bytes(8)
_CUBIN_NAMES = b"\0.shstrtab\0"
_CUBIN_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_CUBIN_SECTION = struct.Struct("<IIQQQQIIQQ")


def elf_hash(name: str) -> int:
    """Return the SysV ELF hash of `name`, as stored in vd_hash and vna_hash (glibc dl-hash.h)."""
    value = 0
    for byte in name.encode("utf-8", "surrogateescape"):
        value = (value << 4) + byte
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high
    return value & 0xFFFFFFFF


def _cubin(arch: int) -> bytes:
    """Return the smallest cubin cuobjdump reads: ELF header, names, two section headers."""
    shoff = _CUBIN_HEADER.size + 16  # the names, padded to 8
    flags = 0x6000000 | (arch << 8) | (4 if arch < 100 else 2)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0x41, 8]) + bytes(7)
    header = _CUBIN_HEADER.pack(ident, 2, 190, 1, 0, 0, shoff, flags, _CUBIN_HEADER.size, 56, 0,
                                _CUBIN_SECTION.size, 2, 1)
    names = _CUBIN_NAMES.ljust(16, b"\0")
    shstrtab = _CUBIN_SECTION.pack(1, 3, 0, 0, _CUBIN_HEADER.size, len(_CUBIN_NAMES), 0, 0, 1, 0)
    return header + names + bytes(_CUBIN_SECTION.size) + shstrtab


def build_fatbin(codes: Sequence[GpuCode], *, wide: bool = True) -> bytes:
    """Return one `.nv_fatbin` container with one entry per GPU code, in the order given.

    Each SASS entry carries a minimal cubin for its SM and each PTX entry empty text: enough for
    `cuobjdump --list-elf --list-ptx` to list them, nothing a GPU could run. Fatbin headers are
    little-endian whatever the host ELF's byte order: every CUDA host is.
    """
    entries = []
    for code in codes:
        flags = _FATBIN_FLAG_LINUX | (_FATBIN_FLAG_64BIT if wide else 0)
        if code.arch_specific:
            flags |= _FATBIN_FLAG_ARCH_SPECIFIC
        if code.kind is GpuCodeKind.SASS:
            payload, tail, version, tail_at = _cubin(code.arch), b"", (8, 1), 0
        else:
            payload, tail, version, tail_at = _PTX_PAYLOAD, _FATBIN_PTX_TAIL, (0, 8), 64
        size = _FATBIN_ENTRY.size + len(tail)
        entries.append(_FATBIN_ENTRY.pack(
            2 if code.kind is GpuCodeKind.SASS else 1, 0x0101, size, len(payload), 0, tail_at,
            *version, code.arch, 0, 0, flags, 0, 0,
        ) + tail + payload)
    body = b"".join(entries)
    return struct.pack("<IHHQ", _FATBIN_MAGIC, 1, 16, len(body)) + body


def _version_definitions(facts: ElfFacts, strings: StringTable, codec: Codec) -> bytes:
    """`.gnu.version_d`: the VER_FLG_BASE entry named after the soname, then one per name."""
    if not facts.version_defs:
        return b""
    names = [facts.soname or "", *facts.version_defs]
    records = []
    for ndx, name in enumerate(names, start=1):
        last = ndx == len(names)
        # vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next; then vda_name, vda_next
        records.append(codec.pack(
            "HHHHIII", 1, VER_FLG_BASE if ndx == 1 else 0, ndx, 1, elf_hash(name), 20,
            0 if last else 28,
        ) + codec.pack("II", strings.add(name), 0))
    return b"".join(records)


def _version_requirements(
    facts: ElfFacts, strings: StringTable, codec: Codec
) -> tuple[bytes, int]:
    """`.gnu.version_r` grouped by file, and the number of files."""
    groups: dict[str, list[tuple[str, bool]]] = {}
    for need in facts.version_needs:
        groups.setdefault(need.file, []).append((need.name, need.weak))
    # Index 0 is local, 1 global (and the base definition), then the other definitions; the
    # requirements take the indexes after those, as in GNU ld's output.
    other = len(facts.version_defs) + 1 if facts.version_defs else 1
    records = []
    for number, (file, names) in enumerate(groups.items(), start=1):
        # vn_version, vn_cnt, vn_file, vn_aux, vn_next
        next_file = 0 if number == len(groups) else 16 + 16 * len(names)
        records.append(codec.pack("HHIII", 1, len(names), strings.add(file), 16, next_file))
        for position, (name, weak) in enumerate(names, start=1):
            other += 1
            # vna_hash, vna_flags, vna_other, vna_name, vna_next
            records.append(codec.pack(
                "IHHII", elf_hash(name), VER_FLG_WEAK if weak else 0, other,
                strings.add(name), 0 if position == len(names) else 16,
            ))
    return b"".join(records), len(groups)


def _dynamic_sections(
    facts: ElfFacts, codec: Codec
) -> tuple[list[Section], list[tuple[int, int | str]]]:
    """Return the sections PT_DYNAMIC points at, and the dynamic table naming them."""
    strings = StringTable()
    dynamic: list[tuple[int, int | str]] = [(DT_NEEDED, strings.add(n)) for n in facts.needed]
    for tag, text in ((DT_SONAME, facts.soname), (DT_RPATH, facts.rpath),
                      (DT_RUNPATH, facts.runpath)):
        if text is not None:
            dynamic.append((tag, strings.add(text)))
    verdef = _version_definitions(facts, strings, codec)
    verneed, verneed_count = _version_requirements(facts, strings, codec)
    word = codec.word.size
    # A GNU hash table for a symbol table with only the null symbol: one empty bucket, symbols
    # from index 1, a one-word Bloom filter with no bit set, shift 6 as GNU ld writes it.
    gnu_hash = codec.pack("IIII", 1, 1, 1, 6) + codec.word.pack(0) + codec.pack("I", 0)
    sections = [
        Section(name=".gnu.hash", kind=SHT_GNU_HASH, data=gnu_hash, align=word, link=".dynsym"),
        Section(name=".dynsym", kind=SHT_DYNSYM, data=bytes(codec.sym_size), align=word,
                entsize=codec.sym_size, link=".dynstr", info=1),
        Section(name=".dynstr", kind=SHT_STRTAB, data=strings.data, align=1),
    ]
    dynamic += [
        (DT_GNU_HASH, ".gnu.hash"),
        (DT_STRTAB, ".dynstr"),
        (DT_SYMTAB, ".dynsym"),
        (DT_STRSZ, len(strings.data)),
        (DT_SYMENT, codec.sym_size),
    ]
    if facts.nodeflib:
        dynamic.append((DT_FLAGS_1, DF_1_NODEFLIB))
    if verdef or verneed:
        # One version index per dynamic symbol: the null symbol's is 0 (VER_NDX_LOCAL).
        sections.append(Section(name=".gnu.version", kind=SHT_GNU_VERSYM, data=codec.pack("H", 0),
                                align=2, entsize=2, link=".dynsym"))
        dynamic.append((DT_VERSYM, ".gnu.version"))
    if verdef:
        count = len(facts.version_defs) + 1
        sections.append(Section(name=".gnu.version_d", kind=SHT_GNU_VERDEF, data=verdef,
                                align=word, link=".dynstr", info=count))
        dynamic += [(DT_VERDEF, ".gnu.version_d"), (DT_VERDEFNUM, count)]
    if verneed:
        sections.append(Section(name=".gnu.version_r", kind=SHT_GNU_VERNEED, data=verneed,
                                align=word, link=".dynstr", info=verneed_count))
        dynamic += [(DT_VERNEED, ".gnu.version_r"), (DT_VERNEEDNUM, verneed_count)]
    return sections, dynamic


def _check(facts: ElfFacts) -> None:
    fields = (("machine", facts.machine, 0xFFFF), ("osabi", facts.osabi, 0xFF),
              ("elf_type", facts.elf_type, 0xFFFF))
    for name, value, top in fields:
        if not 0 <= value <= top:
            raise InvalidFixture(f"{name} {value} does not fit its ELF header field (0..{top})")
    dynamic_facts = (facts.soname is not None, facts.rpath is not None, facts.runpath is not None,
                     facts.needed, facts.version_defs, facts.version_needs, facts.nodeflib)
    if not facts.has_dynamic and any(dynamic_facts):
        raise InvalidFixture("facts without a dynamic section cannot carry SONAME, NEEDED, "
                             "RPATH, RUNPATH, DT_FLAGS_1 or symbol versions")
    for code in facts.gpu_code:
        # 0 names no architecture; a cubin's e_flags hold the SM number in 8 bits.
        if not 1 <= code.arch <= 0xFF:
            raise InvalidFixture(f"GPU architecture {code.arch} is outside 1..255")


def synthesize_elf(facts: ElfFacts) -> bytes:
    """Return the bytes of a small ELF file that carries exactly `facts`.

    Raises:
        InvalidFixture: (a `ValueError`) the facts cannot be written: a number does not fit its
            header field, a string holds a NUL byte, or facts without a dynamic section carry
            dynamic facts.

    """
    _check(facts)
    codec = Codec(wide=facts.elf_class is ElfClass.ELF64, little=facts.endian is Endian.LITTLE)
    sections: list[Section] = []
    dynamic: list[tuple[int, int | str]] | None = None
    if facts.has_dynamic:
        try:
            sections, dynamic = _dynamic_sections(facts, codec)
        except ValueError as err:
            raise InvalidFixture(str(err)) from err
    if facts.gpu_code:
        sections.append(Section(name=".nv_fatbin", kind=SHT_PROGBITS, align=8,
                                data=build_fatbin(facts.gpu_code, wide=codec.wide)))
    header = ElfHeader(osabi=facts.osabi, elf_type=facts.elf_type, machine=facts.machine)
    return build_image(codec, header, sections, dynamic)

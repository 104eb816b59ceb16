"""Byte layout for `resolver.elf.synth`: place sections, build headers, pack the file.

This module knows the ELF container (header, program headers, section headers, string tables,
the ELF32/ELF64 and endian variants of each record) but nothing about facts: `synth` decides which
sections exist and what they hold, and hands the dynamic table over as (tag, value) pairs whose
values may name a section whose address is not known until the sections are placed.

The file it writes has the shape of a linker's output, small: the ELF header and program headers,
then every allocated section in one read-only PT_LOAD, then `.dynamic` alone in a writable
PT_LOAD (glibc writes relocated addresses into the dynamic table of a loaded object, see
`elf/get-dynamic-info.h`), then `.shstrtab` and the section header table, which no segment maps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "PAGE",
    "SHF_ALLOC",
    "SHT_DYNAMIC",
    "SHT_DYNSYM",
    "SHT_GNU_HASH",
    "SHT_GNU_VERDEF",
    "SHT_GNU_VERNEED",
    "SHT_GNU_VERSYM",
    "SHT_PROGBITS",
    "SHT_STRTAB",
    "Codec",
    "ElfHeader",
    "Section",
    "StringTable",
    "build_image",
]

# Section types and flags: glibc elf/elf.h.
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_DYNAMIC = 6
SHT_DYNSYM = 11
SHT_GNU_HASH = 0x6FFFFFF6
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_GNU_VERSYM = 0x6FFFFFFF
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
_PT_LOAD = 1
_PT_DYNAMIC = 2
_PT_GNU_STACK = 0x6474E551
_PF_W = 0x2
_PF_R = 0x4

# The largest page size any of our targets uses (64 KiB: aarch64 and ppc64 kernels built for
# it); a segment aligned for it is aligned for 4 KiB pages too. p_offset % PAGE == p_vaddr % PAGE
# is what glibc's _dl_map_segments needs to mmap each segment straight from the file.
PAGE = 0x10000


class Codec:
    """The struct layouts of one ELF class and byte order."""

    __slots__ = ("dyn", "ehdr", "order", "phdr", "shdr", "sym_size", "wide", "word")

    def __init__(self, *, wide: bool, little: bool) -> None:
        self.wide = wide
        self.order = "<" if little else ">"
        o = self.order
        if wide:
            self.ehdr = struct.Struct(o + "16sHHIQQQIHHHHHH")
            # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
            self.phdr = struct.Struct(o + "IIQQQQQQ")
            self.shdr = struct.Struct(o + "IIQQQQIIQQ")
            self.dyn = struct.Struct(o + "qQ")
            self.word = struct.Struct(o + "Q")
            self.sym_size = 24
        else:
            self.ehdr = struct.Struct(o + "16sHHIIIIIHHHHHH")
            # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
            self.phdr = struct.Struct(o + "IIIIIIII")
            self.shdr = struct.Struct(o + "IIIIIIIIII")
            self.dyn = struct.Struct(o + "iI")
            self.word = struct.Struct(o + "I")
            self.sym_size = 16

    def pack(self, fmt: str, *values: int) -> bytes:
        """Pack fixed-size fields (`H`, `I`, ...) in this byte order."""
        return struct.pack(self.order + fmt, *values)

    def program_header(  # noqa: PLR0913 - one argument per Elf_Phdr field
        self, kind: int, *, flags: int, offset: int, vaddr: int, size: int, align: int
    ) -> bytes:
        """Pack one program header whose file and memory sizes are equal."""
        if self.wide:
            return self.phdr.pack(kind, flags, offset, vaddr, vaddr, size, size, align)
        return self.phdr.pack(kind, offset, vaddr, vaddr, size, size, flags, align)


class StringTable:
    """An ELF string table: a leading NUL, each distinct string once, in first-use order."""

    __slots__ = ("_data", "_offsets")

    def __init__(self) -> None:
        self._data = bytearray(b"\0")
        self._offsets: dict[bytes, int] = {b"": 0}

    def add(self, text: str) -> int:
        """Return the offset of `text`, appending it on first use.

        Raises:
            ValueError: the text holds a NUL byte, which would end the string early.

        """
        raw = text.encode("utf-8", "surrogateescape")
        if b"\0" in raw:
            raise ValueError(f"a string in an ELF string table cannot hold a NUL byte: {text!r}")
        if raw not in self._offsets:
            self._offsets[raw] = len(self._data)
            self._data += raw + b"\0"
        return self._offsets[raw]

    @property
    def data(self) -> bytes:
        """The table's bytes."""
        return bytes(self._data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """One allocated section; `link` names the section whose index goes into sh_link."""

    name: str
    kind: int
    data: bytes
    align: int
    entsize: int = 0
    link: str | None = None
    info: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ElfHeader:
    """The ELF header fields that come from the facts."""

    osabi: int
    elf_type: int
    machine: int


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def build_image(
    codec: Codec,
    header: ElfHeader,
    sections: Sequence[Section],
    dynamic: Sequence[tuple[int, int | str]] | None,
) -> bytes:
    """Lay the sections out and return the whole file.

    `dynamic` is the dynamic table without its DT_NULL (None for no PT_DYNAMIC at all); a `str`
    value is the name of a section in `sections` and stands for that section's address.
    """
    word = codec.word.size
    phnum = 4 if dynamic is not None else 2
    offset = codec.ehdr.size + phnum * codec.phdr.size
    placed: list[tuple[Section, int]] = []
    for section in sections:
        offset = _align(offset, section.align)
        placed.append((section, offset))
        offset += len(section.data)
    readonly_end = offset
    addresses = {section.name: at for section, at in placed}  # vaddr == offset in this segment

    dyn_offset = dyn_addr = dyn_size = 0
    dyn_data = b""
    if dynamic is not None:
        dyn_offset = _align(offset, word)
        # One page further on in memory than in the file, as ld places RELRO/data: congruent
        # modulo PAGE, and never sharing a page with the read-only segment.
        dyn_addr = dyn_offset + PAGE
        entries = [(tag, addresses[v] if isinstance(v, str) else v) for tag, v in dynamic]
        dyn_data = b"".join(codec.dyn.pack(tag, value) for tag, value in [*entries, (0, 0)])
        dyn_size = len(dyn_data)
        offset = dyn_offset + dyn_size

    names = StringTable()
    all_sections: list[tuple[str, int, int, int, int, int, str | None, int, int, int]] = [
        # name, type, flags, addr, offset, size, link, info, align, entsize
        (s.name, s.kind, SHF_ALLOC, at, at, len(s.data), s.link, s.info, s.align, s.entsize)
        for s, at in placed
    ]
    if dynamic is not None:
        all_sections.append((".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dyn_addr, dyn_offset,
                             dyn_size, ".dynstr", 0, word, codec.dyn.size))
    for name, *_ in all_sections:
        names.add(name)
    names.add(".shstrtab")
    shstrtab = names.data
    shstrtab_offset = offset
    shoff = _align(shstrtab_offset + len(shstrtab), word)
    index = {row[0]: i for i, row in enumerate(all_sections, start=1)}
    shnum = len(all_sections) + 2  # the null section first, .shstrtab last

    ehdr = codec.ehdr.pack(
        b"\x7fELF" + bytes([2 if codec.wide else 1, 1 if codec.order == "<" else 2, 1,
                            header.osabi]) + bytes(8),
        header.elf_type, header.machine, 1, 0, codec.ehdr.size, shoff, 0,
        codec.ehdr.size, codec.phdr.size, phnum, codec.shdr.size, shnum, shnum - 1,
    )
    phdrs = [codec.program_header(_PT_LOAD, flags=_PF_R, offset=0, vaddr=0, size=readonly_end,
                                  align=PAGE)]
    if dynamic is not None:
        for kind, align in ((_PT_LOAD, PAGE), (_PT_DYNAMIC, word)):
            phdrs.append(codec.program_header(kind, flags=_PF_R | _PF_W, offset=dyn_offset,
                                              vaddr=dyn_addr, size=dyn_size, align=align))
    phdrs.append(codec.program_header(_PT_GNU_STACK, flags=_PF_R | _PF_W, offset=0, vaddr=0,
                                      size=0, align=16))

    shdrs = [bytes(codec.shdr.size)]
    for name, kind, flags, addr, at, size, link, info, align, entsize in all_sections:
        shdrs.append(codec.shdr.pack(names.add(name), kind, flags, addr, at, size,
                                     index[link] if link else 0, info, align, entsize))
    shdrs.append(codec.shdr.pack(names.add(".shstrtab"), SHT_STRTAB, 0, 0, shstrtab_offset,
                                 len(shstrtab), 0, 0, 1, 0))

    image = bytearray(shoff + shnum * codec.shdr.size)
    image[0 : len(ehdr)] = ehdr
    image[len(ehdr) : len(ehdr) + phnum * codec.phdr.size] = b"".join(phdrs)
    for section, at in placed:
        image[at : at + len(section.data)] = section.data
    image[dyn_offset : dyn_offset + dyn_size] = dyn_data
    image[shstrtab_offset : shstrtab_offset + len(shstrtab)] = shstrtab
    image[shoff:] = b"".join(shdrs)
    return bytes(image)

"""Read the loader-relevant facts of one ELF file: the only module that imports pyelftools.

It reads through the program headers and PT_DYNAMIC, the way the loader does, so a file whose
section headers are stripped still yields its SONAME, NEEDED, RPATH, RUNPATH, flags and symbol
versions. Section headers are consulted for one thing only, the `.nv_fatbin` section, whose
container and entry headers `resolver.elf.fatbin` walks without reading the GPU code itself.

It never reads a whole file: the ELF header, the program headers, the dynamic table, the strings
it points at and the version records are small reads at known offsets, so a 500 MB
`libtorch_cuda.so` costs a few dozen reads. It does not resolve anything (`resolver.loader`) and
does not cache (`resolver.elf.cache`).
"""

from __future__ import annotations

import contextlib
import io
import mmap
import struct
from typing import TYPE_CHECKING, BinaryIO

from resolver.elf._constants import (
    ALLOWED_STT,
    DF_1_NODEFLIB,
    DF_STATIC_TLS,
    DT_FLAGS,
    DT_FLAGS_1,
    DT_GNU_HASH,
    DT_HASH,
    DT_NEEDED,
    DT_NULL,
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
    NO_SYMBOLS_MARKER,
    PT_DYNAMIC,
    PT_LOAD,
    PT_TLS,
    SHN_ABS,
    SHN_UNDEF,
    STB_GLOBAL,
    STB_GNU_UNIQUE,
    STB_WEAK,
    STT_TLS,
    STV_HIDDEN,
    STV_INTERNAL,
    VER_FLG_BASE,
    VER_FLG_WEAK,
    VERSYM_HIDDEN,
)
from resolver.elf.facts import (
    PLAIN,
    PUBLIC,
    DynamicSymbols,
    ElfClass,
    ElfFacts,
    Endian,
    GpuCode,
    VersionNeed,
    key_digest,
)
from resolver.errors import InvalidElf

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from elftools.elf.elffile import ELFFile

__all__ = ["ELF_MAGIC", "read_elf_facts"]

ELF_MAGIC = b"\x7fELF"

_FATBIN_NAME = b".nv_fatbin\0"

# Bounds that keep a corrupt file from making us loop or allocate without end.
_MAX_VERSION_RECORDS = 1 << 16
_MAX_STRING = 1 << 16
# More dynamic symbols than any real library has (libtorch_cpu.so: 50,220); a count past it is
# a corrupt hash table, and the symbols are then left unknown rather than read.
_MAX_SYMBOLS = 1 << 22
_MARKER = NO_SYMBOLS_MARKER.encode()
_STRING_CHUNK = 256


class _Source:
    """Positioned reads over the file, each checked for length.

    Reads go through a memory map of the file (or the buffer of an in-memory stream), so the
    thousands of small reads a `.nv_fatbin` walk makes cost a slice each, not a seek and a
    system call, and only the pages touched are read from disk.
    """

    __slots__ = ("_map", "buffer", "origin", "size", "stream")

    def __init__(self, stream: BinaryIO, origin: str, size: int) -> None:
        self.stream = stream
        self.origin = origin
        self.size = size
        self._map: mmap.mmap | None = None
        self.buffer: memoryview | None = None
        if isinstance(stream, io.BytesIO):
            self.buffer = stream.getbuffer()
        elif size > 0:
            try:
                self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
                self.buffer = memoryview(self._map)
            except (OSError, ValueError, io.UnsupportedOperation):
                self._map = None  # not a mappable file: fall back to seek and read

    def close(self) -> None:
        """Release the buffer and the memory map."""
        if self.buffer is not None:
            self.buffer.release()
            self.buffer = None
        if self._map is not None:
            # A view still referenced (by an error's traceback) keeps it open until collected.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None

    def read(self, offset: int, length: int, what: str) -> bytes:
        """`length` bytes at `offset`, or InvalidElf naming `what` when they are not there."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidElf(
                f"{self.origin}: {what} at offset {offset:#x} (+{length}) lies past the end "
                f"of the file ({self.size} bytes)"
            )
        if self.buffer is not None:
            data = bytes(self.buffer[offset : offset + length])
        else:
            self.stream.seek(offset)
            data = self.stream.read(length)
        if len(data) != length:
            raise InvalidElf(f"{self.origin}: {what} cut short at offset {offset:#x}")
        return data

    def read_cstring(self, offset: int, what: str) -> str:
        chunks: list[bytes] = []
        pos = offset
        while pos < self.size and pos - offset < _MAX_STRING:
            chunk = self.read(pos, min(_STRING_CHUNK, self.size - pos), what)
            end = chunk.find(b"\0")
            if end >= 0:
                chunks.append(chunk[:end])
                return b"".join(chunks).decode("utf-8", "surrogateescape")
            chunks.append(chunk)
            pos += len(chunk)
        raise InvalidElf(f"{self.origin}: {what} at offset {offset:#x} is not NUL-terminated")


def _header_facts(elf: ELFFile) -> tuple[int, int, int]:
    """Return (e_machine, EI_OSABI, e_type) as numbers; pyelftools gives enum names."""
    from elftools.elf.enums import ENUM_E_MACHINE, ENUM_E_TYPE, ENUM_EI_OSABI  # noqa: PLC0415

    header = elf.header

    def number(value: object, table: Mapping[str, int]) -> int:
        return value if isinstance(value, int) else table[str(value)]

    return (
        number(header["e_machine"], ENUM_E_MACHINE),
        number(header["e_ident"]["EI_OSABI"], ENUM_EI_OSABI),
        number(header["e_type"], ENUM_E_TYPE),
    )


def _program_headers(
    elf: ELFFile, source: _Source
) -> tuple[list[tuple[int, int, int]], tuple[int, int] | None, tuple[int, int] | None]:
    """The PT_LOAD, PT_DYNAMIC and PT_TLS program headers.

    PT_LOAD as (vaddr, offset, filesz), PT_DYNAMIC as (offset, filesz), PT_TLS as (memsz,
    align). pyelftools validated the header; the table itself is unpacked with `struct` in one read,
    which costs a tenth of parsing each entry through pyelftools' construct.
    """
    phoff, phnum, phentsize = elf["e_phoff"], elf["e_phnum"], elf["e_phentsize"]
    order = "<" if elf.little_endian else ">"
    # Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align; Elf32_Phdr: type,
    # offset, vaddr, paddr, filesz, memsz, flags, align.
    wide = elf.elfclass == 64
    phdr = struct.Struct(order + ("IIQQQQQQ" if wide else "IIIIIIII"))
    if phnum and phentsize < elf.structs.Elf_Phdr.sizeof():
        raise InvalidElf(f"{source.origin}: program header size {phentsize} too small")
    table = source.read(phoff, phnum * phentsize, "program headers")
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    tls: tuple[int, int] | None = None
    for i in range(phnum):
        fields = phdr.unpack_from(table, i * phentsize)
        if wide:
            kind, _, offset, vaddr, _, filesz, memsz, align = fields
        else:
            kind, offset, vaddr, _, filesz, memsz, _, align = fields
        if kind == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif kind == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif kind == PT_TLS and memsz:
            tls = (memsz, max(align, 1))
    return loads, dynamic, tls


class _Layout:
    """The parts of the ELF header and program headers that the rest of the reading needs."""

    __slots__ = ("dynamic", "elf_class", "endian", "loads", "machine", "osabi", "sections",
                 "tls", "type")

    def __init__(self, source: _Source) -> None:
        from elftools.common.exceptions import ELFError  # noqa: PLC0415
        from elftools.elf.elffile import ELFFile  # noqa: PLC0415

        try:
            elf = ELFFile(source.stream)
            self.machine, self.osabi, self.type = _header_facts(elf)
            self.elf_class = ElfClass(elf.elfclass // 32)
            self.endian = Endian.LITTLE if elf.little_endian else Endian.BIG
            self.loads, self.dynamic, self.tls = _program_headers(elf, source)
            self.sections = (elf["e_shoff"], elf["e_shnum"], elf["e_shentsize"], elf["e_shstrndx"])
        except InvalidElf:
            raise
        except (ELFError, ValueError, KeyError, struct.error, EOFError, OverflowError) as err:
            raise InvalidElf(f"{source.origin}: unreadable ELF header: {err}") from err
        except Exception as err:  # pyelftools' vendored construct raises its own zoo of types
            raise InvalidElf(f"{source.origin}: unreadable ELF header: {err}") from err

    def offset_of(self, vaddr: int, origin: str, what: str) -> int:
        """Map a virtual address to a file offset through the PT_LOAD segments."""
        for seg_vaddr, seg_offset, filesz in self.loads:
            if seg_vaddr <= vaddr < seg_vaddr + filesz:
                return vaddr - seg_vaddr + seg_offset
        raise InvalidElf(f"{origin}: {what} address {vaddr:#x} lies in no loaded segment")


def _read_dynamic(
    source: _Source, layout: _Layout, dynamic: tuple[int, int]
) -> list[tuple[int, int]]:
    offset, size = dynamic
    wide = layout.elf_class is ElfClass.ELF64
    order = "<" if layout.endian is Endian.LITTLE else ">"
    entry = struct.Struct(order + ("qQ" if wide else "iI"))
    # All of it, as glibc's loader maps it (elf/get-dynamic-info.h reads to DT_NULL): a bound
    # here would drop the DT_STRTAB of a library with many DT_NEEDED; `read` stops at the
    # file's end, so memory stays within the file's size.
    data = source.read(offset, size // entry.size * entry.size, "dynamic section")
    tags = []
    for tag, value in entry.iter_unpack(data):
        if tag == DT_NULL:
            break
        tags.append((tag, value))
    return tags


def _read_versions(
    source: _Source,
    layout: _Layout,
    string: Callable[[int, str], str],
    dyn: dict[int, int],
    index: dict[int, str],
) -> tuple[tuple[str, ...], tuple[VersionNeed, ...]]:
    """Read `.gnu.version_d` names and `.gnu.version_r` needs (glibc elf/dl-version.c).

    `index` is filled with the version index each name has in `.gnu.version` (vd_ndx for a
    definition, vna_other for a requirement); the base definition is left out.
    """
    order = "<" if layout.endian is Endian.LITTLE else ">"
    defs: list[str] = []
    if DT_VERDEF in dyn:
        offset = layout.offset_of(dyn[DT_VERDEF], source.origin, "DT_VERDEF")
        verdef, verdaux = struct.Struct(order + "HHHHIII"), struct.Struct(order + "II")
        for _ in range(min(dyn.get(DT_VERDEFNUM, _MAX_VERSION_RECORDS), _MAX_VERSION_RECORDS)):
            _, flags, ndx, count, _, aux, nxt = verdef.unpack(
                source.read(offset, verdef.size, "version definition"))
            if count and not flags & VER_FLG_BASE:
                name, _ = verdaux.unpack(source.read(offset + aux, verdaux.size, "verdaux"))
                defs.append(string(name, "version definition name"))
                index[ndx & 0x7FFF] = defs[-1]
            if not nxt:
                break
            offset += nxt
    needs: list[VersionNeed] = []
    if DT_VERNEED in dyn:
        offset = layout.offset_of(dyn[DT_VERNEED], source.origin, "DT_VERNEED")
        verneed, vernaux = struct.Struct(order + "HHIII"), struct.Struct(order + "IHHII")
        for _ in range(min(dyn.get(DT_VERNEEDNUM, _MAX_VERSION_RECORDS), _MAX_VERSION_RECORDS)):
            _, count, file_name, aux, nxt = verneed.unpack(
                source.read(offset, verneed.size, "version need"))
            file = string(file_name, "version need file")
            aux_offset = offset + aux
            for _ in range(min(count, _MAX_VERSION_RECORDS)):
                _, flags, other, name, aux_next = vernaux.unpack(
                    source.read(aux_offset, vernaux.size, "vernaux"))
                needs.append(VersionNeed(file=file, name=string(name, "version need name"),
                                         weak=bool(flags & VER_FLG_WEAK)))
                index[other & 0x7FFF] = needs[-1].name
                if not aux_next:
                    break
                aux_offset += aux_next
            if not nxt:
                break
            offset += nxt
    return tuple(defs), tuple(needs)


def _symbol_count(source: _Source, layout: _Layout, dyn: dict[int, int]) -> int | None:
    """How many entries `.dynsym` has: DT_HASH's nchain, else the end of DT_GNU_HASH's chains.

    The dynamic table gives the symbol table's start but not its length; the hash table is
    how the loader bounds it too (elf/dl-lookup.c). None when neither is there.
    """
    order = "<" if layout.endian is Endian.LITTLE else ">"
    if DT_HASH in dyn:
        at = layout.offset_of(dyn[DT_HASH], source.origin, "DT_HASH")
        nchain: int = struct.unpack(order + "II", source.read(at, 8, "DT_HASH header"))[1]
        return nchain
    if DT_GNU_HASH not in dyn:
        return None
    at = layout.offset_of(dyn[DT_GNU_HASH], source.origin, "DT_GNU_HASH")
    nbuckets, symoffset, bloom_size, _ = struct.unpack(
        order + "IIII", source.read(at, 16, "DT_GNU_HASH header"))
    if nbuckets > _MAX_SYMBOLS or bloom_size > _MAX_SYMBOLS:
        raise InvalidElf(f"{source.origin}: DT_GNU_HASH header is corrupt")
    word = 8 if layout.elf_class is ElfClass.ELF64 else 4
    buckets_at = at + 16 + bloom_size * word
    buckets = struct.unpack(f"{order}{nbuckets}I",
                            source.read(buckets_at, 4 * nbuckets, "DT_GNU_HASH buckets"))
    last = max(buckets, default=0)
    if last < symoffset:
        return int(symoffset)
    chains_at = buckets_at + 4 * nbuckets
    # Walk the last bucket's chain to its end marker (bit 0 set), reading a block at a time.
    index = last
    while index - symoffset < _MAX_SYMBOLS:
        block = source.read(chains_at + 4 * (index - symoffset),
                            min(256, (source.size - chains_at) // 4 - (index - symoffset)) * 4,
                            "DT_GNU_HASH chain")
        if not block:
            break
        for value in struct.unpack(f"{order}{len(block) // 4}I", block):
            if value & 1:
                return index + 1
            index += 1
    raise InvalidElf(f"{source.origin}: DT_GNU_HASH chain has no end")


def _symbol_rows(
    source: _Source, layout: _Layout, dyn: dict[int, int], count: int
) -> Iterator[tuple[int, int, int, int, int]]:
    """(st_name, st_info, st_other, st_shndx, st_value) of every symbol, the null one first."""
    wide = layout.elf_class is ElfClass.ELF64
    order = "<" if layout.endian is Endian.LITTLE else ">"
    # Elf64_Sym: name, info, other, shndx, value, size; Elf32_Sym: name, value, size, info,
    # other, shndx.
    entry = struct.Struct(order + ("IBBHQQ" if wide else "IIIBBH"))
    size = dyn.get(DT_SYMENT, entry.size)
    if size < entry.size:
        raise InvalidElf(f"{source.origin}: DT_SYMENT {size} is too small")
    at = layout.offset_of(dyn[DT_SYMTAB], source.origin, "DT_SYMTAB")
    table = source.read(at, count * size, "dynamic symbol table")
    rows = (entry.iter_unpack(table) if size == entry.size
            else (entry.unpack_from(table, i * size) for i in range(count)))
    if wide:
        return ((name, info, other, shndx, value) for name, info, other, shndx, value, _ in rows)
    return ((name, info, other, shndx, value) for name, value, _, info, other, shndx in rows)


# The symbol bindings and types a lookup may bind to, as a set of st_info values
# (elf/dl-lookup.c do_lookup_x: STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE; ALLOWED_STT).
_BINDABLE_INFO = frozenset(bind << 4 | kind for bind in (STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE)
                           for kind in ALLOWED_STT)
_HIDDEN_VISIBILITY = frozenset({STV_HIDDEN, STV_INTERNAL})


def _read_symbols(  # noqa: C901, PLR0912 - one flat loop per symbol, see the docstring
    source: _Source, layout: _Layout, dyn: dict[int, int], strings: bytes,
    version_index: dict[int, str],
) -> DynamicSymbols | None:
    """The references that must bind and the definitions others may bind to (`DynamicSymbols`).

    `strings` is the dynamic string table. None when the symbols cannot be known: no symbol
    table or hash table, or the marker of a fixture's synthesised library
    (`NO_SYMBOLS_MARKER`), whose definitions are unknown, not absent. A definition binds when
    its binding and type allow it, it is not hidden or internal, and it has a value or is TLS
    or absolute (elf/dl-lookup.c `check_match`). This loop runs once per symbol of every
    library read (50,000 for libtorch_cpu.so), so it is written flat.
    """
    if DT_SYMTAB not in dyn:
        return None
    count = _symbol_count(source, layout, dyn)
    if count is None or count > _MAX_SYMBOLS:
        return None
    order = "<" if layout.endian is Endian.LITTLE else ">"
    versym: tuple[int, ...] | None = None
    if DT_VERSYM in dyn:
        vat = layout.offset_of(dyn[DT_VERSYM], source.origin, "DT_VERSYM")
        versym = struct.unpack(f"{order}{count}H", source.read(vat, 2 * count, "DT_VERSYM"))
    encoded = {ndx: name.encode("utf-8", "surrogateescape") for ndx, name in version_index.items()}
    undefined: list[bytes] = []
    digests: list[bytes] = []
    limit = len(strings)
    for i, (name_at, info, other, shndx, value) in enumerate(
            _symbol_rows(source, layout, dyn, count)):
        if not name_at or name_at >= limit:
            continue
        end = strings.find(b"\0", name_at)
        name = strings[name_at:end if end >= 0 else limit]
        ndx = versym[i] if versym is not None else 0
        version = encoded.get(ndx & 0x7FFF) if ndx & 0x7FFF > 1 else None
        if shndx == SHN_UNDEF:
            if name == _MARKER:
                return None
            if info >> 4 == STB_GLOBAL:
                undefined.append(name + b"@" + version if version else name)
            continue
        if (info not in _BINDABLE_INFO or other & 3 in _HIDDEN_VISIBILITY
                or (not value and shndx != SHN_ABS and info & 0xF != STT_TLS)):
            continue
        hidden = ndx & VERSYM_HIDDEN
        if version is None:
            if not hidden:
                digests.append(key_digest(PLAIN + name))
        else:
            digests.append(key_digest(name + b"@" + version))
            if not hidden:
                digests.append(key_digest(PUBLIC + name))
    return DynamicSymbols.from_digests(
        tuple(sorted({u.decode("utf-8", "surrogateescape") for u in undefined})), digests)


def _read_fatbin(source: _Source, layout: _Layout) -> tuple[GpuCode, ...]:
    """Find `.nv_fatbin` through the section headers and list its GPU code, if any."""
    shoff, shnum, shentsize, shstrndx = layout.sections
    if not shoff or not shnum or shstrndx >= shnum:
        return ()
    wide = layout.elf_class is ElfClass.ELF64
    order = "<" if layout.endian is Endian.LITTLE else ">"
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size (the fields we use come first).
    shdr = struct.Struct(order + ("IIQQQQ" if wide else "IIIIII"))
    if shentsize < shdr.size:
        return ()
    table = source.read(shoff, shnum * shentsize, "section headers")
    headers = [shdr.unpack_from(table, i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]
    for name, sh_type, _, _, offset, size in headers:
        # SHT_NOBITS (8) has no bytes in the file.
        if sh_type == 8:
            continue
        # A fixed-length compare: reading every name whole lets a crafted file with thousands
        # of unterminated names cost seconds.
        at = names_offset + name
        if at + len(_FATBIN_NAME) <= source.size and source.read(
                at, len(_FATBIN_NAME), "section name") == _FATBIN_NAME:
            from resolver.elf.fatbin import parse_fatbin_codes  # noqa: PLC0415

            if offset + size > source.size:
                raise InvalidElf(f"{source.origin}: .nv_fatbin lies past the end of the file")

            if source.buffer is not None:
                # Zero-copy views of the mapped section: a walk makes one read per entry.
                section = source.buffer[offset : offset + size]

                def view(at: int, length: int, data: memoryview = section) -> memoryview:
                    return data[at : at + length]

                try:
                    return parse_fatbin_codes(view, size, origin=source.origin)
                finally:
                    section.release()

            def read(at: int, length: int, base: int = offset) -> bytes:
                return source.read(base + at, length, ".nv_fatbin")

            return parse_fatbin_codes(read, size, origin=source.origin)
    return ()


def _gpu_code(source: _Source, layout: _Layout) -> tuple[GpuCode, ...]:
    """GPU code, or none when the section headers or the fatbin cannot be read.

    The loader never reads section headers (`sstrip` removes them and the file still loads),
    so damage there must not turn a loadable library into an invalid one.
    """
    try:
        return _read_fatbin(source, layout)
    except InvalidElf:
        return ()


def read_elf_facts(stream: BinaryIO, *, origin: str, size: int | None = None) -> ElfFacts:
    """Read the facts of the ELF file open as `stream` (seekable, binary).

    `origin` names the file in error messages; `size` saves a seek when the caller knows it.

    Raises:
        InvalidElf: the bytes are not an ELF file we can read (truncated, corrupted, other
            format); the message names `origin` and what is wrong.

    """
    if size is None:
        size = stream.seek(0, 2)
    source = _Source(stream, origin, size)
    try:
        magic = source.read(0, 4, "ELF magic") if size >= 4 else b""
        if magic != ELF_MAGIC:
            shown = magic or f"{size}-byte file"
            raise InvalidElf(f"{origin}: not an ELF file (magic {shown!r})")
        layout = _Layout(source)
        if layout.dynamic is None:
            return ElfFacts(elf_class=layout.elf_class, endian=layout.endian,
                            machine=layout.machine, osabi=layout.osabi, elf_type=layout.type,
                            has_dynamic=False, gpu_code=_gpu_code(source, layout),
                            tls=layout.tls)
        tags = _read_dynamic(source, layout, layout.dynamic)
        dyn = dict(tags)
        if DT_STRTAB not in dyn:
            raise InvalidElf(f"{origin}: dynamic section has no DT_STRTAB")
        strtab = layout.offset_of(dyn[DT_STRTAB], origin, "DT_STRTAB")
        strsz = dyn.get(DT_STRSZ, source.size - strtab)

        def string(index: int, what: str) -> str:
            if index >= strsz:
                raise InvalidElf(f"{origin}: {what} string index {index} past DT_STRSZ {strsz}")
            return source.read_cstring(strtab + index, what)

        version_index: dict[int, str] = {}
        version_defs, version_needs = _read_versions(source, layout, string, dyn, version_index)
        return ElfFacts(
            elf_class=layout.elf_class,
            endian=layout.endian,
            machine=layout.machine,
            osabi=layout.osabi,
            elf_type=layout.type,
            soname=string(dyn[DT_SONAME], "DT_SONAME") if DT_SONAME in dyn else None,
            # Each name once, in order: a repeated DT_NEEDED finds the object its first one
            # loaded (elf/dl-deps.c), and 65,536 copies of one long name are read once.
            needed=tuple(dict.fromkeys(string(value, "DT_NEEDED") for value in dict.fromkeys(
                value for tag, value in tags if tag == DT_NEEDED))),
            rpath=string(dyn[DT_RPATH], "DT_RPATH") if DT_RPATH in dyn else None,
            runpath=string(dyn[DT_RUNPATH], "DT_RUNPATH") if DT_RUNPATH in dyn else None,
            nodeflib=bool(dyn.get(DT_FLAGS_1, 0) & DF_1_NODEFLIB),
            tls=layout.tls,
            static_tls=bool(dyn.get(DT_FLAGS, 0) & DF_STATIC_TLS),
            version_defs=version_defs,
            version_needs=version_needs,
            gpu_code=_gpu_code(source, layout),
            symbols=_read_symbols(
                source, layout, dyn,
                source.read(strtab, min(strsz, source.size - strtab), "dynamic string table"),
                version_index),
        )
    finally:
        source.close()

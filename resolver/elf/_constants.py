"""ELF numbers the reader and the synthesiser share (glibc elf/elf.h), named once."""

from __future__ import annotations

DT_NULL = 0
DT_NEEDED = 1
DT_HASH = 4
DT_STRTAB = 5
DT_SYMTAB = 6
DT_STRSZ = 10
DT_SYMENT = 11
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_FLAGS = 30
DF_STATIC_TLS = 0x10
DT_GNU_HASH = 0x6FFFFEF5
DT_VERSYM = 0x6FFFFFF0
DT_FLAGS_1 = 0x6FFFFFFB
DT_VERDEF = 0x6FFFFFFC
DT_VERDEFNUM = 0x6FFFFFFD
DT_VERNEED = 0x6FFFFFFE
DT_VERNEEDNUM = 0x6FFFFFFF
DF_1_NODEFLIB = 0x800
VER_FLG_BASE = 0x1
VER_FLG_WEAK = 0x2
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
STB_GLOBAL = 1
STB_WEAK = 2
STB_GNU_UNIQUE = 10
STT_TLS = 6
# Symbol types a lookup may bind to (glibc elf/dl-lookup.c ALLOWED_STT): NOTYPE, OBJECT, FUNC,
# COMMON, TLS, GNU_IFUNC.
ALLOWED_STT = frozenset({0, 1, 2, 5, 6, 10})
STV_INTERNAL = 1
STV_HIDDEN = 2
VERSYM_HIDDEN = 0x8000
PT_LOAD = 1
PT_DYNAMIC = 2
PT_TLS = 7
PT_GNU_STACK = 0x6474E551
# A weak undefined symbol the fixture synthesiser writes: the file's symbols are unknown (a
# recorded fixture keeps no symbol tables), so the loader emulation does not bind against it.
NO_SYMBOLS_MARKER = "__jetson_resolve_symbols_not_recorded"

"""Parse glibc's `/etc/ld.so.cache` and look a soname up in it the way `ld.so` does.

`parse_ld_so_cache` turns a cache's bytes into an immutable `LdCache`: the new format
(`glibc-ld.so.cache1.1`, default since glibc 2.32), the old one (`ld.so-1.7.0`), or the old one
with a new one hidden in its string table ("compat", whose new part is what `ld.so` uses).
`find_in_cache` repeats the binary search of glibc's `elf/dl-cache.c` (`search_cache`), with
the flag check of the target's `sysdeps/unix/sysv/linux/*/dl-cache.h` and the hwcaps priorities.

It reads no files (the caller hands in bytes) and knows nothing of the CPU: which glibc-hwcaps
subdirectories count is the caller's `hwcaps`. It does not model the `osversion` check, the x86
ISA-level check of hwcaps entries (listing a subdirectory vouches for it), nor legacy hwcaps
subdirectories but `tls` (`x86_64/`, `haswell/`: gone in glibc 2.37, never on aarch64).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from resolver.errors import InvalidLdCache
from resolver.target.rootfs import PATH_MAX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "MAX_LD_SO_CACHE",
    "CacheFlag",
    "FloatAbi",
    "LdCache",
    "LdCacheEntry",
    "entry_matches",
    "find_in_cache",
    "parse_ld_so_cache",
]


class CacheFlag(enum.IntEnum):
    """Entry flags (sysdeps/generic/ldconfig.h): low byte the kind, high byte the ABI needed."""

    ELF = 0x0001
    ELF_LIBC6 = 0x0003
    TYPE_MASK = 0x00FF
    REQUIRED_MASK = 0xFF00
    X8664_LIB64 = 0x0300
    S390_LIB64 = 0x0400
    POWERPC_LIB64 = 0x0500
    X8664_LIBX32 = 0x0800
    ARM_LIBHF = 0x0900
    AARCH64_LIB64 = 0x0A00
    ARM_LIBSF = 0x0B00
    RISCV_FLOAT_ABI_SOFT = 0x0F00
    RISCV_FLOAT_ABI_DOUBLE = 0x1000


FloatAbi = Literal["hard", "soft"]
# ldconfig writes a few hundred KB; glibc maps any size, but a cache past this is refused.
MAX_LD_SO_CACHE = 64 << 20

# Layout, from sysdeps/generic/dl-cache.h: `struct cache_file` (16 bytes: an 11-byte magic
# padded to 12, `nlibs`) and `struct file_entry` (12); `struct cache_file_new` (48: magic and
# version, nlibs, len_strings, flags byte, 3 unused, extension_offset, 3 unused) and
# `struct file_entry_new` (24: flags, key, value, osversion, hwcap).
_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER, _OLD_ENTRY = 16, 12
_NEW_HEADER, _NEW_ENTRY = 48, 24
_EXTENSION_MAGIC = 0xEAA42174  # cache_extension_magic, (uint32_t) -358342284
_EXTENSION_TAG_HWCAPS = 1  # cache_extension_tag_glibc_hwcaps; tag 0 is the generator string
_HWCAP_EXTENSION = 1 << 62  # DL_CACHE_HWCAP_EXTENSION
_HWCAP_TLS = 1 << 63  # _DL_HWCAP_TLS_MASK in elf/dl-cache.c: the legacy `tls` subdirectory
_ISA_LEVEL_MASK = (1 << 10) - 1  # DL_CACHE_HWCAP_ISA_LEVEL_MASK, bits 32..41 of hwcap


@dataclass(frozen=True, slots=True, kw_only=True)
class LdCacheEntry:
    """One cache entry: `soname` is found at `path` for objects whose ABI fits `flags`.

    `hwcap_subdir` names the glibc-hwcaps subdirectory (`x86-64-v3`) of an extension entry;
    `hwcap` is the raw field (0 in the old format): it tells an extension entry whose index
    leads nowhere from a plain one.
    """

    soname: str
    path: str
    flags: int
    hwcap_subdir: str | None
    hwcap: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LdCache:
    """A parsed cache: its `format` ("new", "old" or "old+new"), entries in file order."""

    format: str
    entries: tuple[LdCacheEntry, ...]
    hwcap_subdirs: tuple[str, ...]


def parse_ld_so_cache(data: bytes, *, origin: str) -> LdCache:
    """Parse the bytes of an `ld.so.cache`; `origin` (its path) starts every error message.

    Strings are decoded as UTF-8 with `surrogateescape`, so odd bytes survive a round trip.
    `ld.so` quietly ignores a cache (or its extension data) it cannot use; this refuses it.

    Raises:
        InvalidLdCache: bad magic, a count or offset that does not fit in the data, a string
            without its NUL, malformed extension data, or a byte order marked invalid.

    """
    return _Parser(bytes(data), origin).parse()


def entry_matches(
    flags: int, elf_class: int, machine: int, *, float_abi: FloatAbi = "hard"
) -> bool:
    """Tell whether a cache entry with `flags` may be used for an object of that class and machine.

    This is `_dl_cache_check_flags` of the loader built for that ABI: `elf_class` is EI_CLASS
    (1, 2), `machine` is e_machine. 32-bit ARM and RISC-V caches also tell float ABIs apart,
    which e_machine does not carry: `float_abi` picks the loader's (hard = armhf, RISC-V lp64d).
    Machines without a rule here (MIPS, SPARC, LoongArch, ...) never match.
    """
    rule = _flag_rule(elf_class, machine, float_abi)
    return rule is not None and flags in rule[0]


def find_in_cache(  # noqa: PLR0913 -- keyword-only: the loader's inputs, each named
    cache: LdCache,
    soname: str,
    *,
    elf_class: int,
    machine: int,
    hwcaps: tuple[str, ...] = (),
    float_abi: FloatAbi = "hard",
) -> str | None:
    """Return the path `ld.so` takes from `cache` for `soname`, or None when it has none.

    `hwcaps` names the glibc-hwcaps subdirectories the target's loader searches, best first (as
    `ld.so --help` lists them "supported, searched"); entries for any other one are skipped, as
    glibc gives them priority 0, and the default () is a loader that uses none. The best-ranked
    hwcaps entry of the soname wins; failing one, the first plain entry whose flags fit.
    """
    rule = _flag_rule(elf_class, machine, float_abi)
    if rule is None:
        return None
    name, entries = soname.encode("utf-8", "surrogateescape"), cache.entries
    # elf/dl-cache.c search_cache: a binary search over entries sorted by descending
    # _dl_cache_libcmp, done the same way so a mis-sorted cache misleads us as it misleads glibc.
    left, right = 0, len(entries) - 1
    while left <= right:
        middle = (left + right) // 2
        order = _libcmp(name, entries[middle].soname)
        if order == 0:
            first, end = middle, middle + 1
            while first > 0 and _libcmp(name, entries[first - 1].soname) == 0:
                first -= 1
            while end <= right and _libcmp(name, entries[end].soname) == 0:
                end += 1
            priorities = {subdir: rank for rank, subdir in reversed(list(enumerate(hwcaps, 1)))}
            return _pick(entries[first:end], rule, priorities, new_layout=cache.format != "old")
        left, right = (middle + 1, right) if order < 0 else (left, middle - 1)
    return None


def _pick(
    run: Sequence[LdCacheEntry],
    rule: tuple[frozenset[int], int],
    priorities: Mapping[str, int],
    *,
    new_layout: bool,
) -> str | None:
    """Choose among the entries of one soname, in file order, as search_cache does."""
    accepted, default_id = rule
    best: str | None = None
    best_priority = 0
    for entry in run:
        if entry.flags not in accepted:
            continue
        named = new_layout and _is_extension(entry.hwcap)
        if new_layout and not named:
            # Extension entries sort first; at the first plain one the best so far wins. (The
            # old layout lacks this: a later fitting entry replaces one that fit but was not
            # of the default ID.)
            if best is not None:
                break
            if entry.hwcap & ~_HWCAP_TLS:
                continue
        if named:
            subdir = entry.hwcap_subdir
            priority = 0 if subdir is None else priorities.get(subdir, 0)
            if priority == 0 or (best is not None and priority >= best_priority):
                continue
            best_priority = priority
        best = entry.path
        if not named and entry.flags == default_id:
            break
    return best


def _flag_rule(
    elf_class: int, machine: int, float_abi: FloatAbi
) -> tuple[frozenset[int], int] | None:
    """Return (flags `_dl_cache_check_flags` accepts, `_DL_CACHE_DEFAULT_ID`) for an ABI."""
    libc6 = CacheFlag.ELF_LIBC6
    if elf_class == 1 and machine in {3, 20, 22}:  # i386, ppc, s390: sysdeps/generic/dl-cache.h
        return frozenset({CacheFlag.ELF, libc6}), libc6
    if machine == 40 and elf_class == 1:
        # sysdeps/unix/sysv/linux/arm/dl-cache.h: unmarked libc6 entries fit either float ABI,
        # and the default ID stays the generic one.
        abi = CacheFlag.ARM_LIBHF if float_abi == "hard" else CacheFlag.ARM_LIBSF
        return frozenset({abi | libc6, libc6}), libc6
    exact = {
        (2, 62): CacheFlag.X8664_LIB64,  # sysdeps/unix/sysv/linux/x86_64/dl-cache.h
        (1, 62): CacheFlag.X8664_LIBX32,  # x86_64/x32/dl-cache.h
        (2, 183): CacheFlag.AARCH64_LIB64,  # aarch64/dl-cache.h
        (2, 21): CacheFlag.POWERPC_LIB64,  # powerpc/powerpc64/dl-cache.h
        (2, 22): CacheFlag.S390_LIB64,  # s390/s390-64/dl-cache.h
    }.get((elf_class, machine))
    if machine == 243 and elf_class in {1, 2}:  # riscv/dl-cache.h: the natural XLEN only
        soft = float_abi == "soft"
        exact = CacheFlag.RISCV_FLOAT_ABI_SOFT if soft else CacheFlag.RISCV_FLOAT_ABI_DOUBLE
    if exact is None:
        return None
    return frozenset({exact | libc6}), exact | libc6


def _is_extension(hwcap: int) -> bool:
    """Return dl_cache_hwcap_extension: only bit 62 set above the index and ISA level."""
    return ((hwcap >> 32) & ~_ISA_LEVEL_MASK) == (_HWCAP_EXTENSION >> 32)


def _libcmp(left: bytes, other: str) -> int:
    """Compare like `_dl_cache_libcmp`: runs of digits by value, other bytes by code.

    glibc compares `char`, signed on x86 and unsigned on aarch64; bytes here are unsigned, as on
    the Jetson. Digit runs wrap at 32 bits as the C `int` does in practice.
    """
    right, i, j = other.encode("utf-8", "surrogateescape"), 0, 0
    while i < len(left):
        a = left[i]
        b = right[j] if j < len(right) else 0
        if 0x30 <= a <= 0x39:
            if not 0x30 <= b <= 0x39:
                return 1
            value_a, i = _digits(left, i)
            value_b, j = _digits(right, j)
            if value_a != value_b:
                return _int32(value_a - value_b)
        elif 0x30 <= b <= 0x39:
            return -1
        elif a != b:
            return a - b
        else:
            i += 1
            j += 1
    return -(right[j] if j < len(right) else 0)


def _digits(text: bytes, start: int) -> tuple[int, int]:
    value, end = 0, start
    while end < len(text) and 0x30 <= text[end] <= 0x39:
        value = (value * 10 + text[end] - 0x30) & 0xFFFFFFFF
        end += 1
    return _int32(value), end


def _int32(value: int) -> int:
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


class _Parser:
    """One parse: the bytes, the origin for messages, and an index of NUL bytes."""

    def __init__(self, data: bytes, origin: str) -> None:
        self.data = data
        self.origin = origin
        self._strings: dict[int, str] = {}
        self._entries: dict[bytes, LdCacheEntry] = {}

    def fail(self, what: str) -> InvalidLdCache:
        return InvalidLdCache(f"{self.origin}: ld.so.cache {what}")

    def parse(self) -> LdCache:
        if (data := self.data).startswith(_NEW_MAGIC):
            entries, subdirs = self.parse_new(0)
            return LdCache(format="new", entries=entries, hwcap_subdirs=subdirs)
        if data.startswith(_OLD_MAGIC):
            return self.parse_old()
        if not data:
            raise self.fail("is empty")
        if _NEW_MAGIC.startswith(data) or _OLD_MAGIC.startswith(data):
            raise self.fail(f"cut short in its magic ({len(data)} bytes)")
        raise self.fail(f"has an unknown magic {data[:20]!r}")

    def header(self, endian: int, count_at: int, entries_at: int, size: int) -> tuple[str, int]:
        """Return the struct byte-order prefix and the entry count, checked against the size.

        `endian` is cache_file_new_flags_endian_* (sysdeps/generic/dl-cache.h); where it is
        unset (old format, glibc < 2.32) the order in which the count fits wins, little first.
        """
        room = max(0, (len(self.data) - entries_at) // size)
        little, big = (struct.unpack_from(f, self.data, count_at)[0] for f in ("<I", ">I"))
        if endian == 1:
            raise self.fail("has its byte order marked invalid")
        order = {2: "<", 3: ">"}.get(endian, ">" if little > room >= big else "<")
        nlibs = int(little if order == "<" else big)
        if nlibs > room:
            raise self.fail(f"cut short at entry {room} of {nlibs} ({len(self.data)} bytes)")
        return order, nlibs

    def parse_old(self) -> LdCache:
        data = self.data
        if len(data) < _OLD_HEADER:
            raise self.fail(f"cut short in its header ({len(data)} bytes)")
        order, nlibs = self.header(0, 12, _OLD_HEADER, _OLD_ENTRY)
        strings = _OLD_HEADER + nlibs * _OLD_ENTRY
        # elf/dl-cache.c: a new-format cache may follow, aligned (ALIGN_CACHE) to 8 bytes.
        new_at = (strings + 7) & ~7
        if len(data) >= new_at + _NEW_HEADER and data.startswith(_NEW_MAGIC, new_at):
            entries, subdirs = self.parse_new(new_at)
            return LdCache(format="old+new", entries=entries, hwcap_subdirs=subdirs)
        found = []
        for index in range(nlibs):
            at = _OLD_HEADER + index * _OLD_ENTRY
            raw = data[at : at + _OLD_ENTRY]
            entry = self._entries.get(raw)
            if entry is None:
                flags, key, value = struct.unpack(order + "iII", raw)
                where = f"entry {index} of {nlibs}"
                entry = self._entries[raw] = LdCacheEntry(
                    soname=self.string(strings + key, f"{where}: soname"),
                    path=self.string(strings + value, f"{where}: path"),
                    flags=flags, hwcap_subdir=None)
            found.append(entry)
        return LdCache(format="old", entries=tuple(found), hwcap_subdirs=())

    def parse_new(self, base: int) -> tuple[tuple[LdCacheEntry, ...], tuple[str, ...]]:
        """Parse a new-format cache at `base`; its string offsets count from `base` too."""
        data = self.data
        if len(data) < base + _NEW_HEADER:
            raise self.fail(f"cut short in its header ({len(data)} bytes)")
        order, nlibs = self.header(data[base + 28] & 3, base + 20, base + _NEW_HEADER, _NEW_ENTRY)
        (extension_at,) = struct.unpack_from(order + "I", data, base + 32)
        subdirs = self.parse_extensions(order, extension_at)
        start = base + _NEW_HEADER
        found = []
        for index in range(nlibs):
            at = start + index * _NEW_ENTRY
            raw = data[at : at + _NEW_ENTRY]
            entry = self._entries.get(raw)  # equal entries share one object
            if entry is None:
                flags, key, value, _osversion, hwcap = struct.unpack(order + "iIIIQ", raw)
                where = f"entry {index} of {nlibs}"
                slot = hwcap & 0xFFFFFFFF
                entry = self._entries[raw] = LdCacheEntry(
                    soname=self.string(base + key, f"{where}: soname"),
                    path=self.string(base + value, f"{where}: path"), flags=flags,
                    hwcap_subdir=subdirs[slot] if _is_extension(hwcap) and slot < len(subdirs)
                    else None, hwcap=hwcap)
            found.append(entry)
        return tuple(found), subdirs

    def parse_extensions(self, order: str, at: int) -> tuple[str, ...]:
        """Return the glibc-hwcaps names, per cache_extension_load in sysdeps/generic/dl-cache.h.

        Name offsets count from the file's start, as `ld.so` reads them. A compat file has them
        relative to its new header, so `ld.so` and `ldconfig -p` read other bytes; so do we.
        """
        data = self.data
        if at == 0:
            return ()
        if at % 4 or at + 8 > len(data):
            raise self.fail(f"has its extension directory at {at}, outside the file or misaligned")
        magic, count = struct.unpack_from(order + "II", data, at)
        if magic != _EXTENSION_MAGIC:
            raise self.fail(f"has a bad extension magic {magic:#x} at {at}")
        if at + 8 + count * 16 > len(data):
            raise self.fail(f"cut short in extension section {(len(data) - at) // 16} of {count}")
        hwcaps: tuple[int, int] | None = None
        for index, (tag, _flags, offset, size) in enumerate(
            struct.iter_unpack(order + "IIII", data[at + 8 : at + 8 + count * 16])
        ):
            if offset + size > len(data):
                raise self.fail(f"cut short in extension section {index} (tag {tag}) of {count}")
            if tag == _EXTENSION_TAG_HWCAPS:
                hwcaps = (offset, size)
        if hwcaps is None or hwcaps[1] == 0 or hwcaps[0] % 4 or hwcaps[1] % 4:
            return ()
        offset, size = hwcaps
        return tuple(
            self.string(name_at, f"glibc-hwcaps name {index}")
            for index, (name_at,) in enumerate(
                struct.iter_unpack(order + "I", data[offset : offset + size])
            )
        )

    def string(self, at: int, what: str) -> str:
        """Return the NUL-terminated string at file offset `at` (at most PATH_MAX bytes).

        Each offset is decoded once, and no scan runs past PATH_MAX: entries pointing into a
        long run without NUL cannot make the parse quadratic.
        """
        known = self._strings.get(at)
        if known is not None:
            return known
        if at >= len(self.data):
            raise self.fail(f"{what} at offset {at} is past the end ({len(self.data)} bytes)")
        end = self.data.find(b"\x00", at, at + PATH_MAX + 1)
        if end < 0 and at + PATH_MAX >= len(self.data):
            raise self.fail(f"{what} at offset {at} runs off the end without a NUL")
        if end < 0:
            raise self.fail(f"{what} at offset {at} has no NUL within {PATH_MAX} bytes")
        text = self._strings[at] = self.data[at:end].decode("utf-8", "surrogateescape")
        return text

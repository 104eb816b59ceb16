"""The GPU code a `.nv_fatbin` section carries, and which of it a given GPU can run.

`iter_fatbin_codes` walks the section through a `read(offset, length)` callback, reading only the
16-byte container headers and the first 48 bytes of each entry header and seeking over every
payload, so a 400 MB section costs a few thousand small reads. It does not decompress, hash or
disassemble anything, does not find the section in the ELF file (that is `resolver.elf.reader`),
and does not read `.nvFatBinSegment` (the host-side wrappers that point into this section).
`find_kernel_for` is the CUDA driver's choice of code for one GPU, as a pure rule.

The layout was checked against real bytes: torch 2.11.0 (aarch64) and 2.14.1 (x86_64)
libraries and fatbins written by NVIDIA's `fatbinary` 13.5, cross-checked with `cuobjdump`.
All little-endian. A container is `u32 magic 0xBA55ED50, u16 version (1), u16 header size (16),
u64 payload size`; containers start 8-byte aligned and the linker may pad between them with
zeros. Its payload is a run of entries, each `u16 kind, u16, u32 header size, u64 payload size`
(payload padded to 8, header sizes seen: 64, 80, 112, 120), `u16 minor, u16 major` of the code
format at 24, `u32 arch` (major * 10 + minor) at 28 and `u64 flags` at 40. Kinds: 1 PTX,
2 cubin; any other kind (`fatbinary` also packs LTO-IR and Tile IR) is skipped, as `GpuCode`
has no kind for it.
Flags: 0x1 64-bit, 0x10 Linux host, 0x8000 compressed payload, 0x100000 arch-specific (`sm_90a`),
0x200000 family-specific (`sm_103f`; `cuobjdump --list-elf` names such a cubin `sm_103`),
0x1000000 an extended header follows the first 64 bytes (every sm_100+ cubin).

`GpuCode` has no family-specific field, so an `f` code is reported as the plain code of its
architecture. For a cubin that is exact: `sm_100f` runs on 10.0 and 10.3, as `sm_100` does. For
PTX it over-reports: `compute_110f` can be JIT-compiled only within major 11, where plain
`compute_110` could also go to 12.x. No torch wheel checked carries PTX at all.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING

from resolver.elf.facts import GpuCode, GpuCodeKind
from resolver.errors import InvalidElf

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = ["find_kernel_for", "iter_fatbin_codes", "parse_fatbin_codes"]

_MAGIC = 0xBA55ED50
_CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, payload size
_ENTRY = struct.Struct("<HHIQ12xI8xQ")  # kind, -, header size, payload size, arch@28, flags@40
_MIN_ENTRY_HEADER = 64  # the smallest header NVIDIA's fatbinary writes
_KINDS = {1: GpuCodeKind.PTX, 2: GpuCodeKind.SASS}
_FLAG_ARCH_SPECIFIC = 0x100000  # sm_XXa
_ZERO_CHUNK = 256  # first read when skipping padding; real gaps are below the section alignment
_ZERO_CHUNK_MAX = 1 << 20


@functools.lru_cache(maxsize=256)
def _code(kind: int, arch: int, arch_specific: bool) -> GpuCode:
    # Thousands of entries name a dozen codes: build each value once (GpuCode is immutable),
    # keyed by plain ints, whose hashing is cheap (an Enum's is not).
    return GpuCode(kind=_KINDS[kind], arch=arch, arch_specific=arch_specific)


def _read_exact(
    read: Callable[[int, int], bytes | memoryview], offset: int, length: int, origin: str
) -> bytes | memoryview:
    data = read(offset, length)[:length]
    if len(data) != length:
        raise InvalidElf(
            f"{origin}: .nv_fatbin cut short at offset {offset:#x}: "
            f"wanted {length} bytes, got {len(data)}"
        )
    return data


def _skip_zeros(
    read: Callable[[int, int], bytes | memoryview], size: int, pos: int, origin: str
) -> int:
    """Return the first non-zero offset at or after `pos` (or `size`); it must be 8-aligned."""
    chunk = _ZERO_CHUNK
    while pos < size:
        want = min(chunk, size - pos)
        data = bytes(_read_exact(read, pos, want, origin))
        zeros = len(data) - len(data.lstrip(b"\0"))
        if zeros < want:
            pos += zeros
            if pos % 8:
                raise InvalidElf(
                    f"{origin}: .nv_fatbin offset {pos:#x}: stray byte {data[zeros]:#04x} "
                    "where a container or zero padding should be"
                )
            return pos
        pos += want
        chunk = min(chunk * 4, _ZERO_CHUNK_MAX)
    return size


def _iter_entries(
    read: Callable[[int, int], bytes | memoryview], pos: int, end: int, origin: str
) -> Iterator[GpuCode]:
    while pos < end:
        if end - pos < _MIN_ENTRY_HEADER:
            raise InvalidElf(
                f"{origin}: .nv_fatbin entry at offset {pos:#x}: only {end - pos} bytes left "
                "in its container, too few for an entry header"
            )
        kind, _, header_size, payload_size, arch, flags = _ENTRY.unpack(
            _read_exact(read, pos, _ENTRY.size, origin)
        )
        if header_size < _MIN_ENTRY_HEADER:
            raise InvalidElf(
                f"{origin}: .nv_fatbin entry at offset {pos:#x}: header size {header_size} "
                f"is below {_MIN_ENTRY_HEADER}"
            )
        following = pos + header_size + payload_size
        if following > end:
            raise InvalidElf(
                f"{origin}: .nv_fatbin entry at offset {pos:#x}: header {header_size} + "
                f"payload {payload_size} bytes run past its container's end {end:#x}"
            )
        if kind in _KINDS:
            if arch == 0:
                raise InvalidElf(
                    f"{origin}: .nv_fatbin entry at offset {pos:#x}: kind {kind} names no "
                    "architecture"
                )
            yield _code(kind, arch, bool(flags & _FLAG_ARCH_SPECIFIC))
        pos = following


def iter_fatbin_codes(
    read: Callable[[int, int], bytes | memoryview], size: int, *, origin: str
) -> Iterator[GpuCode]:
    """Yield the code of every PTX and cubin entry of a `.nv_fatbin` section, in file order.

    `read(offset, length)` returns the section's bytes from `offset` (relative to the section
    start); it may return fewer at the end, never more is needed. Only headers are read.
    Duplicates are yielded as often as they occur (one per container that carries them).

    Raises:
        InvalidElf: the section holds something other than zero padding where a container must
            start, a header of an impossible size, or sizes that run past the section or the
            container; the message starts with `origin` and names the offset.

    """
    pos = 0
    while pos < size:
        if pos % 8 == 0:
            head = read(pos, min(_CONTAINER.size, size - pos))[: _CONTAINER.size]
            if any(head[:4]):  # a magic, or garbage; zeros are padding
                if len(head) < _CONTAINER.size:
                    raise InvalidElf(
                        f"{origin}: .nv_fatbin container header at offset {pos:#x} cut short "
                        f"({len(head)} of {_CONTAINER.size} bytes)"
                    )
                magic, version, header_size, payload_size = _CONTAINER.unpack(head)
                if magic != _MAGIC:
                    raise InvalidElf(
                        f"{origin}: .nv_fatbin offset {pos:#x}: magic {magic:#010x}, "
                        f"expected {_MAGIC:#010x}"
                    )
                if version != 1 or header_size < _CONTAINER.size:
                    raise InvalidElf(
                        f"{origin}: .nv_fatbin container at offset {pos:#x}: version {version} "
                        f"with header size {header_size}, expected version 1 and at least 16"
                    )
                end = pos + header_size + payload_size
                if end > size:
                    raise InvalidElf(
                        f"{origin}: .nv_fatbin container at offset {pos:#x}: payload of "
                        f"{payload_size} bytes runs past the section end {size:#x}"
                    )
                yield from _iter_entries(read, pos + header_size, end, origin)
                pos = end
                continue
        pos = _skip_zeros(read, size, pos, origin)


def parse_fatbin_codes(
    read: Callable[[int, int], bytes | memoryview], size: int, *, origin: str
) -> tuple[GpuCode, ...]:
    """Return the distinct GPU codes of a `.nv_fatbin` section, sorted by `GpuCode.sort_key`.

    Raises:
        InvalidElf: as `iter_fatbin_codes`.

    """
    # Codes are interned by `_code`, so identity tells duplicates apart without hashing them.
    codes = {id(code): code for code in iter_fatbin_codes(read, size, origin=origin)}
    return tuple(sorted(codes.values(), key=lambda code: code.sort_key))


def _runs_on(code: GpuCode, gpu_arch: int) -> bool:
    if code.arch_specific:
        return code.arch == gpu_arch
    if code.kind is GpuCodeKind.PTX:
        return code.arch <= gpu_arch
    return code.arch // 10 == gpu_arch // 10 and code.arch <= gpu_arch


def find_kernel_for(codes: Iterable[GpuCode], gpu_arch: int) -> GpuCode | None:
    """Return the code the CUDA driver would load on GPU `sm_XY` (`gpu_arch` = 10*X + Y).

    The rule, from NVIDIA's CUDA C++ Programming Guide ("Binary Compatibility", "PTX
    Compatibility", and the feature-set compiler targets, `a` and `f`:
    https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#binary-compatibility ;
    https://developer.nvidia.com/blog/nvidia-blackwell-and-nvidia-cuda-12-9-introduce-family-specific-architecture-features/):
    a cubin for X.y runs on X.z for every z >= y and never on another major; an arch-specific
    cubin (`sm_90a`) runs only on exactly that GPU; PTX for compute_XY is JIT-compiled by the
    driver for any GPU of XY or above, any major, except arch-specific PTX (`compute_90a`),
    again only on exactly XY. Machine code is preferred over PTX (no JIT cost), then the
    highest architecture; between `sm_XY` and `sm_XYa` the plain one, which covers more.

    Architectures are compared as numbers, with no aliasing: CUDA 13 renamed Thor's sm_101
    to sm_110, so an `sm_101` cubin from CUDA 12.8-12.9 does not count for `gpu_arch=110`.
    """
    best: GpuCode | None = None
    for code in codes:
        if _runs_on(code, gpu_arch) and (best is None or _preference(code) > _preference(best)):
            best = code
    return best


def _preference(code: GpuCode) -> tuple[bool, int, bool]:
    return (code.kind is GpuCodeKind.SASS, code.arch, not code.arch_specific)

"""What a dlopen does after mapping: bind undefined symbols (RTLD_NOW) and place static TLS.

Symbols: each new object's references must be defined in its lookup scope, the global scope
(the main program, its dependencies, `LD_PRELOAD`, libraries opened RTLD_GLOBAL) followed by
the local scope of the dlopen that loaded it (its root and that root's dependencies,
breadth-first): elf/dl-open.c `dl_open_worker`, elf/dl-lookup.c `_dl_lookup_symbol_x` and
`check_match` (version matching, in `resolver.elf.facts.reference_binds`). A scope holding an
object whose symbols are unknown (a fixture's synthesised library) is not judged.

Static TLS (elf/dl-tls.c `_dl_determine_tlsoffset`, elf/dl-reloc.c
`_dl_try_allocate_static_tls`): what the process loads at start is laid out first, and the
static TLS block is that plus the surplus glibc reserves, 1664 bytes by default
(`tls_static_surplus` with rtld.nns 4 and rtld.optional_static_tls 512, padded by LEGACY_TLS to
the historic 1664), rounded up to the TCB's alignment (64: nptl/descr.h TCB_ALIGNMENT). An
object opened later whose TLS uses the initial-exec model (DF_STATIC_TLS) must fit into what is
left, or the dlopen fails with "cannot allocate memory in static TLS block". The layout is
TLS_TCB_AT_TP on x86 (blocks below the thread pointer) and TLS_DTV_AT_TP elsewhere (blocks after
a 16-byte TCB). Not modelled: the optional part TLSDESC accesses take (at most 512 bytes, which
makes a near miss look like a fit), the gaps glibc reuses between startup blocks, and tunables.

Pure functions over the loaded objects; `resolver.loader.walk` calls them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.elf.facts import reference_binds

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from resolver.loader.walk import LoadedObject

__all__ = [
    "STATIC_TLS_SURPLUS",
    "StaticTls",
    "SymbolProblem",
    "TlsProblem",
    "allocate_static_tls",
    "bind_symbols",
    "startup_static_tls",
]

# glibc's static TLS surplus with its default tunables (elf/dl-tls.c
# `_dl_tls_static_surplus_init`: tls_static_surplus (4, 512) + LEGACY_TLS), in bytes.
STATIC_TLS_SURPLUS = 1664
_TCB_ALIGNMENT = 64  # nptl/descr.h: struct pthread's alignment, TLS_TCB_ALIGN
_DTV_AT_TP_TCB_SIZE = 16  # sysdeps/aarch64/nptl/tls.h: sizeof (tcbhead_t), two pointers


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticTls:
    """The static TLS block after start: its end, what is used, and the layout."""

    size: int  # bytes the block may grow to (TLS_TCB_AT_TP: without the TCB)
    used: int  # bytes used so far
    at_start: int  # bytes the startup modules used
    tcb_at_tp: bool  # x86's layout; else TLS_DTV_AT_TP

    @property
    def free(self) -> int:
        """Bytes left."""
        return self.size - self.used


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def startup_static_tls(blocks: Iterable[tuple[int, int]], *, tcb_at_tp: bool) -> StaticTls:
    """Lay out the (size, align) TLS blocks of the modules loaded at start, in load order."""
    offset = 0 if tcb_at_tp else _DTV_AT_TP_TCB_SIZE
    max_align = _TCB_ALIGNMENT
    for size, align in blocks:
        max_align = max(max_align, align)
        offset = (_round_up(offset + size, align) if tcb_at_tp
                  else _round_up(offset, align) + size)
    size = _round_up(offset + STATIC_TLS_SURPLUS, max_align if tcb_at_tp else _TCB_ALIGNMENT)
    return StaticTls(size=size, used=offset, at_start=offset, tcb_at_tp=tcb_at_tp)


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolProblem:
    """Undefined symbols of one object that nothing in its lookup scope defines."""

    requester: int
    symbols: tuple[str, ...]  # `name` or `name@VERSION`, sorted
    phase: str
    # Loaded objects outside the scope that define some of them (an RTLD_LOCAL neighbour).
    defined_elsewhere: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsProblem:
    """An initial-exec TLS block that does not fit into what is left of the static surplus."""

    requester: int  # the object whose TLS does not fit
    needed: int  # its PT_TLS size, bytes
    available: int  # what was left of the surplus, bytes
    phase: str


def _python_api(reference: str) -> bool:
    """True for the interpreter's C API (`Py*`, `_Py*`).

    Extension modules leave it undefined for the interpreter that imports them (PEP 3149;
    PEP 384's limited API).
    """
    return reference.startswith(("Py", "_Py"))


def _references(obj: LoadedObject) -> tuple[str, ...]:
    """The object's references that must bind (none when its symbols are unknown)."""
    return obj.facts.symbols.undefined if obj.facts.symbols is not None else ()


def bind_symbols(  # noqa: PLR0913 - the objects, what is new, the scope, then options
    objects: Sequence[LoadedObject], new: Iterable[int], scope: Sequence[int],
    loaded: Iterable[LoadedObject], phase: str, *, interpreter_known: bool,
) -> tuple[list[SymbolProblem], str | None]:
    """Bind the references of the objects `new` (indices into `objects`) against `scope`.

    `loaded` are the objects loaded now, searched for definitions outside the scope. Without
    an interpreter modelled, its C API is taken as defined. Returns the problems, and why
    nothing was judged (an object in scope has no symbol table), or None.
    """
    new = list(new)
    unknown = next((objects[i] for i in scope if objects[i].facts.symbols is None), None)
    if unknown is not None:
        judged = any(_references(objects[i]) for i in new)
        return [], f"{unknown.path} has no symbol table to read" if judged else None
    in_scope = set(scope)
    outside = [o for o in loaded if o.index not in in_scope and o.facts.symbols is not None]
    news = [(index, symbols) for index, symbols in ((i, objects[i].facts.symbols) for i in new)
            if symbols is not None and symbols.undefined]
    # Which of the wanted keys the scope defines, one set intersection per object in scope
    # (each costs the size of the smaller set, the wanted keys): a dlopen adds a few thousand
    # references to a scope of a few hundred thousand definitions.
    wanted = {key for _, symbols in news for _, first, second in symbols.wanted
              for key in (first, second)}
    found: set[int] = set()
    for index in scope:
        symbols = objects[index].facts.symbols
        if symbols is not None and wanted:
            found |= wanted & symbols.keys
    problems = []
    for index, symbols in news:
        unbound = tuple(ref for ref, first, second in symbols.wanted
                        if first not in found and second not in found
                        and (interpreter_known or not _python_api(ref)))
        if not unbound:
            continue
        elsewhere = tuple(o.index for o in outside if o.facts.symbols is not None
                          and any(reference_binds(ref, o.facts.symbols.keys) for ref in unbound))
        problems.append(SymbolProblem(requester=index, symbols=unbound, phase=phase,
                                      defined_elsewhere=elsewhere))
    return problems, None


def allocate_static_tls(objects: Sequence[LoadedObject], new: Iterable[int], tls: StaticTls,
                        phase: str) -> tuple[StaticTls, list[TlsProblem]]:
    """Place each new initial-exec TLS block in what is left, in load order.

    Returns the block's new state and the TLS blocks that did not fit.
    """
    used = tls.used
    problems = []
    for index in new:
        facts = objects[index].facts
        if facts.tls is None or not facts.static_tls:
            continue
        size, align = facts.tls
        if tls.tcb_at_tp:
            free = tls.size - used
            end = None if free < size else used + free - (free - size) // align * align
        else:
            end = _round_up(used, align) + size
        if end is None or end > tls.size:
            problems.append(TlsProblem(requester=index, needed=size,
                                       available=tls.size - used, phase=phase))
            continue
        used = end
    return dataclasses.replace(tls, used=used), problems

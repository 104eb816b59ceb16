"""What a dlopen does after mapping: bind undefined symbols (RTLD_NOW) and place static TLS.

Symbols: each new object's references must be defined in its lookup scope, the global scope
(the main program, its dependencies, `LD_PRELOAD`, libraries opened RTLD_GLOBAL) followed by
the local scope of the dlopen that loaded it (its root and that root's dependencies,
breadth-first): elf/dl-open.c `dl_open_worker`, elf/dl-lookup.c `_dl_lookup_symbol_x` and
`check_match` (version matching, in `resolver.elf.facts.reference_binds`). A scope holding an
object whose symbols are unknown (a fixture's synthesised library) is not judged.

Static TLS (elf/dl-tls.c, elf/dl-reloc.c `_dl_try_allocate_static_tls`): what the process loads
at start gets its static TLS then; an object opened later whose TLS uses the initial-exec model
(DF_STATIC_TLS) must fit into what is left of the surplus glibc reserves at start, 1664 bytes
by default (`tls_static_surplus` with rtld.nns 4 and rtld.optional_static_tls 512, padded by
LEGACY_TLS to the historic 1664), or the dlopen fails with "cannot allocate memory in static TLS
block". Not modelled: the optional part TLSDESC accesses take (at most 512 bytes, which makes a
near miss look like a fit), and tunables.

Pure functions over the loaded objects; `resolver.loader.walk` calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.elf.facts import reference_binds

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from resolver.loader.walk import LoadedObject

__all__ = [
    "STATIC_TLS_SURPLUS",
    "SymbolProblem",
    "TlsProblem",
    "allocate_static_tls",
    "bind_symbols",
]

# glibc's static TLS surplus with its default tunables (elf/dl-tls.c
# `_dl_tls_static_surplus_init`: tls_static_surplus (4, 512) + LEGACY_TLS), in bytes.
STATIC_TLS_SURPLUS = 1664


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


def allocate_static_tls(objects: Sequence[LoadedObject], new: Iterable[int], used: int,
                        phase: str) -> tuple[int, list[TlsProblem]]:
    """Place each new initial-exec TLS block in the surplus, in load order.

    `used` is the bytes of the surplus taken so far; returns the new total and the blocks that
    did not fit (TLS_DTV_AT_TP's layout: each block aligned after the last).
    """
    problems = []
    for index in new:
        facts = objects[index].facts
        if facts.tls is None or not facts.static_tls:
            continue
        size, align = facts.tls
        end = -(-used // align) * align + size
        if end > STATIC_TLS_SURPLUS:
            problems.append(TlsProblem(requester=index, needed=size,
                                       available=STATIC_TLS_SURPLUS - used, phase=phase))
            continue
        used = end
    return used, problems

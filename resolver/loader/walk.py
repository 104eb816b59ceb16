"""The loader's walk over a root: which file each DT_NEEDED name becomes, or why none does.

A `Namespace` plays glibc's link-map list for one process. `dlopen` loads an object and its
dependencies breadth-first (elf/dl-deps.c `_dl_map_object_deps`), each name searched in the
order of `resolver.loader.search` with the requester as the loader, and an already loaded
object reused when its name, the name it was requested under or its SONAME matches
(elf/dl-misc.c `_dl_name_match_p`, elf/dl-load.c) or it is the same file. Candidates of the
wrong ELF class or machine are skipped (`open_verify`); a candidate that is not an ELF file at all
stops the search with an error, as it does in glibc. Symbol-version requirements are checked
against what got loaded (elf/dl-version.c): a missing non-weak version is an error, a provider
without version definitions only a warning.

The process is modelled too: the interpreter is the main program (`start_process`), loaded
with its DT_NEEDED and `LD_PRELOAD` into the global scope, and its DT_RPATH ends every search
chain that has no DT_RUNPATH (elf/dl-load.c `_dl_map_object`: "try the DT_RPATH of the
executable itself"). Each dlopen that loads everything then binds the undefined symbols of what
it added, as RTLD_NOW does (Python imports extension modules and ctypes opens libraries with
RTLD_NOW), and places their static TLS: `resolver.loader.binding`.

Unlike the real loader, the walk does not stop at the first failure: like `ld.so` in trace mode
it records every failure and goes on, so one diagnose shows them all. A dlopen that fails is
rolled back, as `dlopen` unloads what it loaded, so later loads see the namespace torch sees.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from resolver.elf.cache import read_facts
from resolver.elf.facts import Endian, Machine
from resolver.errors import InvalidElf, RootFsError
from resolver.loader.binding import (
    StaticTls,
    SymbolProblem,
    TlsProblem,
    allocate_static_tls,
    bind_symbols,
    startup_static_tls,
)
from resolver.loader.search import SearchDir, Via, expand_dst, split_search_path
from resolver.target.rootfs import NAME_MAX

if TYPE_CHECKING:
    from collections.abc import Callable

    from resolver.elf.cache import FactsCache
    from resolver.elf.facts import ElfFacts
    from resolver.target.platform import Platform
    from resolver.target.rootfs import RootFS

__all__ = [
    "INTERPRETER",
    "PRELOAD",
    "PRELOADED",
    "Candidate",
    "LoadedObject",
    "Namespace",
    "Outcome",
    "Request",
    "VersionProblem",
]

INTERPRETER = "interpreter"  # the phase of the main program and what it loads at start
PRELOAD = "LD_PRELOAD"  # the phase of an LD_PRELOAD entry itself
PRELOADED = "already loaded"  # libraries the process opened before torch (--preloaded)


class Outcome(enum.Enum):
    """What happened to one candidate path."""

    FOUND = "found"
    ABSENT = "absent"
    WRONG_CLASS = "wrong ELF class"
    WRONG_MACHINE = "wrong machine"
    NOT_ELF = "not an ELF file"
    BROKEN = "broken symlink"


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One path the loader tried, and what it found there."""

    via: Via
    path: str
    outcome: Outcome
    owner: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedObject:
    """One object in the namespace: where it was found and what it says."""

    index: int
    path: str  # the name it was found under (glibc's l_name), in the root's namespace
    real: str  # the same with every symlink resolved
    facts: ElfFacts
    loader: int | None  # the object whose DT_NEEDED brought it in (l_loader)
    names: tuple[str, ...]  # the names it was requested under (l_libname)
    phase: str  # the dlopen that first loaded it ("import", or a feature's name)
    found: Candidate | None = None  # the search rule that found it (None: never searched)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One DT_NEEDED (or dlopen) name of one object, and how it was satisfied."""

    requester: int | None  # None for a dlopen from outside (python, torch/__init__.py)
    name: str
    target: int | None  # the object it resolved to, None when it did not
    reused: bool  # satisfied by an object already loaded
    candidates: tuple[Candidate, ...]
    error: str | None = None  # a hard error that stopped the search (not an ELF file)
    phase: str = "import"


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionProblem:
    """A `.gnu.version_r` requirement the chosen provider does not define."""

    requester: int
    provider: int
    file: str
    version: str
    weak: bool
    phase: str
    fatal: bool  # False when the provider has no version definitions at all (a warning)


class _Stop:
    """Marks a candidate whose failure abandons the rest of its search list."""


_STOP = _Stop()


@dataclass(slots=True)
class _State:
    objects: list[LoadedObject] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    versions: list[VersionProblem] = field(default_factory=list)
    symbols: list[SymbolProblem] = field(default_factory=list)
    tls: list[TlsProblem] = field(default_factory=list)
    static_tls: StaticTls | None = None  # after start; None: not modelled (no interpreter)
    unloaded: set[int] = field(default_factory=set)  # rolled back by a failed dlopen
    deps: dict[int, list[int]] = field(default_factory=dict)  # resolved DT_NEEDED, in order
    global_scope: list[int] = field(default_factory=list)  # main, preloads, RTLD_GLOBAL groups
    unjudged: list[tuple[str, str]] = field(default_factory=list)  # (phase, why) not bound


class Namespace:
    """The set of objects loaded into one process, grown by successive `dlopen` calls."""

    def __init__(
        self,
        rootfs: RootFS,
        platform: Platform,
        cache: FactsCache,
        *,
        ld_library_path: str = "",
        find_in_cache: Callable[[str], str | None] | None = None,
    ) -> None:
        self.rootfs = rootfs
        self.platform = platform
        self.facts_cache = cache
        self.find_in_cache = find_in_cache
        self._ld_library_path = split_search_path(
            ld_library_path, via=Via.LD_LIBRARY_PATH, owner=None, origin=None,
            lib=platform.lib_token, platform=platform.platform_token, separators=":;",
        ) if ld_library_path else ()
        self.state = _State()
        self.main: LoadedObject | None = None

    @property
    def objects(self) -> tuple[LoadedObject, ...]:
        """Objects loaded so far and still loaded, in load order."""
        return tuple(o for o in self.state.objects if o.index not in self.state.unloaded)

    @property
    def all_objects(self) -> tuple[LoadedObject, ...]:
        """Every object ever loaded, rolled-back ones included: what request indices name."""
        return tuple(self.state.objects)

    @property
    def requests(self) -> tuple[Request, ...]:
        """Every name looked up so far, failed dlopens included."""
        return tuple(self.state.requests)

    @property
    def version_problems(self) -> tuple[VersionProblem, ...]:
        """Every version requirement that failed so far."""
        return tuple(self.state.versions)

    @property
    def symbol_problems(self) -> tuple[SymbolProblem, ...]:
        """Every object with undefined symbols found so far."""
        return tuple(self.state.symbols)

    @property
    def tls_problems(self) -> tuple[TlsProblem, ...]:
        """Every initial-exec TLS block that did not fit so far."""
        return tuple(self.state.tls)

    @property
    def static_tls(self) -> StaticTls | None:
        """The static TLS block as it stands; None when not modelled (no interpreter)."""
        return self.state.static_tls

    @property
    def unjudged(self) -> tuple[tuple[str, str], ...]:
        """(phase, why) of each dlopen whose symbols could not be bound."""
        return tuple(self.state.unjudged)

    def find_loaded(self, name: str) -> LoadedObject | None:
        """The loaded object a name refers to, as `_dl_name_match_p` plus the SONAME rule."""
        for obj in self.state.objects:
            if obj.index in self.state.unloaded:
                continue
            if name == obj.path or name in obj.names or name == obj.facts.soname:
                return obj
        return None

    def _search_dirs(self, requester: LoadedObject | None) -> list[SearchDir]:
        platform = self.platform
        dirs: list[SearchDir] = []

        def path_of(obj: LoadedObject, text: str, via: Via) -> tuple[SearchDir, ...]:
            return split_search_path(
                text, via=via, owner=obj.path, origin=posixpath.dirname(obj.path),
                lib=platform.lib_token, platform=platform.platform_token,
            )

        if requester is None or requester.facts.runpath is None:
            chain = requester
            did_main = False
            while chain is not None:
                # An object with DT_RUNPATH has no DT_RPATH (elf/get-dynamic-info.h).
                if chain.facts.rpath is not None and chain.facts.runpath is None:
                    dirs.extend(path_of(chain, chain.facts.rpath, Via.RPATH))
                    did_main |= chain is self.main
                chain = None if chain.loader is None else self.state.objects[chain.loader]
            main = self.main
            if (main is not None and not did_main and main.facts.rpath is not None
                    and main.facts.runpath is None):
                dirs.extend(path_of(main, main.facts.rpath, Via.RPATH))
        dirs.extend(self._ld_library_path)
        if requester is not None and requester.facts.runpath is not None:
            dirs.extend(path_of(requester, requester.facts.runpath, Via.RUNPATH))
        return dirs

    def _try(self, path: str, via: Via, owner: str | None,  # noqa: PLR0911 - one per way
             wanted: ElfFacts | None, tried: list[Candidate],  # ld.so's open can end
             ) -> tuple[str, str, ElfFacts] | str | _Stop | None:
        """Open one candidate: (path, real, facts), a fatal error, `_STOP` or None to go on."""
        directory, name = posixpath.split(path)
        found = self.rootfs.find_file(directory or "/", name)
        if found is None:
            tried.append(Candidate(via=via, path=path, outcome=Outcome.ABSENT, owner=owner))
            return None
        if found.real is not None and found.problem is not None:
            # open() succeeds on a directory; reading its ELF header then fails, and glibc
            # gives up on the name ("cannot read file data: Is a directory").
            tried.append(Candidate(via=via, path=path, outcome=Outcome.NOT_ELF, owner=owner,
                                   detail=found.problem))
            return f"cannot read file data ({found.problem})"
        if not found.ok or found.real is None:
            tried.append(Candidate(via=via, path=path, outcome=Outcome.BROKEN, owner=owner,
                                   detail=found.problem))
            # A dangling link is ENOENT and the search goes on; any other failure to open a
            # name in an existing directory (ELOOP) abandons the rest of that search list
            # (elf/dl-load.c open_path: only ENOENT and EACCES let it continue).
            return _STOP if found.problem and "loop" in found.problem else None
        try:
            facts = read_facts(self.rootfs, found.real, self.facts_cache)
        except RootFsError as err:
            # open() failed (EACCES, EIO): the loader goes on to the next directory
            # (elf/dl-load.c open_path).
            reason = str(err).removeprefix(f"{self.rootfs.host_label(found.real)}: ")
            tried.append(Candidate(via=via, path=path, outcome=Outcome.BROKEN, owner=owner,
                                   detail=reason))
            return None
        except InvalidElf as err:
            reason = str(err).removeprefix(f"{self.rootfs.host_label(found.real)}: ")
            tried.append(Candidate(via=via, path=path, outcome=Outcome.NOT_ELF, owner=owner,
                                   detail=reason))
            return f"invalid ELF header ({reason})"
        outcome, detail = self._fit(facts, wanted)
        tried.append(Candidate(via=via, path=path, outcome=outcome, owner=owner, detail=detail))
        if outcome is Outcome.NOT_ELF:
            return detail or "invalid ELF header"  # fatal for the name, as ld.so gives up
        return (path, found.real, facts) if outcome is Outcome.FOUND else None

    def _fit(self, facts: ElfFacts, wanted: ElfFacts | None) -> tuple[Outcome, str | None]:
        """`open_verify`'s check: FOUND, or why a candidate is skipped or (NOT_ELF) fatal.

        Another class or machine is skipped; another byte order is fatal.
        """
        machine = wanted.machine if wanted else self.platform.machine
        elf_class = wanted.elf_class if wanted else self.platform.elf_class
        if facts.elf_class != elf_class:
            return Outcome.WRONG_CLASS, f"ELF{32 * int(facts.elf_class)}"
        endian = wanted.endian if wanted else self.platform.endian
        if facts.endian != endian:
            # After the class check, before the machine's, and fatal: elf/dl-load.c
            # open_verify says "ELF file data encoding not little-endian" and gives up.
            order = "little" if endian is Endian.LITTLE else "big"
            return Outcome.NOT_ELF, f"ELF file data encoding not {order}-endian"
        if facts.machine != machine:
            return Outcome.WRONG_MACHINE, facts.machine_name
        return Outcome.FOUND, None

    def _locate(self, name: str, requester: LoadedObject | None
                ) -> tuple[tuple[str, str, ElfFacts] | None, list[Candidate], str | None]:
        tried: list[Candidate] = []
        wanted = requester.facts if requester else None
        result: tuple[str, str, ElfFacts] | str | None
        if len(posixpath.basename(name).encode("utf-8", "surrogateescape")) > NAME_MAX:
            # Every open() of it fails with ENAMETOOLONG: no directory need be tried (and a
            # library naming 65,536 such files does not cost 65,536 search lists).
            tried.append(Candidate(via=Via.PATH if "/" in name else Via.DEFAULT, path=name,
                                   outcome=Outcome.ABSENT, detail="file name too long"))
            return None, tried, None
        if "/" in name:
            result = self._open_path(name, requester, wanted, tried)
        else:
            result = self._search_path(name, requester, wanted, tried)
            nodeflib = requester is not None and requester.facts.nodeflib
            if result is None:
                result = self._search_system(name, wanted, tried, nodeflib=nodeflib)
        if isinstance(result, str):
            return None, tried, result
        return result, tried, None

    def _search_path(self, name: str, requester: LoadedObject | None, wanted: ElfFacts | None,
                     tried: list[Candidate]) -> tuple[str, str, ElfFacts] | str | None:
        """DT_RPATH, LD_LIBRARY_PATH and DT_RUNPATH: the found file, a fatal error or None."""
        abandoned: set[tuple[Via, str | None]] = set()
        for entry in self._search_dirs(requester):
            if (entry.via, entry.owner) in abandoned:
                continue
            directory = entry.directory
            if not directory.startswith("/"):
                # A relative directory is relative to the process's working directory, which
                # the root does not record: it is tried and reported, but never matches.
                tried.append(Candidate(via=entry.via, path=posixpath.join(directory, name),
                                       outcome=Outcome.ABSENT, owner=entry.owner,
                                       detail="relative to the working directory"))
                continue
            result = self._try(posixpath.join(directory, name), entry.via, entry.owner, wanted,
                               tried)
            if isinstance(result, _Stop):
                abandoned.add((entry.via, entry.owner))
            elif result is not None:
                return result
        return None

    def _open_path(self, name: str, requester: LoadedObject | None, wanted: ElfFacts | None,
                   tried: list[Candidate]) -> tuple[str, str, ElfFacts] | str | None:
        """A name with a slash is opened as it is, after `$ORIGIN`-style expansion."""
        path: str | None = name
        if "$" in name and requester is not None:
            path = expand_dst(name, origin=posixpath.dirname(requester.path),
                              lib=self.platform.lib_token, platform=self.platform.platform_token)
        if path is None or not path.startswith("/"):
            # A relative path is relative to the process's working directory, which no root
            # records: reported as tried, never found.
            tried.append(Candidate(via=Via.PATH, path=path or name, outcome=Outcome.ABSENT,
                                   detail="relative to the working directory"
                                   if path else "cannot expand its $ORIGIN"))
            return None
        opened = self._try(path, Via.PATH, None, wanted, tried)
        return None if isinstance(opened, _Stop) else opened

    def _search_system(self, name: str, wanted: ElfFacts | None, tried: list[Candidate], *,
                       nodeflib: bool) -> tuple[str, str, ElfFacts] | str | None:
        """ld.so.cache, then the default directories: the found file, a fatal error or None.

        Under DF_1_NODEFLIB glibc still consults the cache but refuses an entry that lies in a
        default directory, and skips the default directories (elf/dl-load.c `_dl_map_object`).
        """
        cached = self.find_in_cache(name) if self.find_in_cache else None
        if cached is not None and nodeflib and any(
                cached.startswith(d.rstrip("/") + "/") for d in self.platform.system_dirs):
            tried.append(Candidate(via=Via.LD_SO_CACHE, path=cached, outcome=Outcome.ABSENT,
                                   detail="in a default directory: refused under DF_1_NODEFLIB"))
        elif cached is None:
            tried.append(Candidate(via=Via.LD_SO_CACHE, path=name, outcome=Outcome.ABSENT,
                                   detail="no entry"))
        else:
            result = self._try(cached, Via.LD_SO_CACHE, None, wanted, tried)
            if not isinstance(result, _Stop) and result is not None:
                return result
        if nodeflib:
            return None
        for directory in self.platform.system_dirs:
            result = self._try(posixpath.join(directory, name), Via.DEFAULT, None, wanted, tried)
            if isinstance(result, _Stop):
                break
            if result is not None:
                return result
        return None

    def _map(self, name: str, requester: LoadedObject | None, phase: str,
             state: _State) -> LoadedObject | None:
        """Resolve one name for `requester`, loading it if new. Appends the Request."""
        loaded = self.find_loaded(name)
        if loaded is not None:
            if requester is not None:
                state.deps.setdefault(requester.index, []).append(loaded.index)
            if name not in loaded.names:
                state.objects[loaded.index] = _with_name(loaded, name)
            state.requests.append(Request(
                requester=None if requester is None else requester.index, name=name,
                target=loaded.index, reused=True, candidates=(), phase=phase))
            return None
        found, tried, error = self._locate(name, requester)
        target: int | None = None
        new: LoadedObject | None = None
        if found is not None:
            path, real, facts = found
            same_file = next((o for o in state.objects
                              if o.real == real and o.index not in state.unloaded), None)
            if same_file is not None:
                target = same_file.index
                state.objects[same_file.index] = _with_name(same_file, name)
            else:
                new = LoadedObject(
                    index=len(state.objects), path=path, real=real, facts=facts,
                    loader=None if requester is None else requester.index,
                    names=(name,), phase=phase, found=tried[-1] if tried else None)
                state.objects.append(new)
                target = new.index
        if requester is not None and target is not None:
            state.deps.setdefault(requester.index, []).append(target)
        state.requests.append(Request(
            requester=None if requester is None else requester.index, name=name,
            target=target, reused=found is not None and new is None, candidates=tuple(tried),
            error=error, phase=phase))
        return new

    def start_process(self, main: str, preload: tuple[str, ...] = ()) -> bool:
        """Load the interpreter `main` (a path in the root) as the main program.

        Then `preload` (LD_PRELOAD, in order: names with a slash are paths) and the DT_NEEDED of
        all of them, breadth-first, as rtld.c `dl_main` does; everything lands in the global
        scope. True when everything loaded.
        """
        state = self.state
        first_object = len(state.objects)
        self._map(main, None, INTERPRETER, state)
        if state.requests[-1].target is None:
            return False
        self.main = state.objects[state.requests[-1].target]
        roots = [self.main.index]
        for name in preload:
            # A preload that cannot be loaded is ignored with a message (rtld.c do_preload):
            # its request is kept under its own phase, and does not fail the process.
            new = self._map(name, self.main, PRELOAD, state)
            if new is not None:
                roots.append(new.index)
        loaded = self._load_group(roots, first_object, len(state.requests),
                                  len(state.versions), INTERPRETER, rtld_global=True, keep=True)
        # What loads from now on takes its static TLS from what the startup modules left.
        state.static_tls = startup_static_tls(
            (o.facts.tls for o in state.objects[first_object:] if o.facts.tls is not None),
            tcb_at_tp=self.platform.machine in (Machine.X86_64, Machine.I386))
        return loaded

    def dlopen(self, name: str, *, phase: str = "import", requester: int | None = None,
               keep_on_failure: bool = False, rtld_global: bool = False) -> bool:
        """Load `name` and its dependencies breadth-first; True when everything loaded.

        `requester` is the object that calls dlopen (its search path applies). A failed load is
        rolled back unless `keep_on_failure`, but its requests and problems are kept. When
        everything loaded, the new objects' undefined symbols are bound (RTLD_NOW); with
        `rtld_global` the group joins the global scope.
        """
        state = self.state
        first_object = len(state.objects)
        first_request = len(state.requests)
        first_version = len(state.versions)
        caller = None if requester is None else state.objects[requester]
        self._map(name, caller, phase, state)
        root = state.requests[-1].target
        if root is None:
            return False
        return self._load_group([root], first_object, first_request, first_version, phase,
                                rtld_global=rtld_global, keep=keep_on_failure)

    def _load_group(  # noqa: PLR0913 - where this dlopen's records start, and its flags
        self, roots: list[int], first_object: int, first_request: int, first_version: int,
        phase: str, *, rtld_global: bool, keep: bool,
    ) -> bool:
        state = self.state
        queue = list(range(first_object, len(state.objects)))
        while queue:
            obj = state.objects[queue.pop(0)]
            for needed in obj.facts.needed:
                new = self._map(needed, obj, phase, state)
                if new is not None:
                    queue.append(new.index)
        self._check_versions(range(first_object, len(state.objects)), phase)
        failed = any(r.target is None for r in state.requests[first_request:]) or any(
            v.fatal for v in state.versions[first_version:])
        failed = failed or not self._allocate_static_tls(
            range(first_object, len(state.objects)), phase)
        if failed:
            if not keep:
                state.unloaded.update(range(first_object, len(state.objects)))
            return False
        group = self._search_list(roots)
        first_symbol = len(state.symbols)
        self._bind(range(first_object, len(state.objects)), group, phase)
        if rtld_global:
            state.global_scope.extend(i for i in group if i not in state.global_scope)
        return len(state.symbols) == first_symbol

    def _allocate_static_tls(self, new: range, phase: str) -> bool:
        """Place the new objects' initial-exec TLS; False when a block does not fit."""
        state = self.state
        if state.static_tls is None:
            return True
        state.static_tls, problems = allocate_static_tls(state.objects, new, state.static_tls,
                                                         phase)
        state.tls += problems
        return not problems

    def _search_list(self, roots: list[int]) -> list[int]:
        """The dlopen's local scope: its roots and their dependencies, breadth-first, once each."""
        order = list(dict.fromkeys(roots))
        seen = set(order)
        at = 0
        while at < len(order):
            for dep in self.state.deps.get(order[at], ()):
                if dep not in seen:
                    seen.add(dep)
                    order.append(dep)
            at += 1
        return order

    def _bind(self, new: range, group: list[int], phase: str) -> None:
        """Bind the undefined symbols of the objects in `new` against global + `group`."""
        state = self.state
        scope = list(dict.fromkeys((*state.global_scope, *group)))
        problems, unjudged = bind_symbols(state.objects, new, scope, self.objects, phase,
                                          interpreter_known=self.main is not None)
        state.symbols += problems
        if unjudged is not None:
            state.unjudged.append((phase, unjudged))

    def _check_versions(self, new: range, phase: str) -> None:
        for index in new:
            obj = self.state.objects[index]
            for need in obj.facts.version_needs:
                provider = self.find_loaded(need.file)
                if provider is None:
                    continue  # the dependency itself is missing; reported as such
                defs = provider.facts.version_defs
                if need.name in defs or need.name == provider.facts.soname:
                    continue
                if need.weak and defs:
                    continue
                self.state.versions.append(VersionProblem(
                    requester=index, provider=provider.index, file=need.file,
                    version=need.name, weak=need.weak, phase=phase, fatal=bool(defs)))


def _with_name(obj: LoadedObject, name: str) -> LoadedObject:
    if name in obj.names:
        return obj
    return dataclasses.replace(obj, names=(*obj.names, name))

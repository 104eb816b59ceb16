"""Where glibc looks for one DT_NEEDED name, in its order: the search path of one request.

The order is glibc's `_dl_map_object` (elf/dl-load.c): a name with a slash is a path and is
opened as it is; otherwise DT_RPATH of the requesting object and then of each object up its
loading chain (all skipped when the requesting object has DT_RUNPATH, and an object that has
DT_RUNPATH has no DT_RPATH at all: elf/get-dynamic-info.h), LD_LIBRARY_PATH, the requester's own
DT_RUNPATH, `/etc/ld.so.cache`, then the default directories; DF_1_NODEFLIB on the requester
skips the last two. `$ORIGIN` is the directory of the name the object was *found under*, not
its realpath (elf/dl-object.c); `$LIB` and `$PLATFORM` come from the target platform.

This module only computes directory lists; opening candidates is `resolver.loader.walk`'s job.
glibc-hwcaps and legacy hwcap subdirectories are not searched: they depend on the target CPU,
which a root does not record, and torch's libraries are never installed there.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["SearchDir", "Via", "expand_dst", "split_search_path"]


class Via(enum.Enum):
    """Which rule of the loader produced a candidate."""

    PATH = "path"  # the name held a slash
    RPATH = "DT_RPATH"
    LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
    RUNPATH = "DT_RUNPATH"
    LD_SO_CACHE = "ld.so.cache"
    DEFAULT = "default dirs"


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchDir:
    """One directory of a search path, with the rule and the object it came from."""

    via: Via
    directory: str
    owner: str | None = None  # the object whose DT_RPATH/DT_RUNPATH this is


_DST = re.compile(r"\$(ORIGIN|LIB|PLATFORM)\b|\$\{(ORIGIN|LIB|PLATFORM)\}")


def expand_dst(text: str, *, origin: str | None, lib: str, platform: str) -> str | None:
    """Expand `$ORIGIN`, `$LIB`, `$PLATFORM` (and `${...}`) as glibc's `_dl_dst_substitute` does.

    Returns None when the text needs `$ORIGIN` but the object has no known origin; glibc then
    drops that element of the path (elf/dl-load.c `fillin_rpath`).
    """
    values = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        value = values[match.group(1) or match.group(2)]
        if value is None:
            missing = True
            return ""
        return value

    expanded = _DST.sub(substitute, text)
    return None if missing else expanded


def split_search_path(  # noqa: PLR0913 - glibc fillin_rpath's inputs, all keyword-only
    text: str,
    *,
    via: Via,
    owner: str | None,
    origin: str | None,
    lib: str,
    platform: str,
    separators: str = ":",
) -> tuple[SearchDir, ...]:
    """Split a DT_RPATH/DT_RUNPATH/LD_LIBRARY_PATH value into directories, DSTs expanded.

    An empty element means the current directory, as in glibc's `fillin_rpath`; duplicates are
    kept only once, in their first place.
    """
    result: list[SearchDir] = []
    seen: set[str] = set()
    for element in re.split(f"[{re.escape(separators)}]", text):
        expanded = expand_dst(element, origin=origin, lib=lib, platform=platform)
        if expanded is None:
            continue
        # glibc keeps the directory as written (with its `..`); RootFS resolves `..` physically,
        # after symlinks, as the kernel does. An empty element is the current directory.
        directory = (expanded.rstrip("/") or "/") if expanded else "."
        if directory in seen:
            continue
        seen.add(directory)
        result.append(SearchDir(via=via, directory=directory, owner=owner))
    return tuple(result)

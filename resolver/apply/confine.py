"""Paths that apply writes or removes, kept inside the root (or site) they belong to.

Every path apply acts on comes from a recipe (a redist `prefix`, an activation's `directory`)
or from its own journal (what a step wrote, created or added). Either may be damaged; neither may
lead outside the folder the user named with `--root` or `--site-packages`. A path is joined to
its base after normalising, and refused when it climbs out (`..`), holds a NUL or a control
character, or names the base itself where a file or folder inside it is meant.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

from resolver.errors import ApplyError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["confined", "confined_name"]

_CONTROL = re.compile("[\x00-\x1f\x7f]")


def confined(base: Path, path: str, where: str) -> Path:
    """`base` joined with `path` (absolute inside `base`, or relative to it), never outside.

    Raises:
        ApplyError: `path` climbs out of `base`, names `base` itself, or holds a control
            character (`where` says whose path it is).

    """
    if _CONTROL.search(path):
        raise ApplyError(f"{where}: {path!r} holds a control character")
    normal = posixpath.normpath("/" + path.lstrip("/"))
    if normal == "/" or any(part == ".." for part in path.split("/")):
        raise ApplyError(f"{where}: {path!r} is not a path inside {base}")
    return base / normal.lstrip("/")


def confined_name(base: Path, name: str, where: str) -> Path:
    """`base / name` for one entry directly in `base` (a site's top-level folder).

    Raises:
        ApplyError: `name` is empty, `.`, `..`, holds a '/' or a control character.

    """
    if name in ("", ".", "..") or "/" in name or _CONTROL.search(name):
        raise ApplyError(f"{where}: {name!r} is not a name of an entry in {base}")
    return base / name

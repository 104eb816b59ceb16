"""Unpacking an NVIDIA redist archive under its prefix, with nothing escaping it.

NVIDIA's archives (`<component>-<platform>-<version>-archive.tar.xz`) hold one top-level folder
whose `lib/`, `include/`, ... go under the recipe's prefix. Every member is checked before
anything is written: only folders, regular files and symlinks; no absolute name and no `..`;
a symlink's target relative and inside the prefix (the same rules as Python's `tarfile`
"data" filter, PEP 706, applied by us so the error names the member). Then the files are
written (each to a temporary name, renamed into place) and their paths returned, so the step
that unpacked them can be taken back exactly.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from typing import TYPE_CHECKING

from resolver.errors import ApplyError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["unpack_archive", "write_member"]

_MAX_MEMBERS = 100_000


def _inside(relative: str) -> str | None:
    """`relative` without the archive's top folder, or None for the top folder itself."""
    parts = relative.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else None


def _check(member: tarfile.TarInfo, archive: Path) -> str | None:
    """The member's path under the prefix; raises when it may not be unpacked."""
    name = member.name
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ApplyError(f"{archive.name}: member {name!r} leaves the archive's folder")
    if not (member.isdir() or member.isfile() or member.issym()):
        raise ApplyError(f"{archive.name}: member {name!r} is not a file, folder or symlink")
    inside = _inside(normal)
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(inside or ""), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ApplyError(f"{archive.name}: symlink {name!r} -> {target!r} points outside "
                             "the prefix")
    return inside


def write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, *, mode: int,
                 where: str) -> None:
    """Write a checked file or symlink member at `target`.

    It goes to a temporary name beside it, then is renamed into place, so a crash never
    leaves a half-written file under its name.

    Raises:
        ApplyError: the member's bytes cannot be read (`where` names the archive).
        OSError: the file cannot be written.

    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.jetson-resolve")
    if member.issym():
        os.symlink(member.linkname, scratch)
    else:
        source = tar.extractfile(member)
        if source is None:
            raise ApplyError(f"{where}: cannot read member {member.name!r}")
        with source, scratch.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.chmod(scratch, mode)
    os.replace(scratch, target)


def unpack_archive(archive: Path, prefix: Path) -> list[str]:
    """Unpack `archive` under `prefix` (which must not exist yet); the files written.

    Raises:
        ApplyError: the archive is unreadable, a member is refused (nothing written then), or
            the prefix exists already.

    """
    if os.path.lexists(prefix):
        raise ApplyError(f"{prefix}: exists already; refusing to unpack over it")
    try:
        with tarfile.open(archive) as tar:
            members = []
            for member in tar:
                members.append(member)
                if len(members) > _MAX_MEMBERS:
                    raise ApplyError(f"{archive.name}: more than {_MAX_MEMBERS} members")
            planned = [(m, _check(m, archive)) for m in members]
            written: list[str] = []
            for member, inside in planned:
                if inside is None:
                    continue
                if member.isdir():
                    (prefix / inside).mkdir(parents=True, exist_ok=True)
                    continue
                write_member(tar, member, prefix / inside, where=archive.name,
                             mode=(member.mode & 0o755) | 0o644)
                written.append(str(prefix / inside))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ApplyError(f"{archive.name}: cannot unpack: {err}") from None
    return written

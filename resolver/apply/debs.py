"""Unpacking Debian packages into another root, file by file, every file recorded.

A `.deb` is an `ar` archive (deb(5)) holding `debian-binary`, `control.tar.*` and
`data.tar.*`; the data tar's members are the files the package installs, named `./usr/...`.
`apt-get download` fetches them (apt checks their hashes against the signed index), and this
module places them in a root without running maintainer scripts (as `dpkg-deb -x` does), with
two differences that matter on a live machine's other root: a path is resolved through the
root's own directory symlinks (`/lib -> usr/lib` on a merged-/usr root, which `tar` would
replace with a directory), and a file that exists already is refused rather than overwritten,
so that every file written is this step's alone and its undo removes exactly those.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from typing import TYPE_CHECKING

from resolver.apply.unpack import write_member
from resolver.errors import ApplyError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["deb_members", "place_in_root", "planned_paths"]

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_MAX_DATA = 1 << 31  # a data member larger than 2 GiB is not a package we unpack


def _data_member(deb: Path) -> tuple[str, bytes]:
    """The name and bytes of the `.deb`'s data.tar member (deb(5): an ar archive)."""
    with deb.open("rb") as handle:
        if handle.read(len(_AR_MAGIC)) != _AR_MAGIC:
            raise ApplyError(f"{deb.name}: not a Debian package (no ar magic)")
        while header := handle.read(_AR_HEADER):
            if len(header) < _AR_HEADER:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise ApplyError(f"{deb.name}: damaged ar header") from None
            if name.startswith("data.tar"):
                if size > _MAX_DATA:
                    raise ApplyError(f"{deb.name}: data member larger than {_MAX_DATA} bytes")
                return name, handle.read(size)
            handle.seek(size + (size % 2), os.SEEK_CUR)
    raise ApplyError(f"{deb.name}: no data.tar member")


def deb_members(deb: Path) -> tarfile.TarFile:
    """The package's data tar, open for reading (xz, gzip, bzip2 or none).

    Raises:
        ApplyError: not a .deb, or its data is compressed in a way Python cannot read (zstd).

    """
    name, data = _data_member(deb)
    if name.endswith(".zst"):
        raise ApplyError(f"{deb.name}: its data is zstd-compressed, which is not readable here")
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError as err:
        raise ApplyError(f"{deb.name}: unreadable data member: {err}") from None


def _resolve_dirs(root: Path, relative: str) -> str:
    """`relative`'s folder followed through the root's symlinks (inside the root)."""
    parts = [p for p in relative.split("/") if p]
    resolved: list[str] = []
    for part in parts[:-1]:
        resolved.append(part)
        current = root.joinpath(*resolved)
        hops = 0
        while current.is_symlink():
            hops += 1
            if hops > 40:
                raise ApplyError(f"{relative}: too many levels of symlinks in the root")
            target = os.readlink(current)
            base = "/" if target.startswith("/") else "/" + "/".join(resolved[:-1])
            joined = posixpath.normpath(posixpath.join(base, target)).lstrip("/")
            resolved = [p for p in joined.split("/") if p]
            current = root.joinpath(*resolved)
    return "/".join([*resolved, parts[-1]]) if parts else ""


def planned_paths(root: Path, debs: list[Path]) -> list[tuple[str, tarfile.TarInfo, Path]]:
    """Where each file of `debs` goes in `root` (root's namespace), checked, nothing written.

    Raises:
        ApplyError: a member escapes the root, is not a file, folder or symlink, or its place
            is taken already.

    """
    planned = []
    for deb in debs:
        with deb_members(deb) as tar:
            for member in tar.getmembers():
                normal = posixpath.normpath(member.name.removeprefix("./"))
                if member.isdir() or normal == ".":
                    continue
                if normal.startswith(("/", "../")) or normal == "..":
                    raise ApplyError(f"{deb.name}: member {member.name!r} leaves the root")
                if not (member.isfile() or member.issym()):
                    raise ApplyError(f"{deb.name}: member {member.name!r} is not a file or a "
                                     "symlink")
                place = _resolve_dirs(root, normal)
                if os.path.lexists(root / place):
                    raise ApplyError(f"{deb.name}: /{place} exists in the root already; "
                                     "refusing to overwrite it")
                planned.append(("/" + place, member, deb))
    return planned


def place_in_root(root: Path, planned: list[tuple[str, tarfile.TarInfo, Path]]
                  ) -> tuple[list[str], list[str]]:
    """Write the planned files (each to a temporary name, renamed).

    Returns the paths written and the folders created for them (root's namespace, outermost
    first).

    Raises:
        ApplyError: a package cannot be read again, or a file cannot be written.

    """
    written: list[str] = []
    created: list[str] = []
    open_debs: dict[Path, tarfile.TarFile] = {}
    try:
        for place, member, deb in planned:
            tar = open_debs.get(deb) or open_debs.setdefault(deb, deb_members(deb))
            target = root / place.lstrip("/")
            missing = [p for p in (target.parent, *target.parent.parents)
                       if root in p.parents and not os.path.lexists(p)]
            created += ["/" + p.relative_to(root).as_posix() for p in reversed(missing)]
            write_member(tar, member, target, mode=member.mode & 0o7777, where=deb.name)
            written.append(place)
    except OSError as err:
        raise ApplyError(f"{root}: cannot unpack: {err}") from None
    finally:
        for tar in open_debs.values():
            tar.close()
    return written, created

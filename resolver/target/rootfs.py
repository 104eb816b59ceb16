"""The target machine's filesystem as the loader sees it: a live `/` or a directory holding a root.

Every path is resolved component by component *inside* the root, the way a chroot would: an
absolute symlink target starts again at the root, and `..` never climbs above it. Symlink loops
and dangling links come back as a `Resolved` with a `problem`, not as exceptions. Directories
that are not in the root (a `--site-packages` elsewhere on the host, the inside of a wheel) are
mounted at a path of the root's namespace, so the loader emulation sees one tree.

This module reads; it never writes. It knows nothing of the loader's rules (`resolver.loader`).
Directory listings are cached for the life of the object, which lives for one diagnose.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from resolver.errors import RootFsError
from resolver.target.mounts import DirMount, Entry, EntryKind, Mount, ZipMount

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from resolver.target.witness import Witness

__all__ = [
    "MAX_TEXT",
    "NAME_MAX",
    "PATH_MAX",
    "DirMount",
    "Entry",
    "EntryKind",
    "Mount",
    "Resolved",
    "RootFS",
    "ZipMount",
    "path_in_root",
]

# Linux follows at most 40 symlinks in one lookup (include/linux/namei.h MAXSYMLINKS).
_MAX_SYMLINKS = 40
# Bytes of one file name, and of a path or a symlink's target (include/uapi/linux/limits.h):
# open() of a longer one fails with ENAMETOOLONG.
NAME_MAX = 255
PATH_MAX = 4096
# The most of a text file of the root read unless its reader says otherwise: os-release,
# version.py, a dist-info's METADATA are a few KB.
MAX_TEXT = 1 << 20
_DIR = Entry(EntryKind.DIR)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a path of the root leads: the final path in the root's namespace, or a problem."""

    path: str  # the path as asked
    real: str | None  # the path with every symlink resolved, inside the root
    problem: str | None = None  # "dangling symlink", "symlink loop", "not a regular file"

    @property
    def ok(self) -> bool:
        """True when `real` names a regular file or directory."""
        return self.problem is None and self.real is not None


def path_in_root(root: str, host_path: str) -> str | None:
    """Where a host path lies in the namespace of the root at `root`, None when outside it."""
    root = os.path.abspath(root)
    if root == "/":
        return host_path
    if host_path != root and not host_path.startswith(root + "/"):
        return None
    relative = os.path.relpath(host_path, root)
    return "/" if relative == "." else "/" + relative


class RootFS:
    """A root filesystem with optional extra mounts, read strictly inside itself."""

    def __init__(self, root: Path | str, *, mounts: Mapping[str, Mount] | None = None,
                 witness: Witness | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise RootFsError(f"{self.root}: root is not a directory")
        self.live = self.root == "/"
        self._witness = witness
        self._mounts: dict[str, Mount] = {"/": DirMount(self.root, witness=witness)}
        for at, mount in (mounts or {}).items():
            self._mounts[posixpath.normpath("/" + at.lstrip("/"))] = mount
        # Longest prefix first, so a mount inside a mount wins.
        self._order = sorted(self._mounts, key=len, reverse=True)
        self._listings: dict[str, Mapping[str, Entry] | None] = {}
        self._resolved: dict[str, Resolved] = {}

    def _mount_of(self, path: str) -> tuple[Mount, str]:
        for prefix in self._order:
            if prefix in (path, "/") or path.startswith(prefix + "/"):
                return self._mounts[prefix], path[len(prefix):].lstrip("/")
        raise AssertionError(path)  # "/" always matches

    def _saw(self, real: str) -> None:
        """Tell the witness (if any) that directory `real` is about to be enumerated."""
        if self._witness is not None:
            mount, rel = self._mount_of(real)
            host = mount.host_path(rel)
            if host is not None:
                self._witness.saw(host)

    def _looked_up(self, listing: Mapping[str, Entry] | None, real: str) -> Entry | None:
        """`real`'s entry in its directory's `listing`, the lookup told to the witness (if any)."""
        entry = None if listing is None else listing.get(posixpath.basename(real))
        # Mount points and the folders leading to them are ours, not the host's.
        virtual = any(at == real or at.startswith(real + "/") for at in self._order if at != "/")
        if self._witness is not None and not virtual:
            mount, rel = self._mount_of(real)
            host = mount.host_path(rel)
            if host is not None:
                self._witness.saw_entry(host, listed=entry is not None)
        return entry

    def _listing(self, real_dir: str) -> Mapping[str, Entry] | None:
        if real_dir not in self._listings:
            mount, rel = self._mount_of(real_dir)
            listing = mount.list_dir(rel)
            # Mount points (and the directories leading to them) show up in their parents even
            # when the root itself has no such directory.
            prefix = real_dir.rstrip("/") + "/"
            extra = {at[len(prefix):].split("/")[0]: _DIR
                     for at in self._mounts if at != "/" and at.startswith(prefix)}
            if extra:
                listing = {**(listing or {}), **extra}
            self._listings[real_dir] = listing
        return self._listings[real_dir]

    def resolve(self, path: str) -> Resolved:
        """Resolve `path` (absolute, in the root's namespace) through symlinks, inside the root."""
        path = "/" + path.lstrip("/")
        cached = self._resolved.get(path)
        if cached is None:
            cached = self._resolve(path)
            self._resolved[path] = cached
        return cached

    def _resolve(self, path: str) -> Resolved:
        pending = [part for part in path.split("/") if part]
        pending.reverse()
        current = "/"
        hops = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            listing = self._listing(current)
            if listing is None:
                return Resolved(path, None, f"{current} is not a directory")
            child = posixpath.join(current, part)
            entry = self._looked_up(listing, child)
            if entry is None:
                return Resolved(path, None, None)
            if entry.kind == EntryKind.LINK:
                hops += 1
                if hops > _MAX_SYMLINKS:
                    return Resolved(path, None, f"symlink loop at {child}")
                mount, rel = self._mount_of(child)
                target = mount.read_link(rel)
                if target.startswith("/"):
                    current = "/"
                pending.extend(reversed([p for p in target.split("/") if p]))
                continue
            if pending and entry.kind != EntryKind.DIR:
                return Resolved(path, None, f"{child} is not a directory")
            current = child
        return Resolved(path, current)

    def read_link(self, path: str) -> str | None:
        """The target of the symlink at `path` (its parent resolved first), None if not a link."""
        parent = self.resolve(posixpath.dirname(path))
        if not parent.ok or parent.real is None:
            return None
        name = posixpath.basename(path)
        entry = self._looked_up(self._listing(parent.real), posixpath.join(parent.real, name))
        if entry is None or entry.kind != EntryKind.LINK:
            return None
        mount, rel = self._mount_of(posixpath.join(parent.real, name))
        return mount.read_link(rel)

    def find_file(self, directory: str, name: str) -> Resolved | None:
        """Look `name` up in `directory` the way open() would.

        Returns None when nothing by that name exists (no entry at all); a `Resolved` with a
        problem when an entry exists but does not lead to a regular file (dangling link, loop).
        """
        base = self.resolve(directory)
        if not base.ok or base.real is None:
            return None
        listing = self._listing(base.real)
        if self._looked_up(listing, posixpath.join(base.real, name)) is None:
            return None
        found = self.resolve(posixpath.join(base.real, name))
        if found.ok and found.real is not None:
            kind = self.kind_of(found.real)
            if kind != EntryKind.FILE:
                return Resolved(found.path, found.real, f"{found.real} is not a regular file")
        elif found.problem is None:
            return Resolved(found.path, None, "dangling symlink")
        return found

    def unreadable(self) -> dict[str, str]:
        """Host paths that could not be read and were passed over, with why."""
        found: dict[str, str] = {}
        for mount in self._mounts.values():
            found.update(getattr(mount, "unreadable", {}))
        return found

    def kind_of(self, real: str) -> str | None:
        """Kind of an already resolved path, or None when it does not exist."""
        if real == "/":
            return EntryKind.DIR
        entry = self._looked_up(self._listing(posixpath.dirname(real)), real)
        return None if entry is None else entry.kind

    def list_dir(self, directory: str) -> Mapping[str, Entry]:
        """Entries of a directory of the root (after resolving it); empty when there is none."""
        base = self.resolve(directory)
        if not base.ok or base.real is None:
            return {}
        self._saw(base.real)
        return self._listing(base.real) or {}

    def glob(self, pattern: str) -> list[str]:
        """Expand an absolute pattern inside the root, sorted, the way the C library's glob does.

        Wildcards may be in any component (ldconfig globs `include /etc/*/extra.conf` whole);
        a wildcard does not match a leading '.', and only existing paths are returned.
        """
        found = ["/"]
        for part in (p for p in pattern.split("/") if p):
            if not any(ch in part for ch in "*?["):
                found = [posixpath.join(base, part) for base in found]
                continue
            found = [posixpath.join(base, name) for base in found
                     for name in sorted(self.list_dir(base))
                     if fnmatch.fnmatchcase(name, part)
                     and (part.startswith(".") or not name.startswith("."))]
        existing = []
        for path in found:
            resolved = self.resolve(path)
            if resolved.ok and resolved.real is not None and self.kind_of(resolved.real):
                existing.append(path)
        return sorted(existing)

    def open(self, real: str) -> tuple[BinaryIO, int]:
        """Open a resolved regular file for reading.

        Raises:
            RootFsError: the file cannot be opened.

        """
        mount, rel = self._mount_of(real)
        try:
            return mount.open(rel)
        except OSError as err:
            raise RootFsError(f"{self.host_label(real)}: cannot open: {err.strerror}") from err

    def identity(self, real: str) -> tuple[object, ...]:
        """A cache key for a resolved file: changes whenever its bytes may have."""
        mount, rel = self._mount_of(real)
        return mount.identity(rel)

    def host_label(self, real: str) -> str:
        """How to name a path of the root to a person: its host path, or archive!member."""
        mount, rel = self._mount_of(real)
        host = mount.host_path(rel)
        if host is not None:
            return host
        return f"{mount.label}!{rel}" if rel else mount.label

    def read_bytes(self, path: str, limit: int = MAX_TEXT, *, prefix: bool = False
                   ) -> bytes | None:
        """Bytes of a file of the root, None when there is no such regular file.

        At most `limit` bytes are read: with `prefix` the first `limit`, otherwise a longer
        file is refused (a 3 GiB `/etc/os-release` is not read into memory).

        Raises:
            RootFsError: the file cannot be opened, or holds more than `limit` bytes.

        """
        found = self.resolve(path)
        if not found.ok or found.real is None or self.kind_of(found.real) != EntryKind.FILE:
            return None
        stream, size = self.open(found.real)
        with stream:
            if size > limit and not prefix:
                raise RootFsError(f"{self.host_label(found.real)}: {size} bytes, more than the "
                                  f"{limit} such a file may hold; not read")
            data = stream.read(limit + (0 if prefix else 1))
        if len(data) > limit:
            raise RootFsError(f"{self.host_label(found.real)}: more than the {limit} bytes "
                              "such a file may hold; not read")
        return data

    def read_text(self, path: str, limit: int = MAX_TEXT, *, prefix: bool = False
                  ) -> str | None:
        """Text of a file of the root (UTF-8, undecodable bytes kept), or None when absent.

        Raises:
            RootFsError: as `read_bytes`.

        """
        data = self.read_bytes(path, limit, prefix=prefix)
        return None if data is None else data.decode("utf-8", "surrogateescape")

"""The trees a `RootFS` is assembled from: a host directory, or the inside of a wheel.

A mount answers for paths relative to its own top (`rel`, '' for the top itself): it lists a
directory without following symlinks, reads a link, opens a file and says what identifies the
file's bytes for the facts cache. It does not resolve symlinks or `..`, and it knows nothing of
the root it is mounted in; `resolver.target.rootfs` does both. It reads; it never writes.
"""

from __future__ import annotations

import errno
import io
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from resolver.errors import InvalidWheel, RootFsError, UnusableFile

if TYPE_CHECKING:
    import zipfile
    from collections.abc import Iterator, Mapping
    from concurrent.futures import Future, ThreadPoolExecutor
    from pathlib import Path

    from resolver.target.witness import Witness

__all__ = ["DirMount", "Entry", "EntryKind", "Mount", "ZipMount"]


class EntryKind:
    """What a directory entry is, without following it."""

    FILE = "file"
    DIR = "dir"
    LINK = "link"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry: its kind and, for a file, where its bytes are."""

    kind: str
    size: int = 0


class Mount(Protocol):
    """Something that holds a directory tree: a host directory or a zip archive."""

    label: str

    def list_dir(self, rel: str) -> Mapping[str, Entry] | None:
        """Entries of directory `rel` ('' is the top), or None when it is not a directory."""
        ...

    def read_link(self, rel: str) -> str:
        """The target of symlink `rel`."""
        ...

    def open(self, rel: str) -> tuple[BinaryIO, int]:
        """An open binary stream of file `rel` and its size."""
        ...

    def identity(self, rel: str) -> tuple[object, ...]:
        """What changes when the file does (cache key): size, mtime, inode or CRC."""
        ...

    def host_path(self, rel: str) -> str | None:
        """The host path of `rel`, when there is one."""
        ...


class DirMount:
    """A host directory."""

    def __init__(self, top: Path | str, *, witness: Witness | None = None) -> None:
        self.top = os.fspath(top)
        self.label = self.top
        self.witness = witness
        self.unreadable: dict[str, str] = {}  # host path -> why it could not be listed

    def _host(self, rel: str) -> str:
        return os.path.join(self.top, rel) if rel else self.top

    def list_dir(self, rel: str) -> Mapping[str, Entry] | None:
        """Entries of directory `rel`, symlinks not followed; None when it is not a directory.

        A directory that cannot be listed (permissions, I/O) is None too, and noted in
        `unreadable`.
        """
        try:
            with os.scandir(self._host(rel)) as it:
                listing: dict[str, Entry] = {}
                for item in it:
                    if item.is_symlink():
                        listing[item.name] = Entry(EntryKind.LINK)
                    elif item.is_dir(follow_symlinks=False):
                        listing[item.name] = Entry(EntryKind.DIR)
                    elif item.is_file(follow_symlinks=False):
                        listing[item.name] = Entry(EntryKind.FILE)
                    else:
                        listing[item.name] = Entry(EntryKind.OTHER)
                return listing
        except (NotADirectoryError, FileNotFoundError):
            return None
        except OSError as err:
            # The loader cannot open files in a folder it may not search (EACCES) and goes on
            # to the next (elf/dl-load.c open_path); so does every reader of the root.
            self.unreadable[self._host(rel)] = f"cannot list: {err.strerror}"
            return None

    def read_link(self, rel: str) -> str:
        """The target of symlink `rel`."""
        if self.witness is not None:
            self.witness.saw(self._host(rel))
        return os.readlink(self._host(rel))

    def open(self, rel: str) -> tuple[BinaryIO, int]:
        """File `rel` opened for reading, and its size."""
        if self.witness is not None:
            self.witness.saw(self._host(rel))
        from resolver.host_files import open_regular  # noqa: PLC0415

        try:
            handle = open_regular(self._host(rel))
        except UnusableFile as err:  # replaced by a FIFO or a device since it was listed
            raise OSError(errno.EINVAL, str(err).rpartition(": ")[2], self._host(rel)) from None
        return handle, os.fstat(handle.fileno()).st_size

    def identity(self, rel: str) -> tuple[object, ...]:
        """Host path, size, mtime_ns and inode of `rel`."""
        if self.witness is not None:
            self.witness.saw(self._host(rel))
        info = os.stat(self._host(rel))
        return (self._host(rel), info.st_size, info.st_mtime_ns, info.st_ino)

    def host_path(self, rel: str) -> str | None:
        """The host path of `rel`."""
        return self._host(rel)


_FILE = Entry(EntryKind.FILE)
_DIR = Entry(EntryKind.DIR)
# A member is inflated into memory: none bigger than this (libtorch_cuda.so is about 1.5 GB),
# and none that inflates more than _MAX_RATIO times plus _SLACK. Machine code and CUDA
# fatbins deflate 2-25 times in PyPI's torch and nvidia wheels; an aarch64 library's 64 KiB
# page padding is all zeros (the most seen: torch 2.11.0's libtorch_global_deps.so, 64 times).
_MAX_MEMBER = 4 << 30
_MAX_RATIO = 100
_SLACK = 16 << 20
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # zip local file header, APPNOTE 4.3.7


class ZipMount:
    """The inside of a zip archive (a wheel), read without extracting it to disk.

    A member is inflated into memory when opened (deflate streams cannot be read from the
    middle, and the section headers an ELF reader needs sit at the end). `prefetch` inflates
    members on worker threads ahead of time; zlib releases the GIL, so big members inflate in
    parallel. A member whose name is absolute or climbs out with `..` makes the archive invalid.
    """

    def __init__(self, archive: Path | str, *, witness: Witness | None = None) -> None:
        import zipfile  # noqa: PLC0415 - only wheels need it; keeps start-up light

        if witness is not None:
            witness.saw(os.fspath(archive))
        self.archive = os.fspath(archive)
        self.label = self.archive
        try:
            self._zip = zipfile.ZipFile(self.archive)
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise InvalidWheel(f"{self.archive}: not a readable zip archive: {err}") from err
        info = os.stat(self.archive)
        self._stamp = (self.archive, info.st_size, info.st_mtime_ns, info.st_ino)
        self._dirs: dict[str, dict[str, Entry]] = {"": {}}
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._pending: dict[str, Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        for member in self._zip.infolist():
            name = member.filename
            if name.startswith("/") or "\\" in name or (".." in name and ".." in name.split("/")):
                raise InvalidWheel(f"{self.archive}: member {name!r} escapes the archive's folder")
            if name.endswith("/"):
                self._add_dir(name.rstrip("/"))
                continue
            parent, _, base = name.rpartition("/")
            if not base or "//" in name:
                raise InvalidWheel(f"{self.archive}: member {name!r} has an empty path component")
            self._add_dir(parent)[base] = _FILE
            self._members[name] = member

    def _add_dir(self, rel: str) -> dict[str, Entry]:
        listing = self._dirs.get(rel)
        if listing is None:
            listing = self._dirs[rel] = {}
            parent, _, base = rel.rpartition("/")
            self._add_dir(parent)[base] = _DIR
        return listing

    def list_dir(self, rel: str) -> Mapping[str, Entry] | None:
        """Entries of directory `rel` of the archive; None when it is not a directory."""
        return self._dirs.get(rel)

    def read_link(self, rel: str) -> str:
        """Always raises: members are never listed as symlinks.

        Raises:
            RootFsError: always.

        """
        raise RootFsError(f"{self.archive}: {rel} is not a symlink")

    def member_names(self) -> Iterator[str]:
        """Every file member, in archive order."""
        return iter(self._members)

    def _inflate(self, rel: str) -> bytes:
        import zipfile  # noqa: PLC0415 - imported with the mount; a dict lookup here
        import zlib  # noqa: PLC0415

        member = self._members[rel]
        if member.file_size > min(_MAX_MEMBER, _MAX_RATIO * member.compress_size + _SLACK):
            raise InvalidWheel(f"{self.archive}: member {rel} inflates to {member.file_size} "
                               f"bytes from {member.compress_size} (a zip bomb?); not read")
        try:
            with open(self.archive, "rb") as handle:
                handle.seek(member.header_offset)
                header = handle.read(_LOCAL_HEADER.size)
                if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                    raise InvalidWheel(f"{self.archive}: member {rel}: bad local header")
                fields = _LOCAL_HEADER.unpack(header)
                handle.seek(fields[-2] + fields[-1], os.SEEK_CUR)
                raw = handle.read(member.compress_size)
            if member.compress_type == zipfile.ZIP_STORED:
                data = raw
            elif member.compress_type == zipfile.ZIP_DEFLATED:
                # Never more than the size the zip states (checked below, with the CRC), and
                # never more than a library plausibly inflates to: a bomb stops here.
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                data = inflater.decompress(raw, member.file_size + 1)
            else:
                return self._zip.read(member)
        except (OSError, zlib.error, zipfile.BadZipFile, EOFError, ValueError, MemoryError) as err:
            raise InvalidWheel(f"{self.archive}: cannot read member {rel}: {err!r}") from err
        if len(data) != member.file_size or zlib.crc32(data) != member.CRC:
            raise InvalidWheel(f"{self.archive}: member {rel} is damaged (size or CRC mismatch)")
        return data

    def prefetch(self, names: list[str]) -> None:
        """Start inflating `names` on worker threads, biggest first."""
        wanted = sorted((n for n in names if n in self._members and n not in self._pending),
                        key=lambda n: -self._members[n].compress_size)
        if not wanted:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            # One worker per core: more would share the cores and finish the biggest member later.
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
        for name in wanted:
            self._pending[name] = self._pool.submit(self._inflate, name)

    def close(self) -> None:
        """Stop the workers and drop what they inflated."""
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()
        self._zip.close()

    def open(self, rel: str) -> tuple[BinaryIO, int]:
        """Member `rel` inflated into memory (by `prefetch` when it got there first), and its size.

        Raises:
            InvalidWheel: the member cannot be read or is damaged.

        """
        pending = self._pending.pop(rel, None)
        data = pending.result() if pending is not None else self._inflate(rel)
        return io.BytesIO(data), len(data)

    def identity(self, rel: str) -> tuple[object, ...]:
        """The archive's identity plus the member's name, CRC and size."""
        member = self._members[rel]
        return (*self._stamp, rel, member.CRC, member.file_size)

    def host_path(self, rel: str) -> str | None:  # noqa: ARG002 - members have no host path
        """None: a member has no host path."""
        return None

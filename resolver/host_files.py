"""Files of this machine that the tool itself reads and writes: its caches, fixtures, reports.

Three rules hold for every one of them:

- A file is read only when it is a regular file, and never more of it than its kind can hold.
  It is opened with O_NONBLOCK, so a FIFO named where a file belongs is refused rather than
  waited on; `/dev/zero` is refused by its type, not read until memory runs out.
- A file is written to a temporary file in its folder, checked by the reader that will read it,
  and renamed into place (rename(2) replaces an existing symlink, never writes through it). An
  interrupted or refused write leaves the old file, never a half-written one.
- What is wrong is said in one line naming the file (`UnusableFile`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from typing import TYPE_CHECKING, BinaryIO

from resolver.errors import UnusableFile

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "KIB", "MIB", "cache_home", "describe_mode", "in_process_folder", "not_regular", "open_regular",
    "process_folder", "read_regular", "write_atomic",
]

KIB = 1 << 10
MIB = 1 << 20


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/jetson-resolve`, `$HOME/.cache/jetson-resolve`, or a process's own.

    With neither set, a folder of this process's own (`process_folder`): with no HOME the
    user named no cache, so the passwd home (where expanduser would go) is not written, and
    the run works as without a cache. A relative `XDG_CACHE_HOME` is ignored, as the XDG Base
    Directory Specification says. Whether the folder can be used is for the caller to find
    out: a cache that cannot be read or written is no cache, never an error.
    """
    from pathlib import Path  # noqa: PLC0415

    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return process_folder() / "cache"
        base = os.path.join(home, ".cache")
    return Path(base) / "jetson-resolve"


_process_folder: list[Path] = []


def process_folder() -> Path:
    """A temporary folder of this process's own, created on first use and removed at exit.

    Where a cache goes when there is none to use: the run works, and nothing outlives it.
    """
    if not _process_folder:
        import atexit  # noqa: PLC0415
        import shutil  # noqa: PLC0415
        from pathlib import Path  # noqa: PLC0415

        folder = Path(tempfile.mkdtemp(prefix="jetson-resolve-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _process_folder.append(folder)
    return _process_folder[0]


def in_process_folder(path: Path) -> bool:
    """True when `path` lies in this process's own folder (`process_folder`), if it has one."""
    return bool(_process_folder) and path.is_relative_to(_process_folder[0])


def describe_mode(mode: int) -> str:
    """What a file of this `st_mode` is, as a person says it ("a FIFO", "a directory")."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:.0f} MiB"
    return f"{size / KIB:.0f} KiB" if size >= KIB else f"{size} bytes"


def not_regular(path: str | os.PathLike[str]) -> str | None:
    """Why `path` (symlinks followed) is no regular file to read, or None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return err.strerror or str(err)
    return None if stat.S_ISREG(mode) else f"{describe_mode(mode)}, not a regular file"


def open_regular(path: str | os.PathLike[str], what: str | None = None, *,
                 follow: bool = True) -> BinaryIO:
    """`path` opened for binary reading after checking, on the open file, that it is regular.

    Symlinks are followed (the caller named the path) unless `follow` is False (the tool's
    own state, where a symlink was planted by someone else); the check is made on the
    descriptor, so what was checked is what is read.

    Raises:
        UnusableFile: it is a FIFO, a device, a directory or a socket (or, with `follow`
            False, a symlink).
        OSError: it cannot be opened (missing, permissions, a symlink loop).

    """
    must = f"; {what} must be a regular file" if what else ", not a regular file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
                     | (0 if follow else os.O_NOFOLLOW))
    except OSError as err:
        if not follow and err.errno == errno.ELOOP and os.path.islink(path):
            raise UnusableFile(f"{os.fspath(path)}: a symlink{must}") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnusableFile(f"{os.fspath(path)}: {describe_mode(mode)}{must}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "a file") -> bytes:
    """The bytes of regular file `path`, refused when it holds more than `limit` bytes.

    `what` names the kind of file in the message ("a fixture's files.json").

    Raises:
        UnusableFile: not a regular file, or more than `limit` bytes.
        OSError: it cannot be opened or read.

    """
    with open_regular(path, what if what != "a file" else None) as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise UnusableFile(f"{os.fspath(path)}: more than {_size_text(limit)}, too big for "
                               f"{what}")
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise UnusableFile(f"{os.fspath(path)}: more than {_size_text(limit)}, too big for {what}")
    return data


def write_atomic(path: Path, data: bytes, *, check: Callable[[Path], object] | None = None,
                 mode: int = 0o644, durable: bool = False) -> None:
    """Write `data` to `path`: to a temporary file beside it, checked, then renamed over it.

    `check(temporary_path)` is the reader of the file: whatever it raises stops the write and
    leaves `path` as it was. A symlink at `path` is replaced, never written through. `durable`
    (apply's state) syncs the file before the rename and the folder after it, so a power cut
    leaves the old file or the new one.

    Raises:
        UnusableFile: something other than a file or a symlink is at `path` (a FIFO, a folder).
        OSError: the folder cannot be written (the old file is kept).

    """
    try:
        existing = os.lstat(path).st_mode
    except FileNotFoundError:
        existing = None
    if existing is not None and not (stat.S_ISREG(existing) or stat.S_ISLNK(existing)):
        raise UnusableFile(f"{path}: {describe_mode(existing)}, not a file to write")
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as err:  # EFBIG, ENOSPC, EDQUOT: said of the file asked for
            if err.filename is None:
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
        os.chmod(scratch, mode & ~_umask())
        if check is not None:
            from pathlib import Path as _Path  # noqa: PLC0415

            check(_Path(scratch))
        os.replace(scratch, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

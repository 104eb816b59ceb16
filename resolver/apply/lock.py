"""One apply at a time per state folder.

The lock is the operating system's (`filelock`, flock(2) on Linux): it belongs to the process
that took it and is released when that process ends, however it ends, so the lock of a process
killed with -9 is taken over without guessing from pids. Beside it, `apply.holder.json` names
the holder (pid, host, start time) for the message a second apply prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import TYPE_CHECKING, Self

from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import KIB, read_regular, write_atomic

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    import filelock

__all__ = ["StateLock"]


class StateLock:
    """`with StateLock(folder):` holds the folder's apply lock, or raises at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock: filelock.BaseFileLock | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(read_regular(self.folder / "apply.holder.json", 64 * KIB))
            return (f"pid {int(info['pid'])} on {info['host']}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))}")
        except (OSError, UnusableFile, ValueError, KeyError, TypeError):
            return "a process that did not say who it is"

    def holder_if_held(self) -> str | None:
        """Who holds the lock now (pid, host, since), or None when nobody does."""
        import filelock  # noqa: PLC0415

        if not (self.folder / "apply.lock").exists():
            return None
        try:
            probe = filelock.FileLock(self.folder / "apply.lock", timeout=0)
            probe.acquire()
        except filelock.Timeout:
            return self._holder()
        except OSError:
            return None
        probe.release()
        return None

    def __enter__(self) -> Self:
        import filelock  # noqa: PLC0415 - only apply takes the lock

        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ApplyError(f"{self.folder}: not a folder, where the state folder should be")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(self.folder / "apply.lock", timeout=0)
            lock.acquire()
        except filelock.Timeout:
            raise ApplyError(f"{self.folder}: another apply is running ({self._holder()})"
                             ) from None
        except OSError as err:
            raise ApplyError(f"{self.folder}: cannot take the apply lock: {err.strerror}"
                             ) from err
        self._lock = lock
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        # The holder's name is for messages only; the lock itself is held.
        with contextlib.suppress(OSError, UnusableFile):
            write_atomic(self.folder / "apply.holder.json", json.dumps(holder).encode("utf-8"))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        (self.folder / "apply.holder.json").unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

"""A record of what a diagnose consulted on the host, with what `lstat` said of each then.

Every directory listed, file opened and symlink read is recorded. The result of a diagnose is
a function of these objects (and of the options), so a result can be reused for as long as
`Witness.unchanged` holds: no directory gained or lost an entry (its mtime moves), no file was
rewritten or replaced (size, mtime, inode), no link was re-pointed, nothing absent appeared.
Mounts call `saw` before they read, so a change during the run is caught on the next one.

This module only stats; it never reads contents and never decides what a stat means for a
result (`resolver.cli.result_cache` keeps results).
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["Signature", "Witness", "signature_of"]

# (st_mode, st_size, st_mtime_ns, st_ctime_ns, st_ino), or None for a path that does not exist.
# The ctime catches what keeps the mtime (cp -p, rsync, tar) and cannot be set by hand.
Signature = tuple[int, int, int, int, int] | None


def signature_of(path: str) -> Signature:
    """What `lstat` says of `path` that changes when its contents or entries may have."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode) or stat.S_ISREG(info.st_mode):
        return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    return (info.st_mode, 0, 0, 0, info.st_ino)


class Witness:
    """Host paths consulted, each with its signature at first sight."""

    def __init__(self) -> None:
        self._seen: dict[str, Signature] = {}

    def saw(self, path: str) -> None:
        """Record `path` (a directory about to be listed, a file or link about to be read)."""
        if path not in self._seen:
            self._seen[path] = signature_of(path)

    @property
    def seen(self) -> Mapping[str, Signature]:
        """Every path recorded, with its signature."""
        return dict(self._seen)

    def changed_since(self, when_ns: int) -> bool:
        """True when a recorded path changed at or after `when_ns` (ctime, nanoseconds).

        Such a path may change again within the filesystem's timestamp tick without its
        signature moving (git's "racily clean" index entries), so a result that saw it is not
        kept.
        """
        return any(s is not None and s[3] >= when_ns for s in self._seen.values())

    @staticmethod
    def unchanged(seen: Iterable[tuple[str, Signature]]) -> bool:
        """True when every path still has the signature it had."""
        return all(signature_of(path) == signature for path, signature in seen)

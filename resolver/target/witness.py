"""A record of what a diagnose consulted on the host, with what `lstat` said of each then.

Two strengths of record. What was read — a directory enumerated, a file opened, a symlink's
target — is recorded whole (`saw`): mode, size, mtime, ctime and inode, so a directory that
gained or lost an entry, a file rewritten or replaced, a link re-pointed all show. What was only
looked up by name on the way — each component of a path being resolved, a soname looked for in
a search directory — is recorded as an entry (`saw_entry`): whether it exists, its type and
inode; so `/tmp` filling with other files does not count, but the looked-up name appearing,
vanishing or being replaced does. The result of a diagnose is a function of these facts (and of
the options), so it can be reused for as long as `Witness.unchanged` holds. Callers record
before they read, so a change during the run is caught on the next one.

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

# Whole: (st_mode, st_size, st_mtime_ns, st_ctime_ns, st_ino); entry: (file type, st_ino);
# None for a path that does not exist. The ctime catches what keeps the mtime (cp -p, rsync,
# tar) and cannot be set by hand.
Signature = tuple[int, ...] | None
_WHOLE = 5


def signature_of(path: str, *, whole: bool = True) -> Signature:
    """What `lstat` says of `path`: all that moves when its contents may have, or its entry."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not whole:
        return (stat.S_IFMT(info.st_mode), info.st_ino)
    if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode) or stat.S_ISREG(info.st_mode):
        return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    return (info.st_mode, 0, 0, 0, info.st_ino)


class Witness:
    """Host paths consulted, each with its signature at first sight."""

    def __init__(self) -> None:
        self._seen: dict[str, Signature] = {}
        self._disagreed = False  # a lookup saw the opposite of what a listing had said

    def saw(self, path: str) -> None:
        """Record `path` whole (a directory about to be enumerated, a file or link read)."""
        known = self._seen.get(path, ())
        if known is None or len(known) != _WHOLE:
            self._seen[path] = signature_of(path)

    def saw_entry(self, path: str, *, listed: bool) -> None:
        """Record that `path` was looked up by name; `listed`: its directory's listing had it.

        A listing taken earlier in the run that disagrees with `lstat` now means the directory
        changed during the run: the result is then not kept (`changed_since`).
        """
        if path not in self._seen:
            signature = signature_of(path, whole=False)
            self._seen[path] = signature
            self._disagreed |= (signature is not None) != listed

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
        return self._disagreed or any(s is not None and len(s) == _WHOLE and s[3] >= when_ns
                                      for s in self._seen.values())

    @staticmethod
    def unchanged(seen: Iterable[tuple[str, Signature]]) -> bool:
        """True when every path still has the signature it had (of the same strength)."""
        return all(
            signature_of(path, whole=signature is None or len(signature) == _WHOLE) == signature
            for path, signature in seen)

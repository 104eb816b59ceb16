"""Read `/etc/ld.so.conf` the way glibc's `ldconfig` does: directories and `include` globs.

`parse_ld_so_conf` turns one file's text into its lines of interest, following `parse_conf` and
`add_dir_1` in glibc's `elf/ldconfig.c`: a `#` starts a comment anywhere, leading white space
goes, `include` (then a blank) takes one or more glob patterns split at spaces and tabs,
`hwcap` lines are ignored (current ldconfig only warns; old ones named legacy hwcaps with
them), and anything else is *one* directory: ldconfig does not split a line at `:`, `,` or
blanks (glibc 2.36's skips `/a:/b` as a directory that does not exist); it drops a `=TYPE`
suffix, then trailing white space and slashes, and a line left empty (`/` is one) adds nothing.

`iter_conf_dirs` follows the includes. It never touches a filesystem: the caller's `read_text`
and `glob` see the target root (see `resolver.target.rootfs`), so every path stays inside it.
It does not stat directories: ldconfig drops duplicates by inode, here they are dropped by name, and
the system directories ldconfig always adds are the caller's to add.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["ConfKind", "ConfLine", "iter_conf_dirs", "parse_ld_so_conf"]

# C isspace in the "C" locale, which is what ldconfig's parser sees.
_SPACE = " \t\n\v\f\r"
# Include nesting deeper than this is taken for a loop the names cannot reveal (a directory
# symlinked into itself yields ever longer paths); glibc would recurse until it fails.
_MAX_DEPTH = 64


class ConfKind(enum.Enum):
    """What a line of ld.so.conf adds."""

    DIRECTORY = "directory"
    INCLUDE = "include"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfLine:
    """One directory, or one glob pattern of an `include` line, with its 1-based line number."""

    kind: ConfKind
    value: str
    lineno: int


def parse_ld_so_conf(text: str) -> tuple[ConfLine, ...]:
    """Return the directories and include patterns of one ld.so.conf text, in file order.

    An include pattern is returned as written; a relative one is resolved by `iter_conf_dirs`
    against the directory of the file that holds it.
    """
    found: list[ConfLine] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        # getline, then strchrnul(line, '#'): C strings also end at a NUL.
        line = raw.split("\0", 1)[0].split("#", 1)[0].lstrip(_SPACE)
        if not line:
            continue
        if line.startswith("include") and line[7:8] in {" ", "\t"}:
            found.extend(
                ConfLine(kind=ConfKind.INCLUDE, value=word, lineno=lineno)
                for word in _split_blanks(line[8:])
            )
        elif line[:5].lower() == "hwcap" and line[5:6] in {" ", "\t"}:
            continue
        else:
            directory = _clean_directory(line)
            if directory:
                found.append(ConfLine(kind=ConfKind.DIRECTORY, value=directory, lineno=lineno))
    return tuple(found)


def iter_conf_dirs(
    read_text: Callable[[str], str | None],
    glob: Callable[[str], list[str]],
    path: str = "/etc/ld.so.conf",
) -> Iterator[str]:
    """Yield the directories `path` names, following includes in order, each directory once.

    `read_text(path)` returns a file's text, or None when it is missing; `glob(pattern)` returns
    the paths (in the target root) that an absolute pattern matches, as glob(3) does, literal
    paths included. Matches of each pattern are read in sorted order, as glob(3) sorts them. A
    file that is already being read, or was read before, is not read again, so include cycles
    end; so does nesting deeper than 64 files.
    """
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()

    def walk(conf: str, depth: int) -> Iterator[str]:
        key = posixpath.normpath(conf)
        if key in seen_files or depth > _MAX_DEPTH:
            return
        seen_files.add(key)
        text = read_text(conf)
        if text is None:
            return
        for line in parse_ld_so_conf(text):
            if line.kind is ConfKind.DIRECTORY:
                if line.value not in seen_dirs:
                    seen_dirs.add(line.value)
                    yield line.value
                continue
            pattern = line.value
            # elf/ldconfig.c parse_conf_include: relative to the including file's directory.
            if not pattern.startswith("/") and "/" in conf:
                pattern = posixpath.join(posixpath.dirname(conf), pattern)
            for match in sorted(glob(pattern)):
                yield from walk(match, depth + 1)

    yield from walk(path, 0)


def _split_blanks(text: str) -> list[str]:
    """Split at spaces and tabs only, as glibc's `strsep` loop does, keeping non-empty words."""
    return [word for part in text.split(" ") for word in part.split("\t") if word]


def _clean_directory(line: str) -> str:
    """Return the directory of a line as elf/ldconfig.c add_dir_1 trims it ('' for none)."""
    path = line.split("=", 1)[0]
    return path.rstrip(_SPACE).rstrip("/")

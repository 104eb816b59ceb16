"""Names read from files, made safe to show: on a terminal, in a log, in XML.

A path, a DT_NEEDED name, a symlink target or an os-release field is data from the target,
and may hold anything a file name or string table can: bytes that are not UTF-8 (Python keeps
them as lone surrogates, PEP 383), control characters, terminal escapes, line breaks. Output
shows them escaped, the way Python's `repr` would, so one name stays on one line and a
terminal never interprets it.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["printable", "write_lines", "xml_text"]

# C0 and C1 controls, DEL, and lone surrogates (undecodable bytes under surrogateescape).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# What XML 1.0 allows (section 2.2): tab, LF, CR, and the planes minus surrogates, FFFE, FFFF.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control characters and undecodable bytes written as escapes (`repr` style)."""
    return _UNPRINTABLE.sub(_escape, text)


def xml_text(text: str) -> str:
    """`text` with what XML 1.0 cannot hold escaped; line breaks and tabs are kept."""
    return _NOT_XML.sub(_escape, text)


def write_lines(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Write each line, `printable`, then a newline, to `stream` (stdout by default).

    Plain text reports (status, apply's summary, recipes lint) go through here, so a name from
    a journal or a recipe stays on its line and never reaches a terminal as an escape.
    """
    out = sys.stdout if stream is None else stream
    out.write("".join(f"{printable(line)}\n" for line in lines))

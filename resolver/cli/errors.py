"""Exit codes of every command (DESIGN.md), and the one place exceptions become codes.

Commands import `fail` and `guarded` from here, never from `resolver.cli.app`, so the app can
import the commands without a cycle.
"""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, TypeVar

import typer

from resolver.errors import ResolveError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ExitCode", "fail", "guarded", "parse_gpu_arch"]

_T = TypeVar("_T")


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    FINDINGS = 1  # findings at error level (something blocks import)
    BAD_INPUT = 2  # bad usage or unreadable input
    ROLLED_BACK = 3  # apply failed and was rolled back
    ROLLBACK_INCOMPLETE = 4  # apply failed and rollback did not complete


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    sys.stderr.write(f"jetson-resolve: error: {message}\n")
    return typer.Exit(int(code))


def guarded(debug: bool, action: Callable[[], _T]) -> _T:
    """Run `action`, turning our exceptions (and OS errors) into one line and exit code 2."""
    try:
        return action()
    except (ResolveError, OSError) as err:
        if debug:
            raise
        if isinstance(err, ResolveError):
            text = str(err)
        else:
            text = f"{err.filename or ''}: {err.strerror}"
        raise fail(text.splitlines()[0] if text else type(err).__name__) from None
    except KeyboardInterrupt:
        raise fail("interrupted", ExitCode.BAD_INPUT) from None


def parse_gpu_arch(text: str | None) -> int | None:
    """`--gpu-arch` as 10*major+minor: `sm_110`, `110`, `11.0` and `sm110` all give 110."""
    if text is None:
        return None
    digits = text.lower().removeprefix("sm_").removeprefix("sm").replace(".", "")
    if not (digits.isascii() and digits.isdigit()):
        raise fail(f"--gpu-arch: expected sm_XY, XY or X.Y (e.g. sm_110, 87, 11.0), got {text!r}")
    return int(digits)

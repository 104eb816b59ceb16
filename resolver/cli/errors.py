"""Exit codes of every command (DESIGN.md), and the one place exceptions become codes.

Commands import `fail` from here, never from `resolver.cli.app`, so the app can import the
commands without a cycle. They raise; `exit_for`, called by the app around every command,
turns what they raise into one line and a code.
"""

from __future__ import annotations

import enum
import errno
import os
import sys

import typer

from resolver.errors import ResolveError

__all__ = ["ExitCode", "exit_for", "fail", "parse_gpu_arch"]


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    FINDINGS = 1  # findings at error level (something blocks import)
    BAD_INPUT = 2  # bad usage or unreadable input
    ROLLED_BACK = 3  # apply failed and was rolled back
    ROLLBACK_INCOMPLETE = 4  # apply failed and rollback did not complete
    INTERNAL = 70  # an error of ours (EX_SOFTWARE, sysexits.h): a bug, its traceback saved


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    _say(message)
    return typer.Exit(int(code))


def _say(message: str) -> None:
    from resolver.cli.text import printable  # noqa: PLC0415

    # One line however the message came: a name holding a line break is shown escaped (\x0a)
    # rather than cut there, so nothing after it is lost.
    line = printable(message.strip())
    sys.stderr.write(f"jetson-resolve: error: {line}\n")
    sys.stderr.flush()


def exit_for(err: BaseException) -> int:
    """The one place an exception becomes a line on stderr and an exit code.

    Our errors (`ResolveError`) and the operating system's (`OSError`: a file, a folder, a
    full disk, a closed pipe) are bad input or a bad environment: exit 2 with their one line.
    An interrupt is exit 2 too. Anything else is a bug of ours: exit 70, with one line saying so
    and where its traceback was saved (`--debug` raises it instead; the caller decides).
    """
    if isinstance(err, ResolveError):
        _say(str(err) or type(err).__name__)
        return ExitCode.BAD_INPUT
    if isinstance(err, OSError):
        if err.filename is not None:
            _say(f"{os.fsdecode(err.filename)}: {err.strerror or err}")
        elif err.errno == errno.ENOENT and not _working_folder_exists():
            _say("the working folder no longer exists; run from another one or give absolute "
                 "paths")
        elif err.errno in (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT):
            _say(f"cannot write the output: {err.strerror}")  # stdout: the only unnamed file
        else:
            _say(str(err.strerror or err))
        return ExitCode.BAD_INPUT
    if isinstance(err, KeyboardInterrupt):
        _say("interrupted")
        return ExitCode.BAD_INPUT
    saved = _save_traceback(err)
    where = f"its traceback is in {saved}" if saved else "its traceback could not be saved"
    _say(f"internal error, a bug in jetson-resolve ({type(err).__name__}: "
         f"{(str(err).splitlines() or [''])[0][:200]}); {where}; --debug shows it")
    return ExitCode.INTERNAL


def _working_folder_exists() -> bool:
    try:
        os.getcwd()
    except OSError:
        return False
    return True


def _save_traceback(err: BaseException) -> str | None:
    """Write the traceback to a new file under the cache folder (or the temp folder)."""
    import datetime as dt  # noqa: PLC0415 - only on a crash
    import tempfile  # noqa: PLC0415
    import traceback  # noqa: PLC0415

    from resolver import __version__  # noqa: PLC0415

    text = (f"jetson-resolve {__version__}, python {sys.version.split()[0]}\n"
            f"argv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(err)))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    from resolver.host_files import cache_home, in_process_folder  # noqa: PLC0415

    # Never into a process folder (no HOME): it is removed at exit, before anyone reads it.
    home = cache_home()
    folders = [tempfile.gettempdir()]
    if not in_process_folder(home):
        folders.insert(0, str(home / "crashes"))
    for folder in folders:
        path = os.path.join(folder, f"jetson-resolve-crash-{stamp}-{os.getpid()}.txt")
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(text)
        except OSError:
            continue
        return path
    return None


def parse_gpu_arch(text: str | None) -> int | None:
    """`--gpu-arch` as 10*major+minor: `sm_110`, `110`, `11.0` and `sm110` all give 110."""
    if text is None:
        return None
    digits = text.lower().removeprefix("sm_").removeprefix("sm").replace(".", "")
    if not (digits.isascii() and digits.isdigit()):
        raise fail(f"--gpu-arch: expected sm_XY, XY or X.Y (e.g. sm_110, 87, 11.0), got {text!r}")
    return int(digits)

"""The `jetson-resolve` command line: options in, a result object out, rendered here only.

Each command lives in `resolver.cli.commands.<name>`; this module builds the typer app and maps
our exceptions to exit codes with one line on stderr (a traceback only with `--debug`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from resolver.cli.exitcodes import ExitCode
from resolver.errors import ResolveError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["app", "fail", "get_app", "guarded", "main"]

app = typer.Typer(
    name="jetson-resolve",
    help="Find what stops a PyTorch CUDA install from loading on a target (Jetson first), and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_T = TypeVar("_T")


@app.callback()
def _root() -> None:
    """Find what stops a PyTorch CUDA install from loading on a target, and why."""


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


_registered: list[bool] = []


def get_app() -> typer.Typer:
    """The app with every command registered (each command module imported on first use)."""
    if not _registered:
        from resolver.cli.commands import check, diagnose, record  # noqa: PLC0415

        diagnose.register(app)
        record.register(app)
        check.register(app)
        _registered.append(True)
    return app


def main(argv: list[str] | None = None) -> Any:  # noqa: ANN401 - typer's return
    """Entry point of the `jetson-resolve` script and `python -m resolver`."""
    return get_app()(args=argv)

"""The `jetson-resolve` command line: options in, a result object out, rendered here only.

Each command lives in `resolver.cli.commands.<name>` and registers itself on the app built
here; exceptions become exit codes in `resolver.cli.errors`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["build_app", "main"]


_COMMANDS = ("diagnose", "plan", "apply", "rollback", "resume", "status", "record", "check",
             "recipes")


def build_app(only: str | None = None) -> typer.Typer:
    """A new app with every command registered, or only `only` when it names one.

    Registering a command costs its module's import and typer's reading of its signature;
    a run of one command needs only that one (`jetson-resolve --help` needs them all).
    """
    import importlib  # noqa: PLC0415

    import typer  # noqa: PLC0415 - a replayed result never needs it

    app = typer.Typer(
        name="jetson-resolve",
        help="Find what stops a PyTorch CUDA install from loading on a target (Jetson first), "
        "and why.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        """Find what stops a PyTorch CUDA install from loading on a target, and why."""

    for name in (only,) if only in _COMMANDS else _COMMANDS:
        importlib.import_module(f"resolver.cli.commands.{name}").register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `jetson-resolve` script and `python -m resolver`.

    A `diagnose` whose result is kept and still valid is replayed before typer is imported
    (`resolver.cli.result_cache`).
    """
    from resolver.cli.result_cache import cached_run  # noqa: PLC0415

    args = sys.argv[1:] if argv is None else argv
    only = args[0] if args else None
    raise SystemExit(cached_run(args, lambda: build_app(only)(args=args)))

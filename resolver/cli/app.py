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


def build_app() -> typer.Typer:
    """A new app with every command registered."""
    import typer  # noqa: PLC0415 - a replayed result never needs it

    from resolver.cli.commands import check, diagnose, record  # noqa: PLC0415

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

    diagnose.register(app)
    record.register(app)
    check.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `jetson-resolve` script and `python -m resolver`.

    A `diagnose` whose result is kept and still valid is replayed before typer is imported
    (`resolver.cli.result_cache`).
    """
    from resolver.cli.result_cache import cached_run  # noqa: PLC0415

    args = sys.argv[1:] if argv is None else argv
    raise SystemExit(cached_run(args, lambda: build_app()(args=args)))

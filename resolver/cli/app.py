"""The `jetson-resolve` command line: options in, a result object out, rendered here only.

Each command lives in `resolver.cli.commands.<name>` and registers itself on the app built
here; exceptions become exit codes in `resolver.cli.errors`.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["build_app", "main"]


def build_app() -> typer.Typer:
    """A new app with every command registered."""
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


def main(argv: list[str] | None = None) -> Any:  # noqa: ANN401 - typer's return
    """Entry point of the `jetson-resolve` script and `python -m resolver`."""
    return build_app()(args=argv)

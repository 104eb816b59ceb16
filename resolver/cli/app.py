"""The `jetson-resolve` command line: options in, a result object out, rendered here only.

Each command lives in `resolver.cli.commands.<name>` and registers itself on the app built
here; exceptions become exit codes in `resolver.cli.errors`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

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
        cls=_guarded_group(),
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


def _guarded_group() -> type:
    """Typer's group, with every command run inside `resolver.cli.errors.exit_for`.

    Click's own exits and usage errors pass; any other exception becomes one line and a code
    (`--debug` on the command line lets it through with its traceback).
    """
    import typer  # noqa: PLC0415
    from typer.core import TyperGroup  # noqa: PLC0415

    from resolver.cli.errors import exit_for  # noqa: PLC0415

    # typer carries its own click: its exceptions are found through the ones it exports.
    click_error: type[BaseException] = typer.BadParameter.__mro__[2]  # ClickException
    passing: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, click_error)

    class GuardedGroup(TyperGroup):
        debug = False

        def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            self.debug = "--debug" in (sys.argv[1:] if args is None else args)
            # A path the user cannot read is bad input, said by the command in one line
            # (naming the file), not refused by click's usage box before the command runs.
            commands = list(self.commands.values())
            while commands:
                command = commands.pop()
                commands += getattr(command, "commands", {}).values()  # `recipes lint`
                for param in command.params:
                    if hasattr(param.type, "readable"):
                        param.type.readable = False
            return super().main(args, *rest, **kwargs)

        def invoke(self, ctx: Any) -> Any:  # noqa: ANN401 - click's Context
            try:
                return super().invoke(ctx)
            except passing:
                raise
            except Exception as err:
                if self.debug:
                    raise
                raise typer.Exit(exit_for(err)) from None
            except KeyboardInterrupt as err:
                raise typer.Exit(exit_for(err)) from None

    return GuardedGroup


def _escape_undecodable(stream: object) -> None:
    """Write what cannot be encoded as escapes instead of raising (PEP 383 names, a C locale)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def _flush_stdout() -> None:
    """Flush stdout now, so a full disk or a closed pipe is an error we report, once.

    Raises:
        OSError: stdout cannot be written; it is pointed at /dev/null so that the
            interpreter's own flush at exit does not fail again.

    """
    import os  # noqa: PLC0415

    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `jetson-resolve` script and `python -m resolver`.

    A `diagnose` whose result is kept and still valid is replayed before typer is imported
    (`resolver.cli.result_cache`). Whatever is raised outside a command (a deleted working
    folder, stdout on a full disk) goes through the same `exit_for` as a command's errors.
    """
    from resolver.cli.result_cache import cached_run  # noqa: PLC0415

    args = sys.argv[1:] if argv is None else argv
    only = args[0] if args else None
    _escape_undecodable(sys.stdout)
    _escape_undecodable(sys.stderr)
    try:
        code = cached_run(args, lambda: build_app(only)(args=args))
        _flush_stdout()
    except Exception as err:  # outside a command: the result cache, stdout's last flush
        if "--debug" in args:
            raise
        code = _exit_for(err)
    except KeyboardInterrupt as err:
        code = _exit_for(err)
    # Once more: a write that failed inside the command (a replay) left its bytes buffered,
    # and the interpreter's flush at exit would fail on them again, after our one line.
    with contextlib.suppress(OSError):
        _flush_stdout()
    raise SystemExit(code)


def _exit_for(err: BaseException) -> int:
    # Imported on failure only: it imports typer, which a replayed result never needs.
    from resolver.cli.errors import exit_for  # noqa: PLC0415

    return exit_for(err)

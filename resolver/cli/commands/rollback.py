"""`jetson-resolve rollback`: take an apply run back, from its journal and known-good state.

Works on a finished run, a failed one kept as it was, and one a crash or power loss cut short
(the step in doubt is taken back too). Exit 0 when the known-good state is back, 4 when
something could not be put back (named), 2 when there is nothing to roll back.
"""

from __future__ import annotations

import sys

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.commands.runs_common import RunId, StateDir, locked_run
from resolver.cli.errors import ExitCode, fail
from resolver.cli.text import write_lines

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("rollback")
    def rollback_command(state_dir: StateDir = None, run_id: RunId = None,
                         as_json: opt.Json = False, debug: opt.Debug = False) -> None:  # noqa: ARG001 - --debug is read by the app
        """Put back the known-good state an apply run kept, undoing its steps newest first."""
        from resolver.apply.rollback import roll_back  # noqa: PLC0415
        from resolver.cli.commands.apply import summary_lines  # noqa: PLC0415
        from resolver.cli.render_json import dump, run_json  # noqa: PLC0415

        with locked_run(state_dir, run_id) as (run, state, executor):
            if state.outcome in ("rolled-back", "interrupted"):
                raise fail(f"run {run.id} is already rolled back")
            rolled = roll_back(run, executor)
        # The rollback asked for is done: 0; 4 when something could not be put back.
        code = ExitCode.OK if rolled.complete else ExitCode.ROLLBACK_INCOMPLETE
        if as_json:
            sys.stdout.write(dump(run_json(run, "rollback", int(code))))
        else:
            write_lines(summary_lines(run, None, rolled, code))
        raise typer.Exit(int(code))

"""`jetson-resolve resume`: finish an apply run a crash, a power loss or a kill cut short.

A step left in doubt (started, never finished) may have half run, and pip cannot say which
files it wrote; so the run is first taken back to its known-good state, then run again from
there with the options it was started with. A run that stopped between steps goes on from
where it was. Exit codes are `apply`'s.
"""

from __future__ import annotations

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.commands.runs_common import RunId, StateDir, locked_run
from resolver.cli.errors import ExitCode, fail

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("resume")
    def resume_command(state_dir: StateDir = None, run_id: RunId = None,
                       as_json: opt.Json = False, debug: opt.Debug = False) -> None:
        """Finish the latest apply run that did not end."""
        import sys  # noqa: PLC0415

        from resolver.apply.journal import rollback_unfinished  # noqa: PLC0415
        from resolver.apply.rollback import roll_back  # noqa: PLC0415
        from resolver.apply.session import ApplyRequest  # noqa: PLC0415
        from resolver.cli.commands.apply import run_and_end, stages_for  # noqa: PLC0415

        with locked_run(state_dir, run_id) as (run, state, executor):
            if state.outcome is not None:
                raise fail(f"run {run.id} already ended ({state.outcome}): nothing to resume")
            request = ApplyRequest.from_data(run.request())
            undoing = rollback_unfinished(run.records())
            if state.in_doubt is not None or undoing:
                sys.stderr.write(f"run {run.id}: step {state.in_doubt} may have half run: "
                                 "taking the run back to its known-good state first …\n"
                                 if state.in_doubt is not None else
                                 f"run {run.id}: finishing its rollback first …\n")
                rolled = roll_back(run, executor, outcome=None)
                if not rolled.complete:
                    raise fail(f"run {run.id}: its rollback did not complete; see "
                               "`jetson-resolve status`", ExitCode.ROLLBACK_INCOMPLETE)
            stages = stages_for(request)
            code = run_and_end(run, request, stages, executor,
                               rollback=bool(request.options.get("rollback_on_fail")),
                               as_json=as_json, debug=debug)
        raise typer.Exit(int(code))

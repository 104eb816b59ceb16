"""What `rollback`, `resume` and `status` share: finding the run they act on."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli.errors import fail

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resolver.apply.executor import SubprocessExecutor
    from resolver.apply.journal import RunState
    from resolver.apply.runs import Run

__all__ = ["RunId", "StateDir", "find_run", "locked_run"]

StateDir = Annotated[Path | None, typer.Option(
    "--state-dir", help="Where runs are journalled (default: $XDG_STATE_HOME/jetson-resolve).")]
RunId = Annotated[str | None, typer.Option(
    "--run", help="The run to act on (default: the latest).")]


def find_run(state_dir: Path | None, run_id: str | None) -> Run:
    """The run named `run_id`, or the latest, in the state folder.

    Raises:
        typer.Exit: there is no such run (exit 2).

    """
    from resolver.apply.runs import (  # noqa: PLC0415
        Run,
        default_state_dir,
        is_run_name,
        latest_run,
    )

    folder = state_dir or default_state_dir()
    if run_id is not None:
        candidate = folder / "runs" / run_id
        if not is_run_name(run_id) or not candidate.is_dir():
            raise fail(f"--run {run_id}: no such run in {folder / 'runs'}")
        return Run(candidate)
    run = latest_run(folder)
    if run is None:
        raise fail(f"no apply run in {folder}")
    return run


@contextlib.contextmanager
def locked_run(state_dir: Path | None, run_id: str | None
               ) -> Iterator[tuple[Run, RunState, SubprocessExecutor]]:
    """The run, where it stands and an executor on its root, with the state folder locked."""
    from resolver.apply.lock import StateLock  # noqa: PLC0415

    run = find_run(state_dir, run_id)
    lock = StateLock(run.folder.parent.parent)
    lock.__enter__()
    try:
        state = run.state()
        from resolver.apply.session import ApplyRequest  # noqa: PLC0415
        from resolver.cli.commands.apply import executor_for  # noqa: PLC0415

        request = ApplyRequest.from_data(run.request())
        yield run, state, executor_for(request, run.folder.parent.parent)
    finally:
        lock.__exit__(None, None, None)

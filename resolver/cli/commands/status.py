"""`jetson-resolve status`: where an apply run stands and what each step did, from its journal.

Exit 0 when the run ended done (or is rolled back cleanly), 1 when it failed and was kept,
3 rolled back, 4 rollback incomplete, and 1 for a run that never ended (crashed or running:
`resume` or `rollback` it).
"""

from __future__ import annotations

import sys

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.commands.runs_common import RunId, StateDir, find_run
from resolver.cli.errors import ExitCode
from resolver.cli.text import write_lines

__all__ = ["code_of_outcome", "register", "status_lines"]

_CODES = {"done": ExitCode.OK, "failed": ExitCode.FINDINGS, "rolled-back": ExitCode.ROLLED_BACK,
          "interrupted": ExitCode.ROLLED_BACK,
          "rollback-incomplete": ExitCode.ROLLBACK_INCOMPLETE}


def code_of_outcome(outcome: str | None) -> ExitCode:
    """The exit code a run's outcome stands for (an unfinished run: 1)."""
    return _CODES.get(outcome or "", ExitCode.FINDINGS)


def status_lines(document: dict[str, object]) -> list[str]:
    """The status of a run, for people, from its JSON envelope."""
    target = document["target"]
    assert isinstance(target, dict)  # noqa: S101
    outcome = document["outcome"] or (
        "not finished: it crashed or is still running (`resume` or `rollback` it)")
    lines = [f"run {document['run']}: {outcome}",
             f"  target {target['root']}, site {target['site']}"
             + (f", wheel {target['wheel']}" if target.get("wheel") else ""),
             f"  journal {document['journal']}"]
    steps = document["steps"]
    assert isinstance(steps, list)  # noqa: S101
    for step in steps:
        took = f" ({step['seconds']:.1f} s)" if step.get("seconds") is not None else ""
        lines.append(f"  step {step['number']} [{step['kind']}] {step['state']}{took}: "
                     f"{step['effect']}")
        if step.get("output"):
            lines.append("      " + (str(step["output"]).strip().splitlines() or [""])[-1])
    verified = document.get("verified")
    if isinstance(verified, dict):
        report = verified.get("report", {})
        lines.append(f"  verified: {'ok' if verified.get('ok') else 'FAILED'}: torch "
                     f"{report.get('version')}, CUDA {report.get('cuda')}")
        lines += [f"    ✗ {p}" for p in verified.get("problems", [])]
    restored = document.get("restored")
    if isinstance(restored, dict):
        lines.append(f"  restored: {', '.join(restored.get('restored', [])) or 'nothing'}; "
                     f"removed {len(restored.get('removed', []))}")
        lines += [f"    left: {t}" for t in restored.get("left", [])]
        lines += [f"    ✗ {t}" for t in restored.get("problems", [])]
    return lines


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("status")
    def status_command(state_dir: StateDir = None, run_id: RunId = None,
                       as_json: opt.Json = False, debug: opt.Debug = False) -> None:  # noqa: ARG001 - --debug is read by the app
        """Where the latest apply run stands, and what each step did."""
        from resolver.apply.journal import rollback_unfinished  # noqa: PLC0415
        from resolver.apply.lock import StateLock  # noqa: PLC0415
        from resolver.cli.render_json import dump, run_json  # noqa: PLC0415

        run = find_run(state_dir, run_id)
        state = run.state()
        holder = StateLock(run.folder.parent.parent).holder_if_held()
        unfinished = rollback_unfinished(run.records())
        code = code_of_outcome(state.outcome)
        document = run_json(run, "status", int(code))
        if as_json:
            sys.stdout.write(dump(document))
        else:
            lines = status_lines(document)
            if state.outcome is None and holder is not None:
                lines[0] = f"run {run.id}: running now ({holder})"
            elif state.outcome is None and unfinished:
                lines[0] = (f"run {run.id}: its rollback was cut short: run `jetson-resolve "
                            "rollback` again to finish it")
            write_lines(lines)
        raise typer.Exit(int(code))

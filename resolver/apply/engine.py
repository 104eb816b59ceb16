"""Running a plan: each action through an executor, journalled ahead, undone on failure.

On a failure with `rollback_on_fail`, and on Ctrl-C always, the steps that ran are undone newest
first. `apply_plan` writes `run-started`, then for each action `step-started` (fsynced) before the
executor runs it and `step-done` or `step-failed` after. When a step fails and
`rollback_on_fail` is set, or when the run is interrupted, each step that ran — the failed or
interrupted one included, since it may have half run — is undone with its planned undo commands,
newest first, each journalled (`undo-started`, `undo-done`). The run ends with `run-finished`
and its outcome: `done`, `failed` (kept as it is, as asked), `rolled-back`, or
`rollback-incomplete` (an undo failed; the journal says which). Restoring the known-good
snapshot and re-diagnosing between recipes are the caller's (the `apply` command's).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.apply.journal import Event

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resolver.apply.executor import Executor, StepOutcome
    from resolver.apply.journal import Journal
    from resolver.plan import Action

__all__ = ["ApplyOutcome", "ApplyResult", "apply_plan"]


class ApplyOutcome(enum.Enum):
    """How a run ended (DESIGN.md exit codes: 0 done, 3 rolled back, 4 rollback incomplete)."""

    DONE = "done"
    FAILED = "failed"  # a step failed and rollback was not asked for
    ROLLED_BACK = "rolled-back"
    ROLLBACK_INCOMPLETE = "rollback-incomplete"
    INTERRUPTED = "interrupted"  # Ctrl-C: rolled back, then the interrupt goes on


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyResult:
    """What a run did."""

    outcome: ApplyOutcome
    done: tuple[int, ...]
    failed: int | None
    undone: tuple[int, ...]
    not_undone: tuple[int, ...]  # steps whose undo failed
    last: StepOutcome | None  # the failing step's outcome, for its message


def _outcome_data(outcome: StepOutcome) -> dict[str, object]:
    return {"ok": outcome.ok, "returncode": outcome.returncode, "seconds": outcome.seconds,
            "ran": [list(argv) for argv in outcome.ran], "output": outcome.output}


def _undo_all(steps: Sequence[int], actions: Sequence[Action], executor: Executor,
              journal: Journal) -> tuple[list[int], list[int]]:
    """Undo `steps` newest first; (undone, not undone)."""
    undone, not_undone = [], []
    for index in reversed(steps):
        action = actions[index]
        undo = dataclasses.replace(action, argv=action.undo, writes=(), effect=action.undo_effect)
        journal.append(Event.UNDO_STARTED, step=index, data={"argv": [list(a) for a in undo.argv]})
        if not undo.argv:
            # Nothing the plan can run (a torch-wheel's snapshot, a redist's recorded files):
            # the caller's restore covers it; said in the journal, not pretended.
            journal.append(Event.UNDO_DONE, step=index, data={"by": "the caller's restore"})
            undone.append(index)
            continue
        outcome = executor.run(undo)
        if outcome.ok:
            journal.append(Event.UNDO_DONE, step=index, data=_outcome_data(outcome))
            undone.append(index)
        else:
            journal.append(Event.UNDO_FAILED, step=index, data=_outcome_data(outcome))
            not_undone.append(index)
    return undone, not_undone


def apply_plan(actions: Sequence[Action], executor: Executor, journal: Journal, *,
               rollback_on_fail: bool) -> ApplyResult:
    """Run `actions` in order (see the module docstring).

    Raises:
        KeyboardInterrupt: after rolling back, so the caller still ends the process.
        ApplyError: the journal cannot be written, or a step cannot be run at all; steps that
            ran before it are rolled back first when `rollback_on_fail` is set.

    """
    journal.append(Event.RUN_STARTED, data={"steps": len(actions)})
    ran: list[int] = []
    last: StepOutcome | None = None
    try:
        for index, action in enumerate(actions):
            journal.append(Event.STEP_STARTED, step=index, data={
                "recipe": action.recipe, "kind": action.kind.value,
                "argv": [list(a) for a in action.argv], "writes": list(action.writes)})
            ran.append(index)
            last = executor.run(action)
            if not last.ok:
                journal.append(Event.STEP_FAILED, step=index, data=_outcome_data(last))
                return _finish(actions, ran, last, executor, journal,
                               rollback=rollback_on_fail)
            journal.append(Event.STEP_DONE, step=index, data=_outcome_data(last))
    except KeyboardInterrupt:
        _, not_undone = _undo_all(ran, actions, executor, journal)
        outcome = ApplyOutcome.INTERRUPTED if not not_undone else (
            ApplyOutcome.ROLLBACK_INCOMPLETE)
        journal.append(Event.RUN_FINISHED, data={"outcome": outcome.value})
        raise
    except Exception:
        if rollback_on_fail:
            _, not_undone = _undo_all(ran, actions, executor, journal)
            outcome = (ApplyOutcome.ROLLBACK_INCOMPLETE if not_undone
                       else ApplyOutcome.ROLLED_BACK)
            journal.append(Event.RUN_FINISHED, data={"outcome": outcome.value})
        raise
    journal.append(Event.RUN_FINISHED, data={"outcome": ApplyOutcome.DONE.value})
    return ApplyResult(outcome=ApplyOutcome.DONE, done=tuple(ran), failed=None, undone=(),
                       not_undone=(), last=last)


def _finish(actions: Sequence[Action], ran: list[int], last: StepOutcome,  # noqa: PLR0913
            executor: Executor, journal: Journal, *, rollback: bool) -> ApplyResult:
    """End a run whose last step (`ran[-1]`) failed: keep it, or roll back."""
    failed = ran[-1]
    done = tuple(ran[:-1])
    if not rollback:
        journal.append(Event.RUN_FINISHED, data={"outcome": ApplyOutcome.FAILED.value})
        return ApplyResult(outcome=ApplyOutcome.FAILED, done=done, failed=failed, undone=(),
                           not_undone=(), last=last)
    undone, not_undone = _undo_all(ran, actions, executor, journal)
    outcome = ApplyOutcome.ROLLBACK_INCOMPLETE if not_undone else ApplyOutcome.ROLLED_BACK
    journal.append(Event.RUN_FINISHED, data={"outcome": outcome.value})
    return ApplyResult(outcome=outcome, done=done, failed=failed, undone=tuple(undone),
                       not_undone=tuple(not_undone), last=last)

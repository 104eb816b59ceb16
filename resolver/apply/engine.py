"""Running one round's actions: each through an executor, journalled ahead.

For each action `apply_plan` calls `before` (which keeps what the action may change, in the
run's known-good state), writes `step-started` (fsynced) with everything `rollback` needs
to take the step back (its undo commands, the files it writes and what it writes there, the
site's top-level entries before it), then runs it, and writes `step-done` or `step-failed`
with the entries it added. Step numbers run on across rounds (`start`). It stops at the first
failure; taking steps back is `resolver.apply.rollback`'s, from the journal alone, so a run
rolled back in-process and one rolled back after a crash take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from resolver.apply.journal import Event

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resolver.apply.executor import Executor, StepOutcome
    from resolver.apply.journal import Journal
    from resolver.plan import Action

__all__ = ["RoundResult", "StepHooks", "apply_plan", "outcome_data", "step_data"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """What running one round's actions did."""

    done: tuple[int, ...]  # step numbers that finished
    failed: int | None  # the step number that failed, if one did
    last: StepOutcome | None  # the last step's outcome (the failing one's, for its message)


def outcome_data(outcome: StepOutcome) -> dict[str, object]:
    """A step's outcome as journal data."""
    return {"ok": outcome.ok, "returncode": outcome.returncode, "seconds": outcome.seconds,
            "ran": [list(argv) for argv in outcome.ran], "output": outcome.output,
            "wrote": list(outcome.wrote), "created": list(outcome.created)}


def step_data(action: Action) -> dict[str, object]:
    """What the journal keeps of an action before it runs: enough to undo it after a crash."""
    return {"recipe": action.recipe, "kind": action.kind.value, "effect": action.effect,
            "argv": [list(a) for a in action.argv], "writes": list(action.writes),
            "text": f"{action.directory}\n" if action.directory else "",
            "undo": [list(a) for a in action.undo], "undo_effect": action.undo_effect,
            "creates": action.creates, "touches": list(action.touches),
            "unpack_into": action.unpack_into, "env": [list(e) for e in action.env]}


class StepHooks(Protocol):
    """What runs around each step, for the journal."""

    def before(self, action: Action) -> dict[str, object]:
        """Keep what `action` may change; data for its `step-started` record."""

    def after(self, action: Action, before: dict[str, object]) -> dict[str, object]:
        """Data for its end record, given what `before` returned."""


def apply_plan(actions: Sequence[Action], executor: Executor, journal: Journal, *,
               start: int = 0, hooks: StepHooks | None = None) -> RoundResult:
    """Run `actions` in order as steps `start`, `start + 1`, ... (see the module docstring).

    Raises:
        ApplyError: the journal cannot be written, or a step cannot be run at all.
        KeyboardInterrupt: as it came; the step it cut short stays in doubt in the journal.

    """
    done: list[int] = []
    last: StepOutcome | None = None
    for offset, action in enumerate(actions):
        number = start + offset
        extra = hooks.before(action) if hooks is not None else {}
        journal.append(Event.STEP_STARTED, step=number, data={**step_data(action), **extra})
        last = executor.run(action)
        end = {**outcome_data(last), **(hooks.after(action, extra) if hooks is not None else {})}
        if not last.ok:
            journal.append(Event.STEP_FAILED, step=number, data=end)
            return RoundResult(done=tuple(done), failed=number, last=last)
        journal.append(Event.STEP_DONE, step=number, data=end)
        done.append(number)
    return RoundResult(done=tuple(done), failed=None, last=last)

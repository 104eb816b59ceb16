"""Where runs are kept: the state folder, one folder per run, and which run is the latest.

The state folder is `--state-dir`, else `$XDG_STATE_HOME/jetson-resolve`, else
`~/.local/state/jetson-resolve` (the XDG Base Directory specification). Each run has
`runs/<id>/` holding `journal.jsonl` (`resolver.apply.journal`) and `known-good/`
(`resolver.apply.known_good`); `latest` names the newest run. The run's request (the target,
its interpreter and site, the pip sources) is the journal's first record, so `resume` and
`rollback` need nothing but the folder.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from resolver.apply.journal import Event, Journal, read_journal, state_of
from resolver.apply.known_good import KnownGood
from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import read_regular, write_atomic

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from resolver.apply.journal import Record, RunState

__all__ = ["Run", "StepSummary", "default_state_dir", "is_run_name", "latest_run", "new_run",
           "steps_of"]


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/jetson-resolve`, or `~/.local/state/jetson-resolve`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "jetson-resolve"


@dataclass(slots=True)
class Run:
    """One apply run's folder; its journal is opened once, so its records number on."""

    folder: Path
    _journal: Journal | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The run's name: its start time and process id."""
        return self.folder.name

    @property
    def journal_path(self) -> Path:
        """Its journal file."""
        return self.folder / "journal.jsonl"

    def journal(self) -> Journal:
        """The journal, opened for appending (once: every append goes through it)."""
        if self._journal is None:
            self._journal = Journal(self.journal_path)
        return self._journal

    def records(self) -> tuple[Record, ...]:
        """The journal's records.

        Raises:
            ApplyError: the journal is missing or damaged.

        """
        if not self.journal_path.is_file():
            raise ApplyError(f"{self.folder}: no journal in this run folder")
        return read_journal(self.journal_path)

    def state(self) -> RunState:
        """Where the run stands."""
        return state_of(self.records())

    def request(self) -> dict[str, object]:
        """What the run was asked to do: its `run-started` record's data.

        Raises:
            ApplyError: the journal does not start with one.

        """
        records = self.records()
        if not records or records[0].event is not Event.RUN_STARTED:
            raise ApplyError(f"{self.journal_path}: does not start with run-started")
        return dict(records[0].data)

    @property
    def known_good(self) -> KnownGood:
        """The run's known-good state."""
        return KnownGood(self.folder / "known-good")


def new_run(state_dir: Path) -> Run:
    """A new, empty run folder, named latest.

    Raises:
        ApplyError: the state folder cannot be written.

    """
    name = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    folder = state_dir / "runs" / name
    try:
        folder.mkdir(parents=True)
        write_atomic(state_dir / "latest", (name + "\n").encode("utf-8"), durable=True)
    except UnusableFile as err:
        raise ApplyError(str(err)) from None
    except OSError as err:
        raise ApplyError(f"{state_dir}: cannot start a run: {err.strerror}") from err
    return Run(folder)


def is_run_name(name: str) -> bool:
    """A name that can only be a folder inside `runs/`: not empty, `.`, `..`, nor a path."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def latest_run(state_dir: Path) -> Run | None:
    """The newest run in `state_dir`, None when there is none.

    Raises:
        ApplyError: `latest` names a run folder that is gone.

    """
    try:
        name = read_regular(state_dir / "latest", 4096, "a run pointer").decode(
            "utf-8", "surrogateescape").strip()
    except FileNotFoundError:
        return None
    except UnusableFile as err:
        raise ApplyError(str(err)) from err
    except OSError as err:
        raise ApplyError(f"{state_dir / 'latest'}: cannot read: {err.strerror}") from err
    folder = state_dir / "runs" / name
    if not is_run_name(name) or not folder.is_dir():
        raise ApplyError(f"{state_dir / 'latest'}: names {name!r}, which is not a run folder")
    return Run(folder)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSummary:
    """One step of a run as its journal tells it."""

    number: int
    recipe: str
    kind: str
    effect: str
    state: str  # done, failed, in doubt, undone, undo failed
    seconds: float | None
    output: str  # the failing command's output tail


def steps_of(records: Sequence[Record]) -> tuple[StepSummary, ...]:
    """Every step the journal records, in order, with where it ended up."""
    started: dict[int, Mapping[str, object]] = {}
    state: dict[int, str] = {}
    ended: dict[int, Mapping[str, object]] = {}
    names = {Event.STEP_STARTED: "in doubt", Event.STEP_DONE: "done",
             Event.STEP_FAILED: "failed", Event.UNDO_STARTED: "undo in doubt",
             Event.UNDO_DONE: "undone", Event.UNDO_FAILED: "undo failed"}
    for record in records:
        if record.step is None or record.event not in names:
            continue
        if record.event is Event.STEP_STARTED:
            started[record.step] = record.data
        if record.event in (Event.STEP_DONE, Event.STEP_FAILED):
            ended[record.step] = record.data
        state[record.step] = names[record.event]
    summaries = []
    for number, data in started.items():
        end = ended.get(number, {})
        seconds = end.get("seconds")
        summaries.append(StepSummary(
            number=number, recipe=str(data.get("recipe", "")), kind=str(data.get("kind", "")),
            effect=str(data.get("effect", "")), state=state[number],
            seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
            output=str(end.get("output", "")) if end.get("ok") is False else ""))
    return tuple(summaries)

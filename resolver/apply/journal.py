"""The apply journal: an append-only, fsynced JSON-lines file, written ahead of every change.

Each record is one line: `{"seq": N, "time": ..., "event": ..., ...}`. `apply` writes
`step-started` (and fsyncs) before an executor changes anything, and `step-done` or
`step-failed` after; so after a crash or a power loss at any instant the journal says which
steps certainly ran, which certainly did not, and which one is in doubt (started, never
finished). `resume` and `rollback` read it with `read_journal` and `state_of`.

A power loss can tear the last line; `read_journal` drops a torn last line (it was never
acknowledged, so its step counts as not started) but refuses damage anywhere else.
"""

from __future__ import annotations

import enum
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import MIB, describe_mode, open_regular

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = [
    "Event",
    "Journal",
    "Record",
    "RunState",
    "read_journal",
    "rollback_unfinished",
    "state_of",
]

_MAX_LINE = 1 << 20  # a record is small; a longer line is damage
_MAX_JOURNAL = 256 * MIB


class Event(enum.Enum):
    """What a journal record says happened."""

    RUN_STARTED = "run-started"
    SNAPSHOT = "snapshot"  # the known-good state was recorded
    STEP_STARTED = "step-started"
    STEP_DONE = "step-done"
    STEP_FAILED = "step-failed"
    UNDO_STARTED = "undo-started"
    UNDO_DONE = "undo-done"
    UNDO_FAILED = "undo-failed"
    ROUND = "round"  # a diagnosis between steps: data.blocking, data.findings, data.planned
    VERIFIED = "verified"  # the target interpreter's verdict: data.ok, data.report
    RESTORED = "restored"  # rollback put the known-good state back: data.restored, .problems
    ERROR = "error"  # the run stopped on an error, not a failed step: data.message
    RUN_FINISHED = "run-finished"  # data.outcome: done, rolled-back, rollback-incomplete


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One line of the journal."""

    seq: int
    time: float  # seconds since the epoch
    event: Event
    step: int | None = None  # the plan's action index, for step and undo events
    data: Mapping[str, Any] = field(default_factory=dict)


class Journal:
    """Appends records to one journal file, each on disk before `append` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existing = read_journal(path) if path.exists() else ()
        self._seq = existing[-1].seq + 1 if existing else 0
        if path.exists():
            _cut_torn_tail(path)

    def append(self, event: Event, *, step: int | None = None,
               data: Mapping[str, Any] | None = None) -> Record:
        """Write one record and fsync it (and, for a new file, its folder).

        Raises:
            ApplyError: the journal cannot be written.

        """
        record = Record(seq=self._seq, time=time.time(), event=event, step=step,
                        data=dict(data or {}))
        line = json.dumps({"seq": record.seq, "time": record.time, "event": event.value,
                           "step": step, "data": record.data}, sort_keys=True) + "\n"
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Never through a symlink, never into a FIFO or a device.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
            try:
                mode = os.fstat(fd).st_mode
                if not stat.S_ISREG(mode):
                    raise ApplyError(f"{self.path}: {describe_mode(mode)}; a journal must be a "
                                     "regular file")
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)  # the new file's name is on disk too
                finally:
                    os.close(folder)
        except OSError as err:
            raise ApplyError(f"{self.path}: cannot write the journal: {err.strerror}") from err
        self._seq += 1
        _crash_hook(record.seq)
        return record


# Tests of crash safety pick the instant: `after-record:N[:SECONDS]` kills this process and its
# children (as a power loss would) once record N is on disk, or SECONDS after it (mid-step).
_CRASH_ENV = "JETSON_RESOLVE_TEST_CRASH"


def _crash_hook(seq: int) -> None:
    spec = os.environ.get(_CRASH_ENV, "")
    if not spec.startswith("after-record:"):
        return
    number, _, delay = spec.removeprefix("after-record:").partition(":")
    if not number.isdigit() or int(number) != seq:
        return
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    def kill() -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    if delay:
        threading.Timer(float(delay), kill).start()
    else:
        kill()


def _cut_torn_tail(path: Path) -> None:
    """Cut a last line a crash left unfinished (no newline).

    The next record then starts on a line of its own; `read_journal` already counts the torn
    line as never written.

    Raises:
        ApplyError: the journal cannot be cut.

    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb+") as handle:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ApplyError(f"{path}: {describe_mode(mode)}; a journal must be a regular "
                                 "file")
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - _MAX_LINE - 1)  # a torn line is shorter than a whole one
            handle.seek(start)
            tail = handle.read()
            newline = tail.rfind(b"\n")
            end = start + newline + 1 if newline >= 0 else (0 if start == 0 else size)
            if end != size:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as err:
        raise ApplyError(f"{path}: cannot cut the journal's torn last line: {err.strerror}"
                         ) from err


def _record(raw: object, where: str) -> Record:
    if not isinstance(raw, dict):
        raise ApplyError(f"{where}: not a journal record")
    step = raw.get("step")
    data = raw.get("data") or {}
    if not isinstance(data, dict) or (step is not None and not isinstance(step, int)):
        raise ApplyError(f"{where}: not a journal record (step {step!r}, data {data!r})")
    try:
        return Record(seq=int(raw["seq"]), time=float(raw["time"]), event=Event(raw["event"]),
                      step=step, data=data)
    except (KeyError, ValueError, TypeError) as err:
        raise ApplyError(f"{where}: not a journal record ({err})") from None


def read_journal(path: Path) -> tuple[Record, ...]:
    """The records of a journal, a torn last line dropped.

    Raises:
        ApplyError: the file cannot be read, or a line other than the last is damaged, or the
            sequence numbers are out of order.

    """
    try:
        handle = open_regular(path, "a journal", follow=False)
    except UnusableFile as err:
        raise ApplyError(str(err)) from err
    except OSError as err:
        raise ApplyError(f"{path}: cannot read the journal: {err.strerror}") from err
    records: list[Record] = []
    with handle:
        if os.fstat(handle.fileno()).st_size > _MAX_JOURNAL:
            raise ApplyError(f"{path}: a journal bigger than {_MAX_JOURNAL // MIB} MiB")
        # Line by line: memory stays within one line however many lines there are.
        for number, line in enumerate(iter(lambda: handle.readline(_MAX_LINE + 1), b""), 1):
            where = f"{path}:{number}"
            if len(line) > _MAX_LINE:
                raise ApplyError(f"{where}: a journal line longer than {_MAX_LINE} bytes")
            if not line.endswith(b"\n"):
                break  # the last line, torn by a crash: dropped
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError):
                raise ApplyError(f"{where}: damaged journal line") from None
            record = _record(raw, where)
            if record.seq != len(records):
                raise ApplyError(f"{where}: record {record.seq} where {len(records)} was "
                                 "expected")
            records.append(record)
    return tuple(records)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """Where a run stands, from its journal."""

    done: tuple[int, ...]  # steps that finished, in order
    failed: tuple[int, ...]
    in_doubt: int | None  # a step that started and never finished: it may have half run
    undone: tuple[int, ...]  # steps whose undo finished
    undo_failed: tuple[int, ...]  # steps whose undo failed: left for `rollback` to retry
    snapshot: bool  # the known-good state was recorded
    outcome: str | None  # the run's end, None while it has not ended (crashed or running)


def state_of(records: Sequence[Record]) -> RunState:
    """Which steps ran, failed, were undone; which one a crash left in doubt."""
    started: dict[int, None] = {}
    done, failed, undone, undo_failed = [], [], [], []
    outcome, snapshot = None, False
    for record in records:
        if record.event is Event.SNAPSHOT:
            snapshot = True
        elif record.event is Event.STEP_STARTED and record.step is not None:
            started[record.step] = None
        elif record.event is Event.STEP_DONE and record.step is not None:
            started.pop(record.step, None)
            done.append(record.step)
        elif record.event is Event.STEP_FAILED and record.step is not None:
            started.pop(record.step, None)
            failed.append(record.step)
        elif record.event is Event.UNDO_STARTED:
            outcome = None  # a rollback began: the run's end is the rollback's, when it comes
        elif record.event is Event.UNDO_DONE and record.step is not None:
            undone.append(record.step)
        elif record.event is Event.UNDO_FAILED and record.step is not None:
            undo_failed.append(record.step)
        elif record.event is Event.RUN_FINISHED:
            outcome = str(record.data.get("outcome", "done"))
    in_doubt = next(iter(started), None)
    return RunState(done=tuple(done), failed=tuple(failed), in_doubt=in_doubt,
                    undone=tuple(undone), undo_failed=tuple(undo_failed), snapshot=snapshot,
                    outcome=outcome)


def rollback_unfinished(records: Sequence[Record]) -> bool:
    """True when a rollback began (an undo record) and did not reach its `restored` record."""
    undo = (Event.UNDO_STARTED, Event.UNDO_DONE, Event.UNDO_FAILED)
    last_undo = max((r.seq for r in records if r.event in undo), default=-1)
    last_restored = max((r.seq for r in records if r.event is Event.RESTORED), default=-1)
    return last_undo > last_restored

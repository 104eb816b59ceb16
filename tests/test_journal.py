"""The apply journal and lock: write-ahead records that survive kill -9 at any instant, a torn
last line dropped and damage elsewhere refused; one apply per state folder, the lock of a
killed holder taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from resolver.apply.journal import Event, Journal, read_journal, state_of
from resolver.apply.lock import StateLock
from resolver.errors import ApplyError

if TYPE_CHECKING:
    from pathlib import Path

# A child that journals steps forever: started, (work), done; the test kills it with -9.
_WRITER = """
import sys, time
from pathlib import Path
from resolver.apply.journal import Event, Journal
journal = Journal(Path(sys.argv[1]))
journal.append(Event.RUN_STARTED)
journal.append(Event.SNAPSHOT)
step = 0
while True:
    journal.append(Event.STEP_STARTED, step=step, data={"argv": ["pip", "install", "x" * 300]})
    time.sleep(float(sys.argv[2]))
    journal.append(Event.STEP_DONE, step=step)
    step += 1
"""


def test_state_says_what_ran_failed_and_is_in_doubt(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(Event.RUN_STARTED)
    journal.append(Event.SNAPSHOT, data={"files": 3})
    for step in (0, 1):
        journal.append(Event.STEP_STARTED, step=step)
        journal.append(Event.STEP_DONE, step=step)
    journal.append(Event.STEP_STARTED, step=2)
    state = state_of(read_journal(tmp_path / "journal.jsonl"))
    assert (state.done, state.in_doubt, state.snapshot, state.outcome) == ((0, 1), 2, True, None)
    # A new Journal on the same file continues the sequence.
    again = Journal(tmp_path / "journal.jsonl")
    again.append(Event.STEP_FAILED, step=2, data={"why": "pip exited 1"})
    again.append(Event.UNDO_STARTED, step=1)
    again.append(Event.UNDO_DONE, step=1)
    again.append(Event.RUN_FINISHED, data={"outcome": "rolled-back"})
    state = state_of(read_journal(tmp_path / "journal.jsonl"))
    assert (state.failed, state.in_doubt, state.undone, state.outcome) == (
        (2,), None, (1,), "rolled-back")
    assert [r.seq for r in read_journal(tmp_path / "journal.jsonl")] == list(range(11))


@pytest.mark.parametrize("pause", [0.0, 0.002, 0.05], ids=["racing", "short", "long"])
def test_kill_9_at_any_instant_leaves_a_journal_that_reads(tmp_path: Path, pause: float) -> None:
    path = tmp_path / "journal.jsonl"
    for attempt in range(5):
        path.unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(pause)],
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                not path.exists() or path.stat().st_size < 2000 * (attempt + 1)):
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        records = read_journal(path)
        state = state_of(records)
        assert records[0].event is Event.RUN_STARTED and state.snapshot
        # Every step that has a done record started before it; at most one is in doubt.
        assert list(state.done) == list(range(len(state.done)))
        assert state.in_doubt in (None, len(state.done))


def test_torn_last_line_is_dropped_and_damage_elsewhere_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    for step in range(3):
        journal.append(Event.STEP_STARTED, step=step)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # power lost mid-line
    assert [r.step for r in read_journal(path)] == [0, 1]
    lines = whole.split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b'{"seq": 1, "event": "step-sta', lines[2], b""]))
    with pytest.raises(ApplyError, match=r"journal.jsonl:2: damaged journal line"):
        read_journal(path)
    path.write_bytes(b"\n".join([lines[0], lines[2], b""]))
    with pytest.raises(ApplyError, match="record 2 where 1 was expected"):
        read_journal(path)
    record = json.loads(lines[0])
    record["event"] = "teleported"
    path.write_bytes(json.dumps(record).encode() + b"\n")
    with pytest.raises(ApplyError, match="not a journal record"):
        read_journal(path)


_HOLDER = """
import sys, time
from pathlib import Path
from resolver.apply.lock import StateLock
with StateLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_apply_at_a_time_and_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], text=True,
                             stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(ApplyError, match=f"another apply is running \\(pid {child.pid} on"):
            StateLock(folder).__enter__()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with StateLock(folder):  # the dead holder's lock is free; its name file is stale
        holder = json.loads((folder / "apply.holder.json").read_text())
        assert holder["pid"] == os.getpid()
    assert not (folder / "apply.holder.json").exists()


def test_a_torn_last_line_is_cut_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append(Event.RUN_STARTED)
    journal.append(Event.STEP_STARTED, step=1)
    with path.open("ab") as handle:
        handle.write(b'{"seq": 2, "event": "step-do')  # the crash cut this record short
    Journal(path).append(Event.UNDO_STARTED, step=1)
    records = read_journal(path)
    assert [r.event for r in records] == [Event.RUN_STARTED, Event.STEP_STARTED,
                                          Event.UNDO_STARTED]
    assert records[-1].seq == 2


def test_a_rollback_cut_short_leaves_the_run_unfinished(tmp_path: Path) -> None:
    from resolver.apply.journal import rollback_unfinished  # noqa: PLC0415

    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append(Event.RUN_STARTED)
    journal.append(Event.STEP_STARTED, step=1)
    journal.append(Event.STEP_DONE, step=1)
    journal.append(Event.RUN_FINISHED, data={"outcome": "done"})
    assert state_of(read_journal(path)).outcome == "done"
    journal.append(Event.UNDO_STARTED, step=1)  # `rollback`, then Ctrl-C
    records = read_journal(path)
    assert state_of(records).outcome is None and rollback_unfinished(records)
    journal.append(Event.UNDO_DONE, step=1)
    journal.append(Event.RESTORED)
    journal.append(Event.RUN_FINISHED, data={"outcome": "rolled-back"})
    records = read_journal(path)
    assert state_of(records).outcome == "rolled-back" and not rollback_unfinished(records)

"""A plan run for real on a scratch root and a throwaway venv: done, kept as it failed, rolled
back newest first (files, packages and the journal agree), a failed undo reported, Ctrl-C."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from resolver.apply.engine import ApplyOutcome, apply_plan
from resolver.apply.executor import SubprocessExecutor
from resolver.apply.journal import Event, Journal, read_journal, state_of
from resolver.plan import Action
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from pathlib import Path

    from resolver.apply.executor import StepOutcome


def _venv(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def _has_six(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import six"], check=False).returncode == 0


def _actions(root: Path, python: Path, wheels: Path, *, fail: bool) -> list[Action]:
    conf = "/etc/ld.so.conf.d/jetson-resolve-vendor.conf"
    return [
        Action(recipe="activate", method="activate", kind=StepKind.ACTIVATE, argv=(),
               effect="activate /opt/vendor/lib", writes=(conf,), directory="/opt/vendor/lib",
               fixes=("libvendor.so.1",), undo=(("rm", "-f", str(root / conf.lstrip("/"))),),
               undo_effect="remove the conf"),
        Action(recipe="six-pip", method="pip", kind=StepKind.PIP, argv=((
            str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
            "six==1.16.0"),), effect="install six", fixes=("six",),
            undo=((str(python), "-m", "pip", "uninstall", "-y", "-q", "six"),),
            undo_effect="uninstall six"),
        Action(recipe="broken", method="pip", kind=StepKind.PIP,
               argv=((sys.executable, "-c", f"raise SystemExit({1 if fail else 0})"),),
               effect="a step that fails", fixes=("x",), undo=((sys.executable, "-c", "pass"),),
               undo_effect="nothing"),
    ]


def test_done_then_failed_then_rolled_back(tmp_path: Path,
                                           six_wheels: tuple[Path, Path]) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    python = _venv(tmp_path)
    executor = SubprocessExecutor(root=root)
    conf = root / "etc" / "ld.so.conf.d" / "jetson-resolve-vendor.conf"

    ok = apply_plan(_actions(root, python, six_wheels[0].parent, fail=False), executor,
                    Journal(tmp_path / "ok.jsonl"), rollback_on_fail=True)
    assert ok.outcome is ApplyOutcome.DONE and ok.done == (0, 1, 2)
    assert conf.read_text() == "/opt/vendor/lib\n" and _has_six(python)
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "six"], check=True)
    conf.unlink()

    kept = apply_plan(_actions(root, python, six_wheels[0].parent, fail=True), executor,
                      Journal(tmp_path / "kept.jsonl"), rollback_on_fail=False)
    assert kept.outcome is ApplyOutcome.FAILED and kept.failed == 2 and kept.done == (0, 1)
    assert conf.exists() and _has_six(python)  # as asked: nothing rolled back
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "six"], check=True)
    conf.unlink()

    journal = tmp_path / "back.jsonl"
    back = apply_plan(_actions(root, python, six_wheels[0].parent, fail=True), executor,
                      Journal(journal), rollback_on_fail=True)
    assert back.outcome is ApplyOutcome.ROLLED_BACK and back.undone == (2, 1, 0)
    assert not conf.exists() and not _has_six(python)
    records = read_journal(journal)
    state = state_of(records)
    assert (state.done, state.failed, state.undone, state.outcome) == (
        (0, 1), (2,), (2, 1, 0), "rolled-back")
    # Write-ahead: every step's start is on disk before its end.
    order = [(r.event, r.step) for r in records]
    for step in (0, 1, 2):
        assert order.index((Event.STEP_STARTED, step)) < order.index(
            (Event.UNDO_DONE, step))


def test_a_failed_undo_is_reported_not_hidden(tmp_path: Path,
                                              six_wheels: tuple[Path, Path]) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    python = _venv(tmp_path)
    actions = _actions(root, python, six_wheels[0].parent, fail=True)
    actions[1] = dataclasses.replace(
        actions[1], undo=((sys.executable, "-c", "raise SystemExit(3)"),))
    result = apply_plan(actions, SubprocessExecutor(root=root),
                        Journal(tmp_path / "j.jsonl"), rollback_on_fail=True)
    assert result.outcome is ApplyOutcome.ROLLBACK_INCOMPLETE
    assert result.not_undone == (1,) and result.undone == (2, 0)
    state = state_of(read_journal(tmp_path / "j.jsonl"))
    assert state.undo_failed == (1,) and state.outcome == "rollback-incomplete"


class _Interrupting:
    """Runs steps for real, and is interrupted (Ctrl-C) in the middle of step `at`."""

    def __init__(self, inner: SubprocessExecutor, at: int) -> None:
        self.inner, self.at, self.seen = inner, at, 0

    def run(self, action: Action) -> StepOutcome:
        if self.seen == self.at:
            self.seen += 1
            raise KeyboardInterrupt
        self.seen += 1
        return self.inner.run(action)


def test_ctrl_c_always_rolls_back(tmp_path: Path, six_wheels: tuple[Path, Path]) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    python = _venv(tmp_path)
    executor = _Interrupting(SubprocessExecutor(root=root), at=2)
    with pytest.raises(KeyboardInterrupt):
        apply_plan(_actions(root, python, six_wheels[0].parent, fail=False), executor,
                   Journal(tmp_path / "j.jsonl"), rollback_on_fail=False)
    assert not (root / "etc" / "ld.so.conf.d" / "jetson-resolve-vendor.conf").exists()
    assert not _has_six(python)
    state = state_of(read_journal(tmp_path / "j.jsonl"))
    assert state.undone == (2, 1, 0) and state.outcome == "interrupted"

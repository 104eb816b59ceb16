"""Steps run for real on a scratch root and a throwaway venv, then taken back from the journal
and the known-good state alone: done, failed, a failed undo reported, Ctrl-C mid-step, and a
file someone else changed since left as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_helpers import QuietProgress

from resolver.apply.executor import SubprocessExecutor
from resolver.apply.journal import Event, state_of
from resolver.apply.known_good import list_site
from resolver.apply.rollback import roll_back
from resolver.apply.runs import new_run
from resolver.apply.session import ApplyReport, ApplyRequest, Ending, StepKeeper
from resolver.apply.snapshot import find_dist_info, verify_record
from resolver.plan import Action
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from resolver.apply.executor import StepOutcome
    from resolver.apply.runs import Run

_CONF = "/etc/ld.so.conf.d/jetson-resolve-vendor.conf"


def _site(python: Path) -> Path:
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture
def venv(tmp_path: Path, six_wheels: tuple[Path, Path]) -> Path:
    """A venv with six 1.16.0 installed by pip (its RECORD is the known-good state)."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "root" / "venv")], check=True)
    python = tmp_path / "root" / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(six_wheels[0].parent), "six==1.16.0"], check=True)
    return python


def _six(python: Path) -> str | None:
    done = subprocess.run([str(python), "-c", "import six; print(six.__version__)"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def _actions(python: Path, wheels: Path, *, fail: bool) -> list[Action]:
    return [
        Action(recipe="vendor", method="activate", kind=StepKind.ACTIVATE, argv=(),
               effect="activate /opt/vendor/lib", writes=(_CONF,), directory="/opt/vendor/lib",
               fixes=("libvendor.so.1",), undo=(), undo_effect="put the conf back"),
        Action(recipe="six-pip", method="pip", kind=StepKind.PIP, argv=((
            str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
            "six==1.17.0"),), effect="install six 1.17.0", fixes=("six",)),
        Action(recipe="broken", method="pip", kind=StepKind.APT,
               argv=((sys.executable, "-c", f"raise SystemExit({1 if fail else 0})"),),
               effect="a step that fails", fixes=("x",)),
    ]


def _start(tmp_path: Path, python: Path) -> tuple[Run, StepKeeper, Path]:
    """A run on the scratch root that holds the venv: its journal, known-good state, keeper."""
    root = tmp_path / "root"
    (root / "etc" / "ld.so.conf.d").mkdir(parents=True, exist_ok=True)
    site = "/" + _site(python).relative_to(root).as_posix()
    request = ApplyRequest(root=str(root), site=site, python=str(python), verify_argv=None)
    run = new_run(tmp_path / "state")
    run.journal().append(Event.RUN_STARTED, data=request.as_data())
    run.known_good.begin(request.site_host, root / "etc" / "ld.so.conf.d")
    return run, StepKeeper(run, request, QuietProgress()), root


def test_done_then_rolled_back_byte_for_byte(tmp_path: Path, venv: Path,
                                             six_wheels: tuple[Path, Path]) -> None:
    site = _site(venv)
    before = set(list_site(site).entries)
    run, keeper, root = _start(tmp_path, venv)
    report = ApplyReport(ending=Ending.DONE)
    assert keeper.run_round(_actions(venv, six_wheels[0].parent, fail=False),
                            SubprocessExecutor(root=root), report)
    assert [ok for _, _, ok in report.steps] == [True, True, True]
    assert (root / _CONF.lstrip("/")).read_text() == "/opt/vendor/lib\n"
    assert _six(venv) == "1.17.0"

    result = roll_back(run, SubprocessExecutor(root=root))
    assert result.complete, result.report.problems
    assert not (root / _CONF.lstrip("/")).exists()
    assert _six(venv) == "1.16.0"
    assert find_dist_info(site, "six") == "six-1.16.0.dist-info"
    assert verify_record(site, "six-1.16.0.dist-info") == ()
    assert set(list_site(site).entries) == before
    state = state_of(run.records())
    assert (state.done, state.undone, state.outcome) == ((1, 2, 3), (3, 2, 1), "rolled-back")


def test_failed_step_then_rollback(tmp_path: Path, venv: Path,
                                   six_wheels: tuple[Path, Path]) -> None:
    run, keeper, root = _start(tmp_path, venv)
    report = ApplyReport(ending=Ending.DONE)
    assert not keeper.run_round(_actions(venv, six_wheels[0].parent, fail=True),
                                SubprocessExecutor(root=root), report)
    assert [ok for _, _, ok in report.steps] == [True, True, False]
    assert state_of(run.records()).failed == (3,)
    result = roll_back(run, SubprocessExecutor(root=root))
    assert result.complete and result.undone == (3, 2, 1)
    assert _six(venv) == "1.16.0" and not (root / _CONF.lstrip("/")).exists()


def test_a_failed_undo_is_reported_not_hidden(tmp_path: Path, venv: Path,
                                              six_wheels: tuple[Path, Path]) -> None:
    import dataclasses  # noqa: PLC0415

    run, keeper, root = _start(tmp_path, venv)
    actions = _actions(venv, six_wheels[0].parent, fail=True)
    actions[2] = dataclasses.replace(actions[2],
                                     undo=((sys.executable, "-c", "raise SystemExit(3)"),))
    keeper.run_round(actions, SubprocessExecutor(root=root), ApplyReport(ending=Ending.DONE))
    result = roll_back(run, SubprocessExecutor(root=root))
    assert not result.complete and result.not_undone == (3,) and result.undone == (2, 1)
    state = state_of(run.records())
    assert state.undo_failed == (3,) and state.outcome == "rollback-incomplete"


class _Interrupting:
    """Runs steps for real; Ctrl-C arrives after step `at`'s command ran, before it ended."""

    def __init__(self, inner: SubprocessExecutor, at: int) -> None:
        self.inner, self.at, self.seen = inner, at, 0

    def run(self, action: Action) -> StepOutcome:
        self.seen += 1
        outcome = self.inner.run(action)
        if self.seen == self.at:
            raise KeyboardInterrupt
        return outcome


def test_ctrl_c_mid_step_leaves_it_in_doubt_and_rollback_takes_it_back(
        tmp_path: Path, venv: Path, six_wheels: tuple[Path, Path]) -> None:
    run, keeper, root = _start(tmp_path, venv)
    with pytest.raises(KeyboardInterrupt):
        keeper.run_round(_actions(venv, six_wheels[0].parent, fail=False),
                         _Interrupting(SubprocessExecutor(root=root), at=2),
                         ApplyReport(ending=Ending.DONE))
    assert _six(venv) == "1.17.0"  # pip finished; its step-done never reached the journal
    assert state_of(run.records()).in_doubt == 2
    result = roll_back(run, SubprocessExecutor(root=root), outcome="interrupted")
    assert result.complete
    assert _six(venv) == "1.16.0" and not (root / _CONF.lstrip("/")).exists()
    assert state_of(run.records()).outcome == "interrupted"


def test_a_file_changed_by_someone_else_is_left_and_reported(
        tmp_path: Path, venv: Path, six_wheels: tuple[Path, Path]) -> None:
    run, keeper, root = _start(tmp_path, venv)
    keeper.run_round(_actions(venv, six_wheels[0].parent, fail=False),
                     SubprocessExecutor(root=root), ApplyReport(ending=Ending.DONE))
    conf = root / _CONF.lstrip("/")
    conf.write_text("/opt/someone-elses/lib\n")
    result = roll_back(run, SubprocessExecutor(root=root))
    assert conf.read_text() == "/opt/someone-elses/lib\n"
    assert any(str(conf) in text and "someone else" in text for text in result.report.left)
    assert _six(venv) == "1.16.0"

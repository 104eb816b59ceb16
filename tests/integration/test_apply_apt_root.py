"""apt into another root, for real: a small Debian arm64 package (libatomic1) downloaded with
apt-get and placed in an arm64 root of Debian packages, through the merged-/usr symlinks, each
file recorded; a second time it is refused (its files exist); rollback removes exactly the
files it wrote (the root's tree hash is back), also when the step was cut short."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import _data
import pytest
from cli_helpers import QuietProgress

from resolver.apply.executor import SubprocessExecutor
from resolver.apply.journal import Event, state_of
from resolver.apply.rollback import roll_back
from resolver.apply.runs import new_run
from resolver.apply.session import ApplyReport, ApplyRequest, Ending, StepKeeper
from resolver.plan import Action
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from pathlib import Path

    from resolver.apply.executor import StepOutcome
    from resolver.apply.runs import Run

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("apt-get") is None,
                                reason="needs apt-get and root (the root's ldconfig chroots)")


def _action(root: Path) -> Action:
    return Action(recipe="libatomic-apt", method="apt", kind=StepKind.APT,
                  argv=(("apt-get", "download", "libatomic1:arm64"),),
                  effect="download libatomic1:arm64 and unpack it into the root",
                  fixes=("libatomic.so.1",), unpack_into=str(root))


def _start(tmp_path: Path, root: Path) -> tuple[Run, StepKeeper, SubprocessExecutor]:
    request = ApplyRequest(root=str(root), site="/usr/local/lib/python3.11/dist-packages",
                           python="python3", verify_argv=None)
    run = new_run(tmp_path / "state")
    run.journal().append(Event.RUN_STARTED, data=request.as_data())
    run.known_good.begin(request.site_host, root / "etc" / "ld.so.conf.d")
    executor = SubprocessExecutor(root=root, downloads=tmp_path / "state" / "downloads")
    return run, StepKeeper(run, request, QuietProgress()), executor


def _deb_files(folder: Path) -> list[str]:
    """What dpkg-deb says the downloaded package holds (files and links, not folders)."""
    deb = next(folder.rglob("libatomic1_*_arm64.deb"))
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    return [line.split()[5].removeprefix(".") for line in listing if not line.startswith("d")]


def test_apt_into_root_then_rollback_removes_exactly_its_files(tmp_path: Path) -> None:
    root = _data.make_arm64_root(tmp_path / "root")
    before = _data.tree_hash(root)
    run, keeper, executor = _start(tmp_path, root)
    report = ApplyReport(ending=Ending.DONE)
    assert keeper.run_round([_action(root)], executor, report), report.failed_output
    files = _deb_files(tmp_path / "state" / "downloads")
    assert files
    for path in files:  # /usr/lib/... on a merged-/usr root: placed where the loader looks
        assert os.path.lexists(root / path.lstrip("/")), path
    library = next(p for p in files if p.endswith(".so.1.2.0"))
    soname = subprocess.run(["readelf", "-d", str(root / library.lstrip("/"))],
                            capture_output=True, text=True, check=True).stdout
    assert "[libatomic.so.1]" in soname
    assert (root / "lib").is_symlink()  # the merged-/usr link is still a link

    again = ApplyReport(ending=Ending.DONE)
    assert not keeper.run_round([_action(root)], executor, again)
    assert "exists in the root already" in again.failed_output

    result = roll_back(run, executor)
    assert result.complete, result.report.problems
    assert _data.tree_hash(root) == before
    assert state_of(run.records()).outcome == "rolled-back"


class _CutShort:
    """Runs the step for real, then the process "dies" before its end is journalled."""

    def __init__(self, inner: SubprocessExecutor) -> None:
        self.inner = inner
        self.downloads = inner.downloads

    def run(self, action: Action) -> StepOutcome:
        self.inner.run(action)
        raise KeyboardInterrupt


def test_apt_step_cut_short_is_taken_back_from_its_planned_list(tmp_path: Path) -> None:
    root = _data.make_arm64_root(tmp_path / "root")
    before = _data.tree_hash(root)
    run, keeper, executor = _start(tmp_path, root)
    with pytest.raises(KeyboardInterrupt):
        keeper.run_round([_action(root)], _CutShort(executor), ApplyReport(ending=Ending.DONE))
    assert state_of(run.records()).in_doubt == 1
    result = roll_back(run, executor, outcome="interrupted")
    assert result.complete
    assert _data.tree_hash(root) == before

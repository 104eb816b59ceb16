"""Taking a run back, from its journal and known-good state alone.

The same path serves a failed run rolled back in-process, Ctrl-C, and `jetson-resolve rollback`
after a crash or a power loss. Every step that started and was not yet undone (the one a crash
left in doubt included: it may have half run) is taken back newest first: the files it wrote are
put back (unless someone changed them since), its undo commands run, and the site-packages
entries it created are noted. Then the site is put back as the known-good state kept it
(`KnownGood.restore_site`), and, when the run began from a broken torch, the known-good
build it named is installed. Each undo is journalled; the run ends `rolled-back` or, when
something could not be put back, `rollback-incomplete` with what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resolver.apply.confine import confined
from resolver.apply.engine import outcome_data
from resolver.apply.executor import PLANNED, apt_folder
from resolver.apply.journal import Event
from resolver.apply.known_good import RestoreReport, list_site
from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import MIB, read_regular
from resolver.plan import Action
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from resolver.apply.executor import Executor, StepOutcome
    from resolver.apply.runs import Run

__all__ = ["RollbackResult", "roll_back"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackResult:
    """What a rollback did."""

    undone: tuple[int, ...]  # step numbers taken back, newest first
    not_undone: tuple[int, ...]  # steps whose undo commands failed
    report: RestoreReport

    @property
    def complete(self) -> bool:
        """True when the known-good state is back."""
        return not self.not_undone and self.report.complete


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _inside(root: Path, paths: list[str], run: Run, report: RestoreReport) -> list[Path]:
    """The journal's `paths` under `root`; one that leads outside is a problem, never acted on.

    The journal is our own file, but it lies in the user's state folder: a damaged one must
    not make a rollback remove or write anything outside the root (`resolver.apply.confine`).
    """
    kept = []
    for path in paths:
        try:
            kept.append(confined(root, path, f"{run.folder}/journal.jsonl"))
        except ApplyError as err:
            report.problems.append(f"{err}; not taken back")
    return kept


def _take_back_files(run: Run, root: Path, data: dict[str, object],
                     report: RestoreReport) -> None:
    """Put back the files a step wrote, and remove the folder it created whole."""
    written = {str(path): str(data.get("text", ""))
               for path in _inside(root, _strings(data.get("writes")), run, report)}
    run.known_good.restore_files(written, report)
    created = data.get("created")
    if isinstance(created, str):
        for folder in _inside(root, [created], run, report):
            if not folder.is_dir() or folder.is_symlink():
                continue
            shutil.rmtree(folder)  # a redist prefix and the folders made for it, whole
            report.removed.append(str(folder))


def _take_back_unpacked(run: Run, root: Path, data: dict[str, object], *,  # noqa: PLR0913
                        end: dict[str, object] | None, executor: Executor,
                        report: RestoreReport) -> None:
    """Remove the files an apt-into-root step placed, and the folders it made for them.

    A step that ended says what it wrote; one a crash cut short is taken back from the list
    its executor wrote before the first file (`PLANNED`), each file that exists removed.
    """
    if not data.get("unpack_into"):
        return
    if end is not None:
        paths, created = _strings(end.get("wrote")), _strings(end.get("created"))
    else:
        downloads = getattr(executor, "downloads", None)
        argv = [_strings(a) for a in data.get("argv", []) or []]  # type: ignore[attr-defined]
        planned = apt_folder(downloads, argv) / PLANNED if downloads else None
        try:
            listed = json.loads(read_regular(planned, 16 * MIB)) if planned else {}
        except (OSError, UnusableFile, ValueError, RecursionError):
            listed = {}  # it never got to write a file
        paths = _strings(listed.get("files")) if isinstance(listed, dict) else []
        created = _strings(listed.get("created")) if isinstance(listed, dict) else []
    for target in _inside(root, paths, run, report):
        if os.path.lexists(target) and not target.is_dir():
            target.unlink()
            report.removed.append("/" + target.relative_to(root).as_posix())
    for folder in reversed(_inside(root, created, run, report)):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _run_undo(executor: Executor, data: dict[str, object]) -> StepOutcome | None:
    """Run a step's undo commands; the outcome when they failed, else None."""
    undo = tuple(tuple(_strings(argv)) for argv in data.get("undo", []) or [])  # type: ignore[attr-defined]
    if not undo:
        return None
    outcome = executor.run(Action(
        recipe=str(data.get("recipe", "")), method="undo",
        kind=StepKind(str(data.get("kind", "pip"))), argv=undo,
        effect=str(data.get("undo_effect", ""))))
    return None if outcome.ok else outcome


def roll_back(run: Run, executor: Executor, *, outcome: str | None = "rolled-back"
              ) -> RollbackResult:
    """Take back every step of `run` not yet undone, then restore its known-good state.

    `outcome` is what the run ends as when the rollback completes (`rolled-back`, or
    `interrupted` after Ctrl-C); None leaves the run open (`resume` starts it over).

    Raises:
        ApplyError: the journal or the known-good state cannot be read or written.

    """
    records = run.records()
    request = run.request()
    root = Path(str(request.get("root", "/")))
    site = Path(str(request["site_host"]))
    journal = run.journal()
    state = run.state()
    started = {r.step: dict(r.data) for r in records
               if r.event is Event.STEP_STARTED and r.step is not None}
    ended = {r.step: dict(r.data) for r in records
             if r.event in (Event.STEP_DONE, Event.STEP_FAILED) and r.step is not None}
    report = RestoreReport()
    undone: list[int] = []
    not_undone: list[int] = []
    added: set[str] = set()
    for step in sorted(set(started) - set(state.undone), reverse=True):
        data = started[step]
        journal.append(Event.UNDO_STARTED, step=step, data={"undo": data.get("undo", [])})
        _take_back_files(run, root, data, report)
        _take_back_unpacked(run, root, data, end=ended.get(step), executor=executor,
                            report=report)
        if step in ended:
            added.update(_strings(ended[step].get("added")))
        else:  # in doubt: whatever appeared in the site since it started is its doing
            added.update(set(list_site(site).entries) - set(_strings(data.get("entries"))))
        failed = _run_undo(executor, data)
        # The caches its commands (and its undo's) rewrote go back as they were kept.
        run.known_good.put_back(_inside(root, _strings(data.get("touches")), run, report))
        if failed is not None:
            journal.append(Event.UNDO_FAILED, step=step, data=outcome_data(failed))
            not_undone.append(step)
            continue
        journal.append(Event.UNDO_DONE, step=step)
        undone.append(step)
    report_site = run.known_good.restore_site(site, added, since=records[0].time)
    report.restored += report_site.restored
    report.removed += report_site.removed
    report.pruned += report_site.pruned
    report.left += report_site.left
    report.problems += report_site.problems
    known_good = _strings(request.get("known_good_argv"))
    # A run that ends falls back to the known-good build it named; one `resume` takes back
    # goes on from the state it began in.
    if known_good and not report.problems and outcome is not None:
        installed = executor.run(Action(
            recipe="known-good", method="pip", kind=StepKind.PIP, argv=(tuple(known_good),),
            effect="install the known-good torch",
            merge_into=str(site) if str(root) != "/" else None))
        if not installed.ok:
            said = (installed.output.strip().splitlines() or ["no output"])[-1]
            report.problems.append(f"the known-good torch did not install: {said}")
    journal.append(Event.RESTORED, data={
        "restored": report.restored, "removed": report.removed, "pruned": report.pruned,
        "left": report.left, "problems": report.problems})
    complete = not not_undone and report.complete
    if complete and outcome is not None:
        # The run ends with everything kept back in place: the copies (hundreds of MB for
        # torch) go. (`resume` keeps them: the run goes on from the known-good state.)
        shutil.rmtree(run.known_good.folder / "dists", ignore_errors=True)
    if outcome is not None or not complete:
        journal.append(Event.RUN_FINISHED,
                       data={"outcome": outcome if complete else "rollback-incomplete"})
    return RollbackResult(undone=tuple(undone), not_undone=tuple(not_undone), report=report)

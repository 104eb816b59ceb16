"""One apply run: keep the known-good state, fix one recipe per round, re-diagnose, verify.

`run_apply` is the loop the `apply` and `resume` commands share. Before anything changes it
records the site and the `ld.so.conf.d` entries (`KnownGood.begin`); before each step it keeps
what that step may change: the files it writes, the caches its commands rewrite, and the
distributions pip will replace (pip's own `--dry-run --report` says which; torch always, for a
step that installs torch). With `--wheel`, installing the wheel is the first round. Each round
diagnoses, plans (torch's own missing requirements first, `resolver.plan`), and runs the first
recipe's steps of the plan (a recipe's steps belong together: a download and its activation),
so the next round plans from what is there now. The loop ends when nothing is left to do, when
a round makes no progress (the same findings as before it), or after `max_rounds`. Then the
target's own interpreter verifies (`resolver.apply.verify`).

Diagnosing and planning are passed in (`Stages`), so this module depends on no command line;
what the user sees is told through `Progress`.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from resolver.apply.engine import apply_plan
from resolver.apply.executor import pip_would_install
from resolver.apply.journal import Event
from resolver.apply.known_good import list_site
from resolver.apply.runs import steps_of
from resolver.apply.verify import Expectation, Verdict, judge, run_verification
from resolver.errors import ApplyError
from resolver.findings.model import MissingLibrary, Severity
from resolver.plan import STAGING, Action
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from resolver.apply.executor import Executor, StepOutcome
    from resolver.apply.journal import Journal
    from resolver.apply.runs import Run
    from resolver.diagnose import Diagnosis
    from resolver.findings.model import Finding
    from resolver.plan import Plan

__all__ = [
    "ApplyReport",
    "ApplyRequest",
    "Ending",
    "Progress",
    "Stages",
    "StepKeeper",
    "run_apply",
    "wheel_action",
]

# The driver library: a machine without a GPU has none, and no recipe should install one there.
_DRIVER = "libcuda.so.1"


class Ending(enum.Enum):
    """How a run ended, before any rollback."""

    DONE = "done"  # nothing blocks, verified
    DONE_WITH_FINDINGS = "done-with-findings"  # torch works; findings no recipe fixes remain
    STEP_FAILED = "step-failed"
    STUCK = "stuck"  # findings block import and no round fixes them
    NOT_VERIFIED = "not-verified"  # the target interpreter says it does not work


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyRequest:
    """What a run is asked to do; kept as the journal's first record."""

    root: str  # host path of the target root; "/" is this machine
    site: str  # torch's site-packages, in the root's namespace
    python: str  # the interpreter the plan's commands name
    verify_argv: tuple[str, ...] | None  # how to run the target's interpreter here
    wheel: str | None = None  # --wheel: installed first
    pip_sources: tuple[str, ...] = ()  # pip options that say where packages come from
    pip_platform: tuple[str, ...] = ()  # another root: pip's options for its platform
    known_good_argv: tuple[str, ...] = ()  # installs the known-good torch, when the current
    # one is broken before the run (rollback installs it)
    max_rounds: int = 8
    options: Mapping[str, object] = field(default_factory=dict)  # the command line's choices
    # that diagnose and plan take (as JSON values), so `resume` plans as the run did

    @property
    def site_host(self) -> Path:
        """The site-packages folder as a path on this machine."""
        return Path(self.root) / self.site.lstrip("/")

    def as_data(self) -> dict[str, object]:
        """The request as journal data."""
        return {"root": self.root, "site": self.site, "site_host": str(self.site_host),
                "python": self.python, "verify_argv": list(self.verify_argv or ()),
                "wheel": self.wheel, "pip_sources": list(self.pip_sources),
                "pip_platform": list(self.pip_platform),
                "known_good_argv": list(self.known_good_argv), "max_rounds": self.max_rounds,
                "options": dict(self.options)}

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> ApplyRequest:
        """The request a journal's `run-started` record holds.

        Raises:
            ApplyError: the record is not one `as_data` wrote.

        """
        try:
            verify = data["verify_argv"]
            options = data.get("options") or {}
            return cls(
                root=str(data["root"]), site=str(data["site"]), python=str(data["python"]),
                verify_argv=tuple(str(a) for a in verify) or None,  # type: ignore[attr-defined]
                wheel=str(data["wheel"]) if data.get("wheel") else None,
                pip_sources=tuple(str(a) for a in data["pip_sources"]),  # type: ignore[attr-defined]
                pip_platform=tuple(str(a) for a in data.get("pip_platform") or ()),  # type: ignore[attr-defined]
                known_good_argv=tuple(str(a) for a in data["known_good_argv"]),  # type: ignore[attr-defined]
                max_rounds=int(data["max_rounds"]),  # type: ignore[call-overload]
                options=dict(options) if isinstance(options, dict) else {})
        except (KeyError, TypeError, ValueError) as err:
            raise ApplyError(f"the run's first record is not an apply request ({err})") from None


@dataclass(frozen=True, slots=True)
class Stages:
    """The pure stages the loop calls: diagnose the target as it is now, plan from that."""

    diagnose: Callable[[], Diagnosis]
    plan: Callable[[Diagnosis], Plan]


class Progress(Protocol):
    """What the user is told while a run goes on."""

    def round(self, number: int, diagnosis: Diagnosis, plan: Plan) -> None:
        """A round begins: what diagnose found and what will run."""

    def step(self, number: int, action: Action) -> None:
        """A step begins."""

    def step_done(self, number: int, outcome: StepOutcome) -> None:
        """A step ended."""

    def verifying(self) -> None:
        """The target interpreter is about to verify."""


@dataclass(slots=True, kw_only=True)
class ApplyReport:
    """What a run did, for the command to render and turn into an exit code."""

    ending: Ending
    rounds: int = 0
    steps: list[tuple[int, str, bool]] = field(default_factory=list)  # (number, effect, ok)
    failed_output: str = ""  # the failing step's output tail
    remaining: tuple[tuple[str, str], ...] = ()  # (what is wanted, why nothing fixes it)
    blocking: int = 0  # findings that still block import at the end
    verdict: Verdict | None = None
    no_driver: bool = False  # the target has no NVIDIA driver and no GPU: CUDA is not checked

    @property
    def failed(self) -> bool:
        """True when the run did not reach a working torch."""
        return self.ending in (Ending.STEP_FAILED, Ending.STUCK, Ending.NOT_VERIFIED)


def _signature(diagnosis: Diagnosis) -> tuple[str, ...]:
    """The findings, as a comparable value: a round that leaves it unchanged made no progress."""
    return tuple(sorted(f"{type(f).__name__}:{f.severity.value}:{f}" for f in
                        diagnosis.findings))


def _first_recipe(actions: Sequence[Action]) -> list[Action]:
    """The leading actions of one recipe: a round's work."""
    first = actions[0]
    group = [first]
    for action in actions[1:]:
        if (action.recipe, action.method) != (first.recipe, first.method):
            break
        group.append(action)
    return group


def _no_driver(diagnosis: Diagnosis) -> bool:
    """True when the target has no GPU to drive: no GPU named, no L4T release, no driver."""
    platform = diagnosis.platform
    return platform.gpu_arch is None and platform.l4t is None and platform.driver is None


def _driver_finding(finding: Finding) -> bool:
    return isinstance(finding, MissingLibrary) and finding.soname == _DRIVER


class StepKeeper:
    """Keeps what each step may change, and numbers the steps across rounds."""

    def __init__(self, run: Run, request: ApplyRequest, progress: Progress) -> None:
        self.run = run
        self.request = request
        self.progress = progress
        # Steps are numbered from 1, on across rounds and a resumed run.
        self.next = 1 + max((r.step for r in run.records() if r.step is not None), default=0)

    def before(self, action: Action) -> dict[str, object]:
        """Keep the files `action` writes and the distributions it may replace."""
        known = self.run.known_good
        site = self.request.site_host
        for path in (*action.writes, *action.touches):
            known.keep_file(Path(self.request.root) / path.lstrip("/"))
        if action.kind in (StepKind.PIP, StepKind.TORCH_WHEEL, StepKind.SOURCE_BUILD):
            # pip replaces what its own dry-run says it installs; a torch step, torch always.
            names = set() if action.kind is StepKind.PIP else {"torch"}
            for argv in action.argv:
                names.update(pip_would_install(argv))
            for name in sorted(names):
                known.keep_dist(site, name)
        self.progress.step(self.next, action)
        return {"entries": list(list_site(site).entries),
                "created": _first_missing(Path(self.request.root), action.creates)}

    def after(self, _action: Action, before: dict[str, object]) -> dict[str, object]:
        """The site's top-level entries the step added."""
        entries = before.get("entries")
        was = set(entries) if isinstance(entries, list) else set()
        return {"added": sorted(set(list_site(self.request.site_host).entries) - was)}

    def run_round(self, actions: Sequence[Action], executor: Executor,
                  report: ApplyReport) -> bool:
        """Run one round's actions; False when a step failed."""
        result = apply_plan(actions, executor, self.run.journal(), start=self.next, hooks=self)
        count = len(result.done) + (result.failed is not None)
        for offset, action in enumerate(actions[:count]):
            number = self.next + offset
            ok = number != result.failed
            report.steps.append((number, action.effect, ok))
            if result.last is not None and offset == count - 1:
                self.progress.step_done(number, result.last)
        self.next += count
        if result.failed is not None:
            report.failed_output = result.last.output if result.last else ""
            return False
        return True


def _wheel_in_place(request: ApplyRequest) -> bool:
    """True when the site's torch is already the version of `request.wheel` (PEP 427 name)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename  # noqa: PLC0415
    from packaging.version import InvalidVersion, Version  # noqa: PLC0415

    from resolver.apply.snapshot import find_dist_info  # noqa: PLC0415

    try:
        name, version, _, _ = parse_wheel_filename(os.path.basename(request.wheel or ""))
    except InvalidWheelFilename:
        return False
    dist_info = find_dist_info(request.site_host, name) if request.site_host.is_dir() else None
    if dist_info is None:
        return False
    try:
        return Version(dist_info.removesuffix(".dist-info").rsplit("-", 1)[-1]) == version
    except InvalidVersion:
        return False


def _first_missing(root: Path, folder: str | None) -> str | None:
    """The outermost folder of `folder` (root's namespace) that does not exist yet.

    It is what a step that creates `folder` creates, taken away whole by its undo.
    """
    if folder is None:
        return None
    missing = None
    current = folder.rstrip("/")
    while current and current != "/":
        if os.path.lexists(root / current.lstrip("/")):
            break
        missing = current
        current = os.path.dirname(current)
    return missing


def wheel_action(request: ApplyRequest) -> Action:
    """The first step of `apply --wheel W`: pip installs W in place of the current torch."""
    assert request.wheel is not None  # noqa: S101 - only called with a wheel
    argv = [request.python, "-m", "pip", "install", *request.pip_sources]
    other = request.root != "/"
    if other:  # as the plan does for another root: into a staging folder, merged after
        argv += [*request.pip_platform, "--target", str(request.site_host / STAGING)]
    else:
        argv += ["--upgrade"]
    return Action(recipe="wheel", method="pip", kind=StepKind.TORCH_WHEEL,
                  argv=((*argv, request.wheel),),
                  merge_into=str(request.site_host) if other else None,
                  effect=f"install {os.path.basename(request.wheel)} in place of the current "
                  "torch", fixes=("torch",),
                  undo_effect="put the site's distributions back as the snapshot kept them")


def run_apply(run: Run, request: ApplyRequest, stages: Stages, executor: Executor,
              progress: Progress) -> ApplyReport:
    """Run (or, on a run with a journal, resume) the loop of the module docstring.

    Raises:
        ApplyError: the journal or the known-good state cannot be written, or a step cannot
            be run at all.
        KeyboardInterrupt: as it came; the caller rolls back.

    """
    journal = run.journal()
    fresh = not run.journal_path.exists()
    if fresh:
        journal.append(Event.RUN_STARTED, data=request.as_data())
    root = Path(request.root)
    listing = run.known_good.begin(request.site_host, root / "etc" / "ld.so.conf.d")
    if fresh:
        journal.append(Event.SNAPSHOT, data={"entries": len(listing.entries),
                                             "freeze": run.known_good.freeze()})
    steps = StepKeeper(run, request, progress)
    report = ApplyReport(ending=Ending.DONE)
    installed = any(s.recipe == "wheel" and s.state == "done" for s in steps_of(run.records()))
    if (request.wheel and not installed and not _wheel_in_place(request)
            and not steps.run_round([wheel_action(request)], executor, report)):
        report.ending = Ending.STEP_FAILED
        return _finish(journal, report)
    seen: set[tuple[str, ...]] = set()
    diagnosis = stages.diagnose()
    while True:
        plan = stages.plan(diagnosis)
        signature = _signature(diagnosis)
        journal.append(Event.ROUND, data={
            "round": report.rounds, "blocking": sum(
                f.severity is Severity.BLOCKS_IMPORT for f in diagnosis.findings),
            "findings": len(diagnosis.findings),
            "planned": [a.effect for a in plan.actions],
            "unfixable": [list(u) for u in plan.unfixable]})
        progress.round(report.rounds, diagnosis, plan)
        if not plan.actions or signature in seen or report.rounds >= request.max_rounds:
            break
        seen.add(signature)
        report.rounds += 1
        if not steps.run_round(_first_recipe(plan.actions), executor, report):
            report.ending = Ending.STEP_FAILED
            return _finish(journal, report)
        diagnosis = stages.diagnose()
    return _conclude(steps, diagnosis, plan, report)


def _conclude(steps: StepKeeper, diagnosis: Diagnosis, plan: Plan, report: ApplyReport
              ) -> ApplyReport:
    """Judge the last diagnosis, verify, and end the run's journal."""
    journal, request, progress = steps.run.journal(), steps.request, steps.progress
    report.no_driver = _no_driver(diagnosis)
    report.remaining = tuple(u for u in plan.unfixable
                             if not (report.no_driver and u[0] == _DRIVER))
    report.blocking = sum(f.severity is Severity.BLOCKS_IMPORT for f in diagnosis.findings)
    if diagnosis.blocks_import or plan.actions:
        report.ending = Ending.STUCK
        return _finish(journal, report)
    if request.verify_argv:
        progress.verifying()
        torch = diagnosis.torch
        expect = Expectation(
            cuda_build=bool(torch and torch.cuda), gpu_arch=diagnosis.platform.gpu_arch,
            gpu_present=not report.no_driver and not any(
                _driver_finding(f) for f in diagnosis.findings))
        raw, seconds = run_verification(request.verify_argv)
        report.verdict = judge(raw, expect, seconds)
        journal.append(Event.VERIFIED, data={"ok": report.verdict.ok,
                                             "problems": list(report.verdict.problems),
                                             "report": dict(raw), "seconds": seconds})
        if not report.verdict.ok:
            report.ending = Ending.NOT_VERIFIED
            return _finish(journal, report)
    report.ending = Ending.DONE_WITH_FINDINGS if report.remaining else Ending.DONE
    return _finish(journal, report)


def _finish(journal: Journal, report: ApplyReport) -> ApplyReport:
    """End the journal of a run that worked.

    A failed run is ended by the caller: kept as it is, or rolled back.
    """
    if not report.failed:
        journal.append(Event.RUN_FINISHED, data={
            "outcome": "done", "ending": report.ending.value,
            "remaining": [list(u) for u in report.remaining]})
    return report

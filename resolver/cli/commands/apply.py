"""`jetson-resolve apply`: fix what diagnose finds, one recipe per round, verify, roll back.

It builds what a run needs from the command line (the target, its interpreter and site, where
pip gets packages, the known-good torch) and hands it to `resolver.apply.session`; what the
user sees while it runs comes through `ShownProgress`, on stderr, and the summary on stdout.
Exit codes: 0 done; 1 findings remain that no recipe fixes (torch works), or a failed run kept
as it is; 2 bad usage or input; 3 failed and rolled back; 4 failed and rollback incomplete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from packaging.utils import canonicalize_name

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.commands.plan import pip_platform_options
from resolver.cli.commands.runs_common import StateDir  # noqa: TC001 - typer reads it
from resolver.cli.errors import ExitCode, fail
from resolver.cli.text import write_lines

if TYPE_CHECKING:
    from collections.abc import Mapping

    from resolver.apply.executor import (
        DryRunExecutor,
        Executor,
        StepOutcome,
        SubprocessExecutor,
    )
    from resolver.apply.rollback import RollbackResult
    from resolver.apply.runs import Run
    from resolver.apply.session import ApplyReport, ApplyRequest, Stages
    from resolver.diagnose import Diagnosis
    from resolver.plan import Action, Plan

__all__ = ["ShownProgress", "executor_for", "register", "run_and_end", "stages_for"]

_PROBE = ("import importlib.util, json, sys, sysconfig; s = importlib.util.find_spec('torch'); "
          "print(json.dumps({'torch': s.origin if s else None, "
          "'purelib': sysconfig.get_paths()['purelib'], "
          "'version': '%d.%d' % sys.version_info[:2]}))")

class ShownProgress:
    """Tells the user, on stderr, each round, step and how it ended (a spinner on a TTY)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._status: object | None = None
        self._started = 0.0

    def _say(self, text: str) -> None:
        if not self.quiet:
            write_lines([text], sys.stderr)
            sys.stderr.flush()

    def round(self, number: int, diagnosis: Diagnosis, plan: Plan) -> None:
        """A round: what blocks, and what runs next."""
        blocking = sum(f.severity.value == "blocks-import" for f in diagnosis.findings)
        later = len(diagnosis.findings) - blocking
        what = f"{blocking} blocking import, {later} breaking a feature later"
        nxt = f"; next: {plan.actions[0].recipe}" if plan.actions else "; nothing left to run"
        self._say(f"round {number + 1}: {what}{nxt}")

    def step(self, number: int, action: Action) -> None:
        """A step starts."""
        self._started = time.monotonic()
        text = f"step {number}: {action.effect}"
        if not self.quiet and sys.stderr.isatty():
            from rich.console import Console  # noqa: PLC0415

            status = Console(stderr=True, highlight=False).status(text)
            status.start()
            self._status = status
        else:
            self._say(text + " …")

    def step_done(self, number: int, outcome: StepOutcome) -> None:
        """A step ended."""
        if self._status is not None:
            self._status.stop()  # type: ignore[attr-defined]
            self._status = None
        spent = time.monotonic() - self._started
        said = "done" if outcome.ok else f"FAILED (exit {outcome.returncode})"
        self._say(f"step {number}: {said} in {spent:.1f} s")
        if not outcome.ok and outcome.output.strip():
            self._say("  " + outcome.output.strip().splitlines()[-1])

    def verifying(self) -> None:
        """The target's interpreter verifies."""
        self._say("verifying with the target's interpreter …")


def probe_interpreter(python: str) -> dict[str, str | None]:
    """Where this interpreter installs (purelib), its torch if any, and its version.

    Raises:
        typer.Exit: the interpreter cannot be run or does not answer.

    """
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                              check=False, timeout=60)
        info = json.loads(done.stdout.strip().splitlines()[-1])
        return {k: (str(v) if v is not None else None) for k, v in info.items()}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, AttributeError):
        raise fail(f"--python {python}: cannot run this interpreter") from None


def _interpreter_in_root(root: Path, version: str | None) -> Path | None:
    """The root's python3 (as a path on this machine), following links inside the root."""
    from resolver.target.rootfs import RootFS  # noqa: PLC0415

    fs = RootFS(str(root))
    for name in ([f"/usr/bin/python{version}"] if version else []) + ["/usr/bin/python3"]:
        resolved = fs.resolve(name)
        if resolved.ok and resolved.real is not None and fs.kind_of(resolved.real) == "file":
            return root / resolved.real.lstrip("/")
    return None


def verify_argv_for(root: Path, machine: str, python_version: str | None, site: str
                    ) -> tuple[tuple[str, ...] | None, str]:
    """How to run the target's interpreter here: natively, or under qemu-user; and why not."""
    import shutil  # noqa: PLC0415

    in_site = re.search(r"python(\d+\.\d+)", site)  # .../lib/python3.11/dist-packages
    interpreter = _interpreter_in_root(root, in_site.group(1) if in_site else python_version)
    if interpreter is None:
        return None, f"{root} has no /usr/bin/python3 to verify with"
    if machine == os.uname().machine:
        if os.geteuid() != 0:
            return None, "verifying in another root of this architecture needs chroot (root)"
        inside = "/" + interpreter.relative_to(root).as_posix()
        return ("chroot", str(root), "env", f"PYTHONPATH={site}", inside), ""
    qemu = shutil.which(f"qemu-{machine}-static") or shutil.which(f"qemu-{machine}")
    if qemu is None:
        return None, f"no qemu-{machine}-static here to run the root's {machine} interpreter"
    return (qemu, "-L", str(root), "-E", f"PYTHONPATH={site}", str(interpreter)), ""


def _source_args(options: Mapping[str, object]) -> dict[str, Any]:
    """`make_source`'s arguments from a request's options (JSON values)."""
    def path(key: str) -> Path | None:
        value = options.get(key)
        return Path(str(value)) if value else None

    def text(key: str) -> str | None:
        value = options.get(key)
        return str(value) if value is not None else None

    return {"python": text("python"), "site_packages": path("site_packages"), "wheel": None,
            "root": path("root"), "ld_library_path": text("ld_library_path"),
            "gpu_arch": text("gpu_arch"), "no_cache": bool(options.get("no_cache"))}


def stages_for(request: ApplyRequest) -> Stages:
    """Diagnose and plan as `diagnose` and `plan` do, each round afresh.

    They take the options the run was started with (`request.options`).
    """
    from resolver.apply.session import Stages  # noqa: PLC0415
    from resolver.cli.commands.diagnose import (  # noqa: PLC0415
        make_source,
        match_fixes,
        run_diagnose,
    )
    from resolver.cli.commands.plan import plan_options  # noqa: PLC0415
    from resolver.plan import make_plan  # noqa: PLC0415

    options = request.options
    source_args = _source_args(options)
    recipes = Path(str(options["recipes"])) if options.get("recipes") else None
    wheelhouse = Path(str(options["wheelhouse"])) if options.get("wheelhouse") else None

    def diagnose() -> Diagnosis:
        source = make_source(**source_args)
        return run_diagnose(source)[0]

    def plan(result: Diagnosis) -> Plan:
        source = make_source(**source_args)
        fixes = match_fixes(result, recipes)
        prefer = options.get("prefer")
        planned = plan_options(result, source, prefer=str(prefer) if prefer else None,
                               no_root=bool(options.get("no_root")), wheelhouse=wheelhouse,
                               source_build=bool(options.get("source_build")))
        planned = dataclasses.replace(planned, python=request.python,
                                      pip_sources=request.pip_sources)
        return make_plan(fixes, planned)

    return Stages(diagnose=diagnose, plan=plan)


def finish_failed(run: Run, report: ApplyReport, executor: Executor, *,
                  rollback: bool) -> tuple[ExitCode, RollbackResult | None]:
    """End a failed run: roll it back when asked, else keep it as it is."""
    from resolver.apply.journal import Event  # noqa: PLC0415
    from resolver.apply.rollback import roll_back  # noqa: PLC0415

    if not rollback:
        run.journal().append(Event.RUN_FINISHED, data={"outcome": "failed",
                                                       "ending": report.ending.value})
        return ExitCode.FINDINGS, None
    sys.stderr.write("rolling back …\n")
    result = roll_back(run, executor)
    code = ExitCode.ROLLED_BACK if result.complete else ExitCode.ROLLBACK_INCOMPLETE
    return code, result


def summary_lines(run: Run, report: ApplyReport | None, rolled: RollbackResult | None,
                  code: ExitCode) -> list[str]:
    """The end of a run, for people."""
    from resolver.apply.session import Ending  # noqa: PLC0415

    lines = [f"run {run.id} (journal: {run.journal_path})"]
    if report is not None:
        for number, effect, ok in report.steps:
            lines.append(f"  {'✓' if ok else '✗'} step {number}: {effect}")
        if report.verdict is not None:
            got = report.verdict.report
            lines.append(f"  verified: torch {got.get('version')}, CUDA "
                         f"{got.get('cuda') or 'none (a CPU build)'}, cuDNN "
                         f"{got.get('cudnn') or 'none'}, CUDA available: "
                         f"{'yes' if got.get('cuda_available') else 'no'}")
            lines += [f"  ✗ {problem}" for problem in report.verdict.problems]
        if report.no_driver:
            lines.append("  · no NVIDIA driver or GPU on this target: CUDA itself is not "
                         "checked here")
        lines += [f"  ✗ not fixed: {wanted}: {why}" for wanted, why in report.remaining]
        ending = {Ending.DONE: "done", Ending.DONE_WITH_FINDINGS: "done; findings remain that "
                  "no recipe fixes", Ending.STEP_FAILED: "a step failed",
                  Ending.STUCK: f"stuck: {report.blocking} finding(s) still block import and "
                  "no recipe fixes them", Ending.NOT_VERIFIED: "the target's interpreter "
                  "says torch does not work"}[report.ending]
        lines.append(ending)
    if rolled is not None:
        restored = ", ".join(rolled.report.restored)
        lines.append(f"rolled back {len(rolled.undone)} step(s)"
                     + (f"; put back {restored}" if restored else "")
                     + (f"; removed {len(rolled.report.removed)} file(s) and folder(s) it had "
                        "added" if rolled.report.removed else ""))
        lines += [f"  left: {text}" for text in rolled.report.left]
        lines += [f"  ✗ {text}" for text in rolled.report.problems]
    elif report is not None and report.failed:
        lines.append("kept as it is: `jetson-resolve rollback` takes it back")
    lines.append(f"exit {int(code)}")
    return lines


def register(app: typer.Typer) -> None:  # noqa: C901, PLR0915 - one command's options and flow
    """Add the command to the app."""

    @app.command("apply")
    def apply_command(  # noqa: C901, PLR0912, PLR0915
        python: opt.Python = None,
        site_packages: opt.SitePackages = None,
        wheel: Annotated[Path | None, typer.Option(
            "--wheel", help="Install this torch wheel first, then make it work here.")] = None,
        root: opt.Root = None,
        ld_library_path: opt.LdLibraryPath = None,
        gpu_arch: opt.GpuArch = None,
        recipes: opt.Recipes = None,
        prefer: opt.Prefer = None,
        offline: opt.Offline = False,
        wheelhouse: opt.Wheelhouse = None,
        index_url: Annotated[str | None, typer.Option(
            "--index-url", help="pip's package index.")] = None,
        find_links: Annotated[list[str] | None, typer.Option(
            "--find-links", help="More places pip may find wheels (repeatable).")] = None,
        no_root: opt.NoRoot = False,
        source_build: opt.SourceBuild = False,
        rollback_on_fail: Annotated[bool, typer.Option(
            "--rollback-on-fail", help="Put the known-good state back if the run fails.",
        )] = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Say what the first round would run; change nothing.")] = False,
        max_rounds: Annotated[int, typer.Option(
            "--max-rounds", min=1, max=100, help="Stop after this many rounds.")] = 8,
        redist_mirror: Annotated[str | None, typer.Option(
            "--redist-mirror", help="A server holding NVIDIA's redist tree (https, or a "
            "loopback http address): NVIDIA's archives are fetched from it.")] = None,
        download_timeout: Annotated[float, typer.Option(
            "--download-timeout", min=1, help="Seconds a download may wait for the server "
            "before it fails (retried with backoff first).")] = 60.0,
        known_good: Annotated[str | None, typer.Option(
            "--known-good", help="The torch to fall back to when the current one is already "
            "broken (a pip requirement: torch==2.13.0).")] = None,
        state_dir: StateDir = None,
        no_cache: opt.NoCache = False,
        as_json: opt.Json = False,
        debug: opt.Debug = False,
    ) -> None:
        """Fix what diagnose finds, round by round; verify; roll back on failure if asked."""
        from resolver.apply.executor import DryRunExecutor, pip_would_install  # noqa: PLC0415
        from resolver.apply.lock import StateLock  # noqa: PLC0415
        from resolver.apply.runs import default_state_dir, new_run  # noqa: PLC0415
        from resolver.apply.session import ApplyRequest  # noqa: PLC0415
        from resolver.cli.commands.plan import check_plan_flags  # noqa: PLC0415
        from resolver.plan import STAGING  # noqa: PLC0415

        check_plan_flags(prefer=prefer, offline=offline, wheelhouse=wheelhouse)
        if wheel is not None:
            _check_wheel(wheel)
        if known_good is not None:
            from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

            try:
                if canonicalize_name(Requirement(known_good).name) != "torch":
                    raise fail(f"--known-good {known_good}: not a torch requirement")
            except InvalidRequirement as err:
                said = str(err).splitlines()[0]  # packaging adds the text and a caret below
                raise fail(f"--known-good {known_good!r}: not a pip requirement ({said})"
                           ) from None
        if python is not None and (site_packages is not None or root is not None):
            raise fail("give --python for this machine, or --root with --site-packages")
        target_root = Path(os.path.abspath(root or "/"))
        live = str(target_root) == "/"
        pip_sources: list[str] = []
        if wheelhouse is not None:
            pip_sources += ["--no-index", "--find-links", str(wheelhouse.resolve())]
        elif index_url:
            pip_sources += ["--index-url", index_url]
        for link in find_links or ():
            pip_sources += ["--find-links", link]

        if live:
            interpreter = python or sys.executable
            info = probe_interpreter(interpreter)
            site_host = Path(str(info["torch"])).parent.parent if info["torch"] else Path(
                str(info["purelib"]))
            if site_packages is not None:
                raise fail("on this machine, give --python (its torch), not --site-packages")
            site = str(site_host)
            plan_python = interpreter
            verify_argv: tuple[str, ...] | None = (interpreter,)
            why_no_verify = ""
            has_torch = info["torch"] is not None
        else:
            if site_packages is None:
                raise fail("give --site-packages DIR (inside --root) for another root")
            site_host = site_packages.resolve()
            try:
                site = "/" + site_host.relative_to(target_root.resolve()).as_posix()
            except ValueError:
                raise fail(f"--site-packages {site_packages}: not inside --root {root}"
                           ) from None
            plan_python = sys.executable
            has_torch = (site_host / "torch" / "__init__.py").is_file()
            verify_argv, why_no_verify = None, ""
        options: dict[str, object] = {
            "python": (python or sys.executable) if live else None,
            "site_packages": None if live else str(site_host),
            "root": None if live else str(target_root), "ld_library_path": ld_library_path,
            "gpu_arch": gpu_arch, "no_cache": no_cache, "prefer": prefer, "no_root": no_root,
            "wheelhouse": str(wheelhouse.resolve()) if wheelhouse else None,
            "source_build": source_build, "recipes": str(recipes.resolve()) if recipes else None,
            "rollback_on_fail": rollback_on_fail, "redist_mirror": redist_mirror,
            "download_timeout": download_timeout}
        source_args = _source_args(options)
        known_good_argv: tuple[str, ...] = ()
        first: Diagnosis | None = None
        if has_torch:
            from resolver.cli.commands.diagnose import make_source, run_diagnose  # noqa: PLC0415

            first = run_diagnose(make_source(**source_args))[0]
        elif not live:
            raise fail(f"--site-packages {site_packages}: no torch installed there; on another "
                       "root apply reads the target from the torch it fixes (install one first)")
        pip_platform = pip_platform_options(first) if first is not None and not live else ()
        staging = ("--target", str(site_host / STAGING)) if not live else ()
        if first is not None and first.blocks_import and rollback_on_fail:
            spec = known_good or _cpu_recipe(first, recipes)
            if spec is None:
                raise fail("the installed torch is already broken and no known-good build "
                           "fits this target: name one with --known-good torch==X.Y.Z")
            known_good_argv = (plan_python, "-m", "pip", "install", *pip_platform,
                               *staging, *pip_sources, spec)
            if not pip_would_install(known_good_argv):
                raise fail(f"the installed torch is already broken, and the known-good "
                           f"build to roll back to ({spec}) cannot be installed from these "
                           "sources: name one that can with --known-good, or add it to "
                           "the wheelhouse")
        if not live and first is not None:
            machine = first.platform.arch
            python_version = (f"{first.platform.python.major}.{first.platform.python.minor}"
                              if first.platform.python else None)
            verify_argv, why_no_verify = verify_argv_for(target_root, machine, python_version,
                                                         site)
        request = ApplyRequest(
            root=str(target_root), site=site, python=plan_python, verify_argv=verify_argv,
            wheel=str(wheel.absolute()) if wheel else None, pip_sources=tuple(pip_sources),
            pip_platform=pip_platform,
            known_good_argv=known_good_argv, max_rounds=max_rounds,
            options=options)
        stages = stages_for(request)
        if dry_run:
            _dry_run(request, stages, DryRunExecutor(), first, as_json=as_json)
            raise typer.Exit(int(ExitCode.OK))
        if why_no_verify:
            sys.stderr.write(f"jetson-resolve: note: {why_no_verify}; the run is judged by "
                             "diagnose alone\n")
        folder = state_dir or default_state_dir()
        lock = StateLock(folder)
        lock.__enter__()
        try:
            run = new_run(folder)
            sys.stderr.write(f"run {run.id}: journal {run.journal_path}\n")
            executor = executor_for(request, folder)
            code = run_and_end(run, request, stages, executor, rollback=rollback_on_fail,
                               as_json=as_json, debug=debug)
        finally:
            lock.__exit__(None, None, None)
        raise typer.Exit(int(code))


def executor_for(request: ApplyRequest, state_dir: Path) -> SubprocessExecutor:
    """The executor of a run: on its root, archives kept in the state folder, its mirror."""
    from resolver.apply.download import Fetcher  # noqa: PLC0415
    from resolver.apply.executor import SubprocessExecutor  # noqa: PLC0415

    mirror = request.options.get("redist_mirror")
    timeout = request.options.get("download_timeout")
    return SubprocessExecutor(
        root=Path(request.root), downloads=state_dir / "downloads",
        mirror=str(mirror) if mirror else None,
        fetcher=Fetcher(read_timeout=float(timeout) if isinstance(timeout, (int, float))
                        else 60.0))


def run_and_end(run: Run, request: ApplyRequest, stages: Stages, executor: Executor, *,
                rollback: bool, as_json: bool, debug: bool) -> ExitCode:
    """Run (or resume) `run`, end it as asked, print the summary; the exit code.

    Ctrl-C always rolls back; an error that stops the run rolls back when `rollback` is set.
    """
    from resolver.apply.journal import Event  # noqa: PLC0415
    from resolver.apply.rollback import roll_back  # noqa: PLC0415
    from resolver.apply.session import run_apply  # noqa: PLC0415
    from resolver.errors import ResolveError  # noqa: PLC0415

    progress = ShownProgress(quiet=as_json)
    rolled = None
    try:
        report = run_apply(run, request, stages, executor, progress)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: rolling back …\n")
        rolled = roll_back(run, executor, outcome="interrupted")
        code = ExitCode.ROLLED_BACK if rolled.complete else ExitCode.ROLLBACK_INCOMPLETE
        _emit(run, None, rolled, code, as_json=as_json)
        return code
    except (ResolveError, OSError) as err:
        if debug:
            raise
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        sys.stderr.write(f"jetson-resolve: error: {text}\n")
        with contextlib.suppress(ResolveError, OSError):  # said on stderr already
            run.journal().append(Event.ERROR, data={"message": text})
        if not rollback:
            return ExitCode.BAD_INPUT
        rolled = roll_back(run, executor)
        code = ExitCode.ROLLED_BACK if rolled.complete else ExitCode.ROLLBACK_INCOMPLETE
        _emit(run, None, rolled, code, as_json=as_json)
        return code
    if report.failed:
        code, rolled = finish_failed(run, report, executor, rollback=rollback)
    else:
        code = ExitCode.FINDINGS if report.remaining else ExitCode.OK
    _emit(run, report, rolled, code, as_json=as_json)
    return code


def _check_wheel(wheel: Path) -> None:
    """Refuse (exit 2) a --wheel that is not a readable torch wheel (PEP 427 name, a zip)."""
    import zipfile  # noqa: PLC0415

    from packaging.utils import InvalidWheelFilename, parse_wheel_filename  # noqa: PLC0415

    if not wheel.is_file():
        raise fail(f"--wheel {wheel}: no such file" if not wheel.exists()
                   else f"--wheel {wheel}: not a regular file")
    try:
        name = parse_wheel_filename(wheel.name)[0]
    except InvalidWheelFilename as err:
        raise fail(f"--wheel {wheel}: not a wheel's file name ({err})") from None
    if name != "torch":
        raise fail(f"--wheel {wheel}: a wheel of {name}, not of torch")
    if not zipfile.is_zipfile(wheel):
        raise fail(f"--wheel {wheel}: not a zip archive, so not a wheel")


def _cpu_recipe(first: Diagnosis, recipes: Path | None) -> str | None:
    """The requirement of the first known-good CPU torch recipe that fits the target."""
    from resolver.recipes.database import load_database  # noqa: PLC0415
    from resolver.recipes.match import target_of, why_not  # noqa: PLC0415
    from resolver.shipped_data import recipes_root  # noqa: PLC0415

    database = load_database(recipes or recipes_root())
    target = target_of(first.platform, None)
    for recipe in database:
        if recipe.id.startswith("torch-cpu-known-good") and why_not(recipe.applies,
                                                                    target) is None:
            for method in recipe.methods:
                for step in method.steps:
                    if step.requirements:
                        return str(step.requirements[0])
    return None


def _dry_run(request: ApplyRequest, stages: Stages, executor: DryRunExecutor,
             first: Diagnosis | None, *, as_json: bool) -> None:
    """Print what the first round would run.

    With --wheel that is installing it; the rounds after depend on what the re-diagnosis finds.
    """
    from resolver.apply.session import wheel_action  # noqa: PLC0415

    actions = [wheel_action(request)] if request.wheel else (
        list(stages.plan(first).actions) if first is not None else [])
    for action in actions:
        executor.run(action)
    later = ["then each round diagnoses the installed wheel again and plans from that"
             ] if request.wheel else []
    if as_json:
        from resolver.cli.render_json import dump  # noqa: PLC0415

        sys.stdout.write(dump({"schema": 2, "command": "apply", "dry_run": True,
                               "would": executor.log, "then": later}))
        return
    write_lines(executor.log + later or ["nothing to do"])


def _emit(run: Run, report: ApplyReport | None, rolled: RollbackResult | None,
          code: ExitCode, *, as_json: bool) -> None:
    if as_json:
        from resolver.cli.render_json import dump, run_json  # noqa: PLC0415

        sys.stdout.write(dump(run_json(run, "apply", int(code))))
    else:
        write_lines(summary_lines(run, report, rolled, code))

"""Executors: the only code that changes anything. Each runs one planned action.

`SubprocessExecutor` writes the files an action names (an `ld.so.conf.d` entry: to a temporary
file in the same folder, fsynced, renamed into place, never through an existing symlink) and
runs its argument lists with no shell, each with a timeout, stopping at the first that fails
(a cherry-pick that does not apply cleanly stops a source build there). Some actions do more
than commands: a redist step downloads its pinned archive and unpacks it
(`resolver.apply.unpack`), an apt step for another root places the downloaded packages' files
(`resolver.apply.debs`), a pip step for another root merges pip's staging folder into the site
(`resolver.apply.snapshot.merge_tree`). A step that needs root is refused, in one line, when
this process is not root. `DryRunExecutor` is its twin that changes nothing: it says what it
would do.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from resolver.apply.confine import confined
from resolver.apply.debs import place_in_root, planned_paths
from resolver.apply.download import Fetcher, mirrored
from resolver.apply.snapshot import merge_tree
from resolver.apply.unpack import unpack_archive
from resolver.errors import ApplyError, ResolveError, UnusableFile
from resolver.host_files import MIB, read_regular, write_atomic
from resolver.plan import STAGING, Action
from resolver.recipes.redist import MAX_MANIFEST_BYTES, find_archive, parse_manifest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = [
    "PLANNED",
    "DryRunExecutor",
    "Executor",
    "StepOutcome",
    "SubprocessExecutor",
    "apt_folder",
    "pip_would_install",
]

_TAIL = 2000  # characters of a command's output kept for the journal


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """What running one action did."""

    ok: bool
    ran: tuple[tuple[str, ...], ...]  # the argument lists run (or, dry, that would be)
    wrote: tuple[str, ...] = ()  # files written, in the root's namespace
    created: tuple[str, ...] = ()  # folders created for them, outermost first
    returncode: int | None = None  # of the last command run
    output: str = ""  # the tail of the failing command's stdout and stderr
    seconds: float = 0.0


class Executor(Protocol):
    """Runs one action; the only way anything changes."""

    def run(self, action: Action) -> StepOutcome:
        """Run `action`; a failed command is an outcome, not an exception.

        Raises:
            ApplyError: the action cannot be run at all (unsupported, unwritable file).

        """
        ...


def _runnable(action: Action) -> None:
    if not action.argv and not action.writes and action.redist is None:
        raise ApplyError(f"{action.recipe}: a {action.kind.value} step cannot be run yet "
                         f"({action.effect})")


@dataclass(slots=True)
class DryRunExecutor:
    """Changes nothing; remembers what it would have run."""

    log: list[str] = field(default_factory=list)

    def run(self, action: Action) -> StepOutcome:
        """Say what `action` would do."""
        _runnable(action)
        self.log += [f"would write {path}: {action.directory}" for path in action.writes]
        self.log += [f"would run: {shlex.join(argv)}" for argv in action.argv]
        if action.merge_into is not None:
            self.log.append(f"would merge {STAGING} into {action.merge_into}, file by file")
        if action.redist is not None:
            self.log.append(f"would download and unpack: {action.effect}")
        return StepOutcome(ok=True, ran=action.argv, wrote=action.writes)


@dataclass(slots=True)
class SubprocessExecutor:
    """Runs actions for real on the root at `root` (a host path; "/" is this machine)."""

    root: Path
    timeout: float = 3600.0  # seconds per command: a CUDA wheel install is minutes, not hours
    env: Mapping[str, str] | None = None
    downloads: Path | None = None  # where redist archives are kept (default: a temporary one)
    mirror: str | None = None  # serves NVIDIA's redist tree: replaces the manifest's origin
    fetcher: Fetcher = field(default_factory=Fetcher)

    def _apt_into_root(self, action: Action, started: float) -> StepOutcome:
        """`apt-get download` the packages, then place their files in the root, recorded."""
        folder = apt_folder(self.downloads or self.root / "tmp", action.argv)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        failed = self._commands(action.argv, started, cwd=folder)
        if failed is not None:
            return failed
        ran = action.argv
        try:
            planned = planned_paths(self.root, sorted(folder.glob("*.deb")))
            # The list is on disk before the first file is: a crash mid-way is taken back
            # from it (`resolver.apply.rollback`).
            folders = sorted({"/" + d.relative_to(self.root).as_posix()
                              for place, _, _ in planned
                              for d in (self.root / place.lstrip("/")).parents
                              if self.root in d.parents and not os.path.lexists(d)})
            write_atomic(folder / PLANNED, json.dumps(
                {"files": [p for p, _, _ in planned], "created": folders}).encode("utf-8"),
                durable=True)
            written, created = place_in_root(self.root, planned)
        except ApplyError as err:
            return StepOutcome(ok=False, ran=tuple(ran), output=str(err).splitlines()[0],
                               seconds=time.monotonic() - started)
        return StepOutcome(ok=True, ran=tuple(ran), wrote=tuple(written),
                           created=tuple(created), returncode=0,
                           seconds=time.monotonic() - started)

    def _redist(self, action: Action, started: float) -> StepOutcome:
        """Download the pinned archive (checked before use) and unpack it under the prefix."""
        step = action.redist
        if step is None or step.prefix is None:
            raise ApplyError(f"{action.recipe}: a redist step without its archive and prefix")
        url = mirrored(step.manifest_url or "", self.mirror)
        ran = (("download", url),)
        try:
            manifest = parse_manifest(self.fetcher.fetch_bytes(url, MAX_MANIFEST_BYTES), url=url)
            archive = find_archive(manifest, step, url=url)
            with tempfile.TemporaryDirectory(prefix="jetson-resolve-") as scratch:
                folder = self.downloads or Path(scratch)
                folder.mkdir(parents=True, exist_ok=True)
                saved = self.fetcher.download(archive, folder)
                written = unpack_archive(
                    saved, confined(self.root, step.prefix, f"{action.recipe}: redist prefix"))
        except ResolveError as err:
            return StepOutcome(ok=False, ran=ran, output=str(err).splitlines()[0],
                               seconds=time.monotonic() - started)
        return StepOutcome(ok=True, ran=ran, wrote=tuple(written), returncode=0,
                           seconds=time.monotonic() - started)

    def _write(self, action: Action, path: str) -> None:
        """Write the file naming the action's folder (an ld.so.conf.d file), one line."""
        target = confined(self.root, path, f"{action.recipe}: a file to write")
        directory = action.directory or ""
        confined(self.root, directory, f"{action.recipe}: the folder to activate")  # one line
        if target.is_symlink():
            raise ApplyError(f"{target}: refusing to write through a symlink")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, f"{directory}\n".encode(), durable=True)
        except (OSError, UnusableFile) as err:
            raise ApplyError(f"{target}: cannot write: {getattr(err, 'strerror', None) or err}"
                             ) from err

    def run(self, action: Action) -> StepOutcome:
        """Write the action's files, then run its commands in order."""
        _runnable(action)
        started = time.monotonic()
        if action.needs_root and os.geteuid() != 0 and str(self.root) == "/":
            raise ApplyError(f"{action.recipe}: this step needs root ({action.effect}); run "
                             "apply as root, or with --no-root for steps inside the "
                             "environment only")
        if action.redist is not None:
            return self._redist(action, started)
        if action.unpack_into is not None:
            return self._apt_into_root(action, started)
        for path in action.writes:
            self._write(action, path)
        if action.merge_into is not None:  # a staging folder a crash left: start clean
            shutil.rmtree(Path(action.merge_into) / STAGING, ignore_errors=True)
        failed = self._commands(action.argv, started, wrote=action.writes,
                                env=dict(action.env) if action.env else None)
        if failed is not None:
            return failed
        ran = action.argv
        if action.merge_into is not None:
            try:
                merge_tree(Path(action.merge_into) / STAGING, Path(action.merge_into))
            except OSError as err:
                return StepOutcome(ok=False, ran=tuple(ran), wrote=action.writes,
                                   output=f"merging into {action.merge_into}: {err}",
                                   seconds=time.monotonic() - started)
        return StepOutcome(ok=True, ran=tuple(ran), wrote=action.writes, returncode=0,
                           seconds=time.monotonic() - started)

    def _commands(self, argv_lists: Sequence[Sequence[str]], started: float, *,
                  wrote: tuple[str, ...] = (), cwd: Path | None = None,
                  env: Mapping[str, str] | None = None) -> StepOutcome | None:
        """Run each argument list in turn (no shell); the outcome of the first that fails.

        `env` is added to this executor's environment (a recipe's build settings).
        """
        environment = ({**(self.env or os.environ), **env} if env else
                       dict(self.env) if self.env is not None else None)
        ran: list[tuple[str, ...]] = []
        for argv in argv_lists:
            ran.append(tuple(argv))
            try:
                done = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                                      timeout=self.timeout, env=environment, cwd=cwd)
            except (OSError, subprocess.TimeoutExpired) as err:
                return StepOutcome(ok=False, ran=tuple(ran), wrote=wrote,
                                   output=str(err)[-_TAIL:], seconds=time.monotonic() - started)
            if done.returncode != 0:
                return StepOutcome(ok=False, ran=tuple(ran), wrote=wrote,
                                   returncode=done.returncode,
                                   output=(done.stdout + done.stderr)[-_TAIL:],
                                   seconds=time.monotonic() - started)
        return None


PLANNED = "planned.json"  # beside the downloaded packages: the files an apt step will write


def apt_folder(downloads: Path, argv: Sequence[Sequence[str]]) -> Path:
    """Where an apt-into-root step downloads its packages (named by its commands)."""
    import hashlib  # noqa: PLC0415

    key = hashlib.sha256(json.dumps([list(a) for a in argv]).encode()).hexdigest()[:16]
    return downloads / "apt" / key


def pip_would_install(argv: Sequence[str]) -> list[str]:
    """The distributions `pip install` (`argv`) would install: pip's own `--dry-run --report`.

    It changes nothing; the names are those apply keeps before the step runs. An empty list
    when pip cannot say (the real step will fail the same way).
    """
    if "install" not in argv:
        return []
    at = list(argv).index("install") + 1
    with tempfile.TemporaryDirectory(prefix="jetson-resolve-") as folder:
        report = Path(folder) / "report.json"
        try:
            subprocess.run([*argv[:at], "--dry-run", "--quiet", "--report", str(report),
                            *argv[at:]], capture_output=True, check=False, timeout=600)
            data = json.loads(read_regular(report, 64 * MIB, "a pip report"))
        except (OSError, UnusableFile, ValueError, RecursionError, subprocess.SubprocessError):
            return []
    return [str(item["metadata"]["name"]) for item in data.get("install", [])
            if isinstance(item, dict) and "metadata" in item]

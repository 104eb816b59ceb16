"""The known-good state of a run, kept in its folder before anything changes, and put back.

What is kept (`<run>/known-good/`):
- `state.json`: the site's top-level entries and its distributions (`name==version`, the
  site's own `pip freeze`), the `ld.so.conf.d` entries with their sha256, and for every file a
  step will write, its bytes before (or that it did not exist);
- `dists/<dist-info>/`: a byte-for-byte copy of each distribution a step may replace
  (`resolver.apply.snapshot`), taken before that step runs: torch always, and what pip's own
  dry-run report says it will reinstall.

`restore_site` puts the site back: distributions the run added are removed (only the files
whose bytes are still the ones their RECORD lists; another's change is reported and left),
kept ones restored and checked against their RECORD hashes, and files a crash left inside a
kept distribution's folders that no RECORD claims are removed. `restore_files` puts the
written files back, unless someone else changed them since the run wrote them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from resolver.apply.confine import confined_name
from resolver.apply.snapshot import (
    find_dist_info,
    parse_record,
    restore_snapshot,
    take_snapshot,
    verify_record,
)
from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import MIB, read_regular, write_atomic

__all__ = ["KnownGood", "RestoreReport", "SiteListing", "list_site"]

_STATE = "state.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteListing:
    """A site-packages folder at one instant: its top-level names and its distributions."""

    entries: tuple[str, ...]  # sorted top-level names
    dists: dict[str, str]  # canonical name -> dist-info folder name


def list_site(site: Path) -> SiteListing:
    """The top-level entries and the installed distributions of `site` (empty when absent)."""
    try:
        names = sorted(os.listdir(site))
    except FileNotFoundError:
        return SiteListing(entries=(), dists={})
    except OSError as err:
        raise ApplyError(f"{site}: cannot list: {err.strerror}") from err
    dists = {str(canonicalize_name(name.removesuffix(".dist-info").rsplit("-", 1)[0])): name
             for name in names if name.endswith(".dist-info")}
    return SiteListing(entries=tuple(names), dists=dists)


def _version(dist_info: str) -> str:
    return dist_info.removesuffix(".dist-info").rsplit("-", 1)[-1]


def _sha256_or_none(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_regular(path, 16 * MIB, "a configuration file")).hexdigest()
    except FileNotFoundError:
        return None


@dataclass(slots=True, kw_only=True)
class RestoreReport:
    """What putting the known-good state back did."""

    restored: list[str] = field(default_factory=list)  # distributions put back
    removed: list[str] = field(default_factory=list)  # distributions and entries taken away
    pruned: int = 0  # stray files removed from a kept distribution's folders
    left: list[str] = field(default_factory=list)  # changed by someone else: reported, kept
    problems: list[str] = field(default_factory=list)  # what could not be put back

    @property
    def complete(self) -> bool:
        """True when everything kept is back as it was."""
        return not self.problems


class KnownGood:
    """The known-good state of one run, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _state(self) -> dict[str, object]:
        try:
            state = json.loads(read_regular(self.folder / _STATE, 16 * MIB, "a known-good state"))
        except FileNotFoundError:
            return {}
        except UnusableFile as err:
            raise ApplyError(str(err)) from None
        except (OSError, ValueError, RecursionError) as err:
            why = err.strerror if isinstance(err, OSError) else err
            raise ApplyError(f"{self.folder / _STATE}: cannot read the known-good state: "
                             f"{why}") from None
        if not isinstance(state, dict):
            raise ApplyError(f"{self.folder / _STATE}: not a known-good state")
        return state

    def _save(self, state: dict[str, object]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / _STATE,
                     json.dumps(state, indent=1, sort_keys=True).encode("utf-8"), durable=True)

    @property
    def taken(self) -> bool:
        """True once `begin` has recorded the site."""
        return "site" in self._state()

    def begin(self, site: Path, conf_dir: Path) -> SiteListing:
        """Record the site's listing and the `ld.so.conf.d` entries (once per run).

        Raises:
            ApplyError: the site cannot be listed, or the state cannot be written.

        """
        state = self._state()
        listing = list_site(site)
        if "site" in state:
            return listing
        confs = {}
        if conf_dir.is_dir():
            confs = {p.name: _sha256_or_none(p) for p in sorted(conf_dir.iterdir())
                     if p.is_file()}
        state.update({
            "site": str(site), "entries": list(listing.entries),
            "dists": listing.dists,
            "freeze": sorted(f"{name}=={_version(info)}" for name, info in listing.dists.items()),
            "ld_so_conf_d": confs, "kept": [], "files": {}})
        self._save(state)
        return listing

    def freeze(self) -> list[str]:
        """The site's `name==version` lines when the run began."""
        return [str(line) for line in self._list("freeze")]

    def _list(self, key: str) -> list[object]:
        value = self._state().get(key, [])
        return value if isinstance(value, list) else []

    def keep_dist(self, site: Path, name: str) -> str | None:
        """Copy distribution `name` (if installed and not yet kept); its dist-info name.

        Raises:
            ApplyError: its files differ from its RECORD, or the copy fails.

        """
        dist_info = find_dist_info(site, name)
        state = self._state()
        kept = [str(k) for k in self._list("kept")]
        if dist_info is None or dist_info in kept:
            return dist_info
        folder = self.folder / "dists" / dist_info
        shutil.rmtree(folder, ignore_errors=True)  # a copy a crash cut short
        take_snapshot(site, dist_info, folder)
        state["kept"] = [*kept, dist_info]
        self._save(state)
        return dist_info

    def keep_file(self, path: Path) -> None:
        """Keep `path`'s bytes (or that it is absent) before a step writes it; once per run."""
        state = self._state()
        files = state.get("files")
        files = dict(files) if isinstance(files, dict) else {}
        if str(path) in files:
            return
        copy = self.folder / "files" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
        if path.is_file() and not path.is_symlink():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            files[str(path)] = {"copy": copy.name, "sha256": _sha256_or_none(path)}
        else:
            files[str(path)] = {"copy": None, "sha256": None}
        state["files"] = files
        self._save(state)

    def restore_files(self, written: dict[str, str], report: RestoreReport) -> None:
        """Put each kept file back, given what the run wrote there (path -> text written)."""
        files = self._state().get("files")
        files = files if isinstance(files, dict) else {}
        for path_text, text in written.items():
            before = files.get(path_text)
            path = Path(path_text)
            if not isinstance(before, dict):
                report.problems.append(f"{path}: not in the known-good state")
                continue
            now = _sha256_or_none(path)
            if now == before.get("sha256"):
                continue  # already as it was
            if now != hashlib.sha256(text.encode()).hexdigest():
                report.left.append(f"{path}: changed by someone else since; left as it is")
                continue
            if before.get("copy") is None:
                path.unlink()
            else:
                _copy_over(self.folder / "files" / str(before["copy"]), path)
            report.removed.append(str(path))

    def put_back(self, paths: list[Path]) -> None:
        """Put each kept file back as it was kept, or remove it when it did not exist.

        For caches a step's commands rewrote (ld.so.cache, ldconfig's aux-cache).
        """
        files = self._state().get("files")
        files = files if isinstance(files, dict) else {}
        for path in paths:
            before = files.get(str(path))
            if not isinstance(before, dict):
                continue
            if before.get("copy") is None:
                path.unlink(missing_ok=True)
            elif _sha256_or_none(path) != before.get("sha256"):
                _copy_over(self.folder / "files" / str(before["copy"]), path)

    def restore_site(self, site: Path, added: set[str], since: float) -> RestoreReport:
        """Put the site back as `begin` found it.

        `added` are top-level entries the run's steps created (from the journal), removed whole;
        `since` is when the run began (seconds since the epoch).

        Raises:
            ApplyError: the known-good state is unreadable.

        """
        state = self._state()
        report = RestoreReport()
        before = state.get("dists")
        if isinstance(before, dict):
            now = list_site(site)
            for name, dist_info in sorted(now.dists.items()):
                if name not in before:
                    self._remove_dist(site, dist_info, report)
        elif added:
            # No record of the site (a crash before `begin` finished): which distributions the
            # run installed cannot be told, so none is removed; never "all of them".
            report.problems.append(f"{self.folder / _STATE}: no known-good state was recorded; "
                                   "the site's distributions are left as they are")
        self._remove_added(site, added, state, report)
        kept = [str(k) for k in self._list("kept")]
        for dist_info in kept:
            name = canonicalize_name(dist_info.removesuffix(".dist-info").rsplit("-", 1)[0])
            current = find_dist_info(site, name)
            if current == dist_info and not verify_record(site, dist_info):
                continue  # untouched
            restore_snapshot(self.folder / "dists" / dist_info, site, current)
            report.restored.append(dist_info)
        report.pruned = self._prune(site, kept, since)
        for dist_info in kept:
            bad = verify_record(site, dist_info)
            if bad:
                report.problems.append(f"{dist_info}: {len(bad)} file(s) differ from its RECORD "
                                       f"after the restore ({', '.join(bad[:3])})")
        return report

    def _remove_added(self, site: Path, added: set[str], state: dict[str, object],
                      report: RestoreReport) -> None:
        """Remove the top-level entries of the site the run added (none it found there)."""
        found = state.get("entries", [])
        found = found if isinstance(found, list) else []
        for entry in sorted(added):
            try:
                path = confined_name(site, entry, f"{self.folder}: an entry the run added")
            except ApplyError as err:
                report.problems.append(f"{err}; not removed")
                continue
            if entry in found or not os.path.lexists(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            report.removed.append(entry)

    def _remove_dist(self, site: Path, dist_info: str, report: RestoreReport) -> None:
        """Remove a distribution the run installed: files still as its RECORD says."""
        try:
            entries = parse_record((site / dist_info / "RECORD").read_text("utf-8"),
                                   where=str(site / dist_info / "RECORD"))
        except (OSError, UnicodeDecodeError):
            entries = ()  # a RECORD a crash never wrote: the entry removal covers its files
        changed = set(verify_record(site, dist_info)) if entries else set()
        for entry in entries:
            path = Path(os.path.normpath(site / entry.path))
            if entry.path in changed and path.exists():
                report.left.append(f"{path}: changed since {dist_info} installed it; left")
                continue
            path.unlink(missing_ok=True)
            if site in path.parents:
                _remove_empty_parents(path.parent, site)
        shutil.rmtree(site / dist_info, ignore_errors=True)
        report.removed.append(dist_info)

    def _prune(self, site: Path, kept: list[str], since: float) -> int:
        """Remove files no installed RECORD claims from the folders distributions install into.

        In a kept distribution's folders every such file goes (the restore must be exact: a
        file of the version the run installed, bytecode an import compiled since). Elsewhere
        (`nvidia/`, shared by many wheels) only those created since the run began (`since`,
        seconds since the epoch, against their ctime, which no extraction sets back): what a
        pip step killed before it wrote its RECORD left. Older files are someone else's.
        """
        claimed: set[str] = set()
        exact: set[str] = set()
        for dist_info in list_site(site).dists.values():
            try:
                entries = parse_record((site / dist_info / "RECORD").read_text("utf-8"),
                                       where=dist_info)
            except (OSError, UnicodeDecodeError, ApplyError):
                continue
            claimed.update(e.path for e in entries)
            if dist_info in kept:
                exact.update(e.path.split("/", 1)[0] for e in entries
                             if "/" in e.path and not e.path.startswith(".."))
        if not site.is_dir():
            return 0
        # Every folder: pip's `--target` layout puts scripts in `<site>/bin` while the RECORD
        # says `../../bin/...`, so a folder no RECORD claims may still hold what a step left.
        tops = {name for name in os.listdir(site) if not name.endswith(".dist-info")
                and (site / name).is_dir() and not (site / name).is_symlink()}
        return sum(_prune_folder(site, top, claimed, since, exact=top in exact)
                   for top in sorted(tops))


def _prune_folder(site: Path, top: str, claimed: set[str], since: float, *, exact: bool
                  ) -> int:
    """Remove what no RECORD claims under `site/top` (see `KnownGood._prune`); how many."""
    pruned = 0
    # Bottom-up, so a folder emptied here is removed too (a wheel has no empty folders).
    for folder, _dirs, names in os.walk(site / top, topdown=False):
        removed = 0
        for name in names:
            path = Path(folder) / name
            if path.relative_to(site).as_posix() in claimed:
                continue
            if exact or path.lstat().st_ctime >= since:
                path.unlink()
                removed += 1
        pruned += removed
        if not os.listdir(folder) and (removed or exact or os.lstat(folder).st_ctime >= since):
            os.rmdir(folder)
    return pruned


def _copy_over(source: Path, path: Path) -> None:
    """Copy `source` to `path` through a scratch file renamed over it.

    A symlink at `path` is replaced, never written through.
    """
    scratch = path.with_name(f".{path.name}.jetson-resolve")
    scratch.unlink(missing_ok=True)
    shutil.copy2(source, scratch, follow_symlinks=False)
    scratch.replace(path)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to `stop` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent

"""The known-good state of a distribution, kept before the first change and put back byte for byte.

A wheel install's `RECORD` (PEP 376, PEP 427) lists every file with its sha256 (urlsafe base64,
no padding) and size. `take_snapshot` checks the installed files against it, then copies each
into a snapshot folder with a `snapshot.json` of paths, hashes and modes; `restore_snapshot`
removes what the distribution's current `RECORD` lists (another version may have replaced it),
copies the snapshot back, and checks every file against the hashes it was taken with. A file
the RECORD names outside the install's prefix (`../../bin/torchrun`) is kept relative to the
prefix, never followed beyond it; a RECORD entry that escapes the prefix is refused.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from resolver.errors import ApplyError, UnusableFile
from resolver.host_files import MIB, open_regular, read_regular, write_atomic

__all__ = [
    "RecordEntry",
    "Snapshot",
    "find_dist_info",
    "merge_tree",
    "parse_record",
    "remove_distribution",
    "restore_snapshot",
    "take_snapshot",
    "verify_record",
]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordEntry:
    """One line of a RECORD: a path relative to the site, its sha256 (hex) and size."""

    path: str
    sha256: str | None  # None for RECORD itself and for files pip leaves unhashed (.pyc)
    size: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A kept distribution: where the copies are and what was kept."""

    folder: Path
    dist_info: str  # the dist-info folder's name
    files: tuple[RecordEntry, ...]


def find_dist_info(site: Path, name: str) -> str | None:
    """The `<name>-<version>.dist-info` folder of distribution `name` in `site`, if any."""
    wanted = canonicalize_name(name)
    for entry in sorted(os.listdir(site)):
        if entry.endswith(".dist-info") and canonicalize_name(
                entry.removesuffix(".dist-info").rsplit("-", 1)[0]) == wanted:
            return entry
    return None


def _hex(digest: str) -> str | None:
    algorithm, _, value = digest.partition("=")
    if algorithm != "sha256" or not value:
        return None
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def parse_record(text: str, *, where: str) -> tuple[RecordEntry, ...]:
    """The entries of a RECORD file (CSV: path, `sha256=...`, size).

    Raises:
        ApplyError: a line is malformed, or a path is absolute or escapes the install prefix.

    """
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row:
            continue
        if len(row) != 3:
            raise ApplyError(f"{where}:{number}: expected path,hash,size")
        path, digest, size = row
        normal = posixpath.normpath(path)
        # Scripts sit in the prefix's bin (`../../../bin/x` from lib/pythonX.Y/site-packages):
        # allowed, but never above the prefix those three levels reach.
        if path.startswith("/") or normal.startswith("../../../../"):
            raise ApplyError(f"{where}:{number}: {path!r} leaves the install prefix")
        try:
            entries.append(RecordEntry(path=normal, sha256=_hex(digest) if digest else None,
                                       size=int(size) if size else None))
        except (ValueError, TypeError) as err:
            raise ApplyError(f"{where}:{number}: {err}") from None
    return tuple(entries)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _record_of(site: Path, dist_info: str) -> tuple[RecordEntry, ...]:
    record = site / dist_info / "RECORD"
    try:
        text = read_regular(record, 64 * MIB, "a RECORD").decode("utf-8")
    except (OSError, UnusableFile, UnicodeDecodeError) as err:
        raise ApplyError(f"{record}: cannot read: {err}") from err
    return parse_record(text, where=str(record))


def verify_record(site: Path, dist_info: str) -> tuple[str, ...]:
    """The files of the distribution whose bytes differ from its RECORD (or are missing).

    Raises:
        ApplyError: the RECORD cannot be read or is malformed.

    """
    bad = []
    for entry in _record_of(site, dist_info):
        path = site / entry.path
        if entry.sha256 is None:
            continue
        if not path.is_file() or _sha256(path) != entry.sha256:
            bad.append(entry.path)
    return tuple(bad)


def take_snapshot(site: Path, dist_info: str, folder: Path) -> Snapshot:
    """Copy the distribution's files (as its RECORD lists them) into `folder`.

    Raises:
        ApplyError: an installed file differs from its RECORD (the known-good state is not
            what it claims), or a copy fails.

    """
    changed = verify_record(site, dist_info)
    if changed:
        raise ApplyError(f"{site / dist_info}: {len(changed)} file(s) differ from its RECORD "
                         f"({', '.join(changed[:3])}): not a known-good state to keep")
    entries = _record_of(site, dist_info)
    kept: list[RecordEntry] = []
    modes: list[int] = []
    try:
        for entry in entries:
            source = site / entry.path
            if not source.is_file():
                continue
            target = folder / "files" / entry.path.replace("../", "__up__/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            kept.append(RecordEntry(path=entry.path, sha256=_sha256(target),
                                    size=target.stat().st_size))
            modes.append(source.stat().st_mode & 0o7777)
        write_atomic(folder / "snapshot.json", json.dumps(
            {"dist_info": dist_info, "files": [
                {"path": k.path, "sha256": k.sha256, "mode": mode}
                for k, mode in zip(kept, modes, strict=True)]}, indent=1).encode("utf-8"),
            durable=True)
    except OSError as err:
        raise ApplyError(f"{folder}: cannot keep the snapshot: {err}") from err
    return Snapshot(folder=folder, dist_info=dist_info, files=tuple(kept))


def restore_snapshot(snapshot_folder: Path, site: Path, current: str | None) -> int:
    """Put the kept distribution back in `site`, after removing `current` (a dist-info name).

    Returns the number of files restored.

    Raises:
        ApplyError: the snapshot is unreadable, or a restored file does not match its hash.

    """
    try:
        kept = json.loads(read_regular(snapshot_folder / "snapshot.json", 64 * MIB, "a snapshot"))
        files = [(str(f["path"]), str(f["sha256"]), int(f["mode"])) for f in kept["files"]]
    except (OSError, UnusableFile, ValueError, KeyError, TypeError, RecursionError) as err:
        raise ApplyError(f"{snapshot_folder}: not a snapshot: {err}") from None
    if current is not None:
        for entry in _record_of(site, current):
            (site / entry.path).unlink(missing_ok=True)
        shutil.rmtree(site / current, ignore_errors=True)
    for path, sha256, mode in files:
        source = snapshot_folder / "files" / path.replace("../", "__up__/")
        target = site / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            os.chmod(target, mode)
        except OSError as err:
            raise ApplyError(f"{target}: cannot restore: {err.strerror}") from err
        if _sha256(target) != sha256:
            raise ApplyError(f"{target}: restored bytes differ from the snapshot")
    return len(files)


def remove_distribution(site: Path, dist_info: str) -> int:
    """Remove an installed distribution as `pip uninstall` does; the number of files removed.

    It removes the files its RECORD lists, the folders that leaves empty, and its dist-info.

    Raises:
        ApplyError: its RECORD is unreadable or malformed.

    """
    removed = 0
    for entry in _record_of(site, dist_info):
        path = Path(os.path.normpath(site / entry.path))
        # A RECORD written by `pip --target` names scripts `../../bin/x` while they sit in
        # `<site>/bin`: a file there with other bytes is not this distribution's.
        if entry.sha256 is not None and path.is_file() and _sha256(path) != entry.sha256:
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
            folder = path.parent
            while folder != site and site in folder.parents:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
                folder = folder.parent
    shutil.rmtree(site / dist_info, ignore_errors=True)
    return removed


def merge_tree(staging: Path, site: Path) -> int:
    """Move every file of `staging` (a `pip install --target` folder) into `site`.

    The distributions it reinstalls are removed from `site` first, as a normal pip install
    does; then `staging` is removed. Returns the number of files moved.

    pip's own `--target --upgrade` replaces whole top-level folders instead (pip's
    `install` command, `_handle_target_dir`), deleting what other distributions keep in a
    shared one such as `nvidia/` or `bin/`; this merges file by file.

    Raises:
        ApplyError: a reinstalled distribution's RECORD is unreadable.

    """
    for info in sorted(staging.glob("*.dist-info")):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        existing = find_dist_info(site, name)
        if existing is not None:
            remove_distribution(site, existing)
    moved = 0
    for folder, dirs, names in os.walk(staging):
        relative = Path(folder).relative_to(staging)
        for name in names + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            target = site / relative / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(Path(folder) / name, target)
            moved += 1
    shutil.rmtree(staging)
    return moved

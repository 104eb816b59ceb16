"""Whole results of `diagnose`, reused while nothing they were computed from has changed.

`apply` re-diagnoses after every step and users re-run `diagnose` after every fix, mostly over
a tree that did not change. A run's output is a function of its command line (with the working
directory and `LD_LIBRARY_PATH`), of this package's code, and of the host paths the run
consulted (`resolver.target.witness`). So the output, with that list of paths and their
`lstat` signatures, is kept (unless a path changed just before or during the run) under
`$XDG_CACHE_HOME/jetson-resolve/results/<key>.json`; a later
run with the same key replays it when every path still has its signature, without importing
typer or the pipeline. Only piped output is kept (a terminal gets colours), only exits 0 and 1
(an error is never replayed), and never with `--no-cache` or `--debug`.

The entries are our own JSON, written atomically; a damaged or foreign one is a miss.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from resolver.target.witness import Witness

__all__ = ["active_witness", "cached_run", "result_key"]

_FORMAT = 1
_COMMANDS = frozenset({"diagnose"})
_NEVER = frozenset({"--no-cache", "--debug", "--help"})
# What else a result depends on: the target's loader path (a live root) and what decides the
# live interpreter's sys.path when diagnose asks it where torch is.
_ENVIRONMENT = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE",
                "PYTHONNOUSERSITE", "VIRTUAL_ENV")
# Filesystem timestamps come from a coarse clock (a few ms); a path changed this close to the
# start of a run may change again unseen, so its result is not kept.
_RACY_NS = 100_000_000
_MAX_ENTRY = 64 << 20  # a kept result bigger than this is not kept, nor read
_witness: contextvars.ContextVar[Witness | None] = contextvars.ContextVar("witness", default=None)


def active_witness() -> Witness | None:
    """The witness of the run being cached, for the command to hand to `open_source`."""
    return _witness.get()


def _code_stamp() -> list[tuple[str, int, int]]:
    """Size and mtime of every module and data file of the package: code changes miss."""
    package = Path(__file__).resolve().parent.parent
    stamp = []
    for directory, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".json", ".toml")):
                info = os.stat(os.path.join(directory, name))
                stamp.append((os.path.join(directory, name), info.st_size, info.st_mtime_ns))
    return stamp


def result_key(argv: Sequence[str]) -> str:
    """What a result depends on besides the consulted paths, as a hex digest."""
    from resolver import __version__  # noqa: PLC0415

    inputs = [_FORMAT, __version__, sys.executable, os.getcwd(), list(argv),
              [os.environ.get(name, "") for name in _ENVIRONMENT], _code_stamp()]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def _cacheable(argv: Sequence[str]) -> bool:
    try:
        os.getcwd()  # part of the key; a deleted working folder has none
    except OSError:
        return False
    return (bool(argv) and argv[0] in _COMMANDS and not _NEVER.intersection(argv)
            and not sys.stdout.isatty())


def _entry_path(key: str) -> Path:
    from resolver.host_files import cache_home  # noqa: PLC0415

    return cache_home() / "results" / f"{key}.json"


def _replay(path: Path) -> int | None:
    """Write a valid entry's output and return its exit code; None on any miss."""
    from resolver.errors import UnusableFile  # noqa: PLC0415
    from resolver.host_files import read_regular  # noqa: PLC0415
    from resolver.target.witness import Witness  # noqa: PLC0415

    try:
        entry: dict[str, Any] = json.loads(read_regular(path, _MAX_ENTRY, "a kept result"))
        seen = [(str(p), None if s is None else tuple(s)) for p, s in entry["seen"]]
        code, output = int(entry["code"]), str(entry["stdout"])
    except (OSError, UnusableFile, ValueError, KeyError, TypeError, RecursionError):
        return None
    if entry.get("format") != _FORMAT or code not in (0, 1) or not Witness.unchanged(seen):
        return None
    sys.stdout.write(output)
    sys.stdout.flush()
    return code


def _store(path: Path, code: int, output: str, witness: Witness) -> None:
    entry = {"format": _FORMAT, "code": code, "stdout": output,
             "seen": [[p, s] for p, s in witness.seen.items()]}
    from resolver.errors import UnusableFile  # noqa: PLC0415
    from resolver.host_files import write_atomic  # noqa: PLC0415

    data = json.dumps(entry).encode("utf-8", "surrogateescape")
    if len(data) > _MAX_ENTRY:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except (OSError, UnusableFile):
        return  # a cache we cannot write is no cache, not an error


class _Tee(io.TextIOBase):
    """Stdout that also keeps what was written."""

    def __init__(self, real: Any) -> None:  # noqa: ANN401 - any text stream
        self.real = real
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return int(self.real.write(text))

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False


def cached_run(argv: Sequence[str], run: Callable[[], object]) -> int:
    """Replay the result of `argv` if it is still valid, else `run()` it and keep the result.

    `run` is the command line's own entry (it ends with SystemExit); returns the exit code.
    """
    if not _cacheable(argv):
        return _exit_code(run)
    path = _entry_path(result_key(argv))
    replayed = _replay(path)
    if replayed is not None:
        return replayed
    from resolver.target.witness import Witness  # noqa: PLC0415

    witness = Witness()
    started = time.time_ns()
    token = _witness.set(witness)
    tee, real = _Tee(sys.stdout), sys.stdout
    sys.stdout = tee
    try:
        code = _exit_code(run)
    finally:
        sys.stdout = real
        _witness.reset(token)
    if code in (0, 1) and witness.seen and not witness.changed_since(started - _RACY_NS):
        _store(path, code, tee.kept.getvalue(), witness)
    return code


def _exit_code(run: Callable[[], object]) -> int:
    try:
        run()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return int(done.code or 0)
        raise
    return 0

"""A kept diagnose result is replayed only while every host path it consulted is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from cli_helpers import synth_lib
from test_cli_diagnose import empty_root, make_mini_torch

if TYPE_CHECKING:
    from pathlib import Path


def _settle() -> None:
    """Let what the test just wrote age past the cache's racy window (0.1 s of ctime)."""
    time.sleep(0.25)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "resolver", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=False)


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "jetson-resolve" / "results").glob("*.json"))


def _mark(entry: Path, marker: str) -> None:
    data = json.loads(entry.read_text())
    data["stdout"] = marker
    entry.write_text(json.dumps(data))


def _first_run(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...],
                                          subprocess.CompletedProcess[str]]:
    """A mini torch on an empty root, aged, and its first (kept) diagnose."""
    site = make_mini_torch(tmp_path / "site", synth_lib)
    root = empty_root(tmp_path / "root")
    args = ("diagnose", "--site-packages", str(site), "--root", str(root), "--json")
    _settle()
    return site, root, args, _run(tmp_path, *args)


def test_replayed_until_a_consulted_path_changes(tmp_path: Path) -> None:
    site, root, args, first = _first_run(tmp_path)
    assert first.returncode == 1, first.stderr
    [entry] = _entries(tmp_path)
    seen = dict(json.loads(entry.read_text())["seen"])
    assert str(site / "torch" / "lib") in seen and str(root / "etc" / "os-release") in seen

    # Nothing changed: the kept output comes back (marked, to prove it is the kept one).
    _mark(entry, "kept\n")
    assert (_run(tmp_path, *args).stdout, _run(tmp_path, *args).returncode) == ("kept\n", 1)
    # Folders only passed through may change: others' files beside the root and the site.
    (tmp_path / "unrelated.txt").write_text("x")
    (root / "etc" / "motd").write_text("hello")
    _settle()
    assert _run(tmp_path, *args).stdout == "kept\n"

    # A library file touched: a miss and the real answer, not kept while the change is fresh.
    library = site / "torch" / "lib" / "libc10.so"
    os.utime(library, ns=(1, library.stat().st_mtime_ns + 10**9))
    again = _run(tmp_path, *args)
    assert again.stdout == first.stdout and again.returncode == 1
    assert json.loads(entry.read_text())["stdout"] == "kept\n"
    _settle()
    _run(tmp_path, *args)
    assert json.loads(entry.read_text())["stdout"] == first.stdout

    # The missing library appears in a searched folder: the folder changed, the answer too.
    _mark(entry, "kept\n")
    synth_lib(site / "torch" / "lib", "libmissing.so.1", soname="libmissing.so.1")
    fixed = _run(tmp_path, *args)
    assert fixed.returncode == 0, fixed.stdout
    assert json.loads(fixed.stdout)["summary"]["blocks_import"] is False


def test_no_cache_and_errors_are_never_kept(tmp_path: Path) -> None:
    site = make_mini_torch(tmp_path / "site", synth_lib)
    root = empty_root(tmp_path / "root")
    _settle()
    run = _run(tmp_path, "diagnose", "--site-packages", str(site), "--root", str(root),
               "--json", "--no-cache")
    assert run.returncode == 1
    bad = _run(tmp_path, "diagnose", "--site-packages", str(root), "--root", str(root))
    assert bad.returncode == 2 and "no torch package here" in bad.stderr
    assert _entries(tmp_path) == []


def test_damaged_entry_is_a_miss(tmp_path: Path) -> None:
    _, _, args, first = _first_run(tmp_path)
    [entry] = _entries(tmp_path)
    for damage in ("", "{", '{"format": 1, "code": "x"}', json.dumps({"format": 1})):
        entry.write_text(damage)
        again = _run(tmp_path, *args)
        assert (again.returncode, again.stdout) == (first.returncode, first.stdout)


def test_the_environment_the_loader_reads_is_part_of_the_key(tmp_path: Path) -> None:
    """LD_PRELOAD changes what the loader does (it is the live default of --ld-preload): a
    result kept under one value is not replayed under another."""
    _, _, args, first = _first_run(tmp_path)
    [entry] = _entries(tmp_path)
    _mark(entry, "kept\n")
    assert _run(tmp_path, *args).stdout == "kept\n"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "LD_PRELOAD": ""}
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH"):
        changed = subprocess.run([sys.executable, "-m", "resolver", *args],
                                 env={**env, name: "/nonexistent/libx.so"}, cwd=tmp_path,
                                 capture_output=True, text=True, check=False)
        assert changed.stdout != "kept\n", name
        assert changed.returncode == first.returncode

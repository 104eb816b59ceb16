"""The one place exceptions become exit codes: our bugs are exit 70, never exit 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import run_cli

from resolver.cli.errors import ExitCode


def _boom(*_args: object, **_kwargs: object) -> object:
    raise ZeroDivisionError("a bug of ours")


def test_an_unexpected_exception_is_exit_70_with_its_traceback_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash must not read as "import torch fails" (exit 1) to `check` in a wheel's CI."""
    monkeypatch.setattr("resolver.cli.commands.diagnose.run_diagnose", _boom)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = run_cli("diagnose", "--fixture", "thor-jp7.0", "--torch-fixture",
                  "torch-2.11.0-aarch64", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert run.code == ExitCode.INTERNAL
    assert int(ExitCode.INTERNAL) == 70  # the README documents the number
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert lines[0].startswith("jetson-resolve: error: internal error, a bug in jetson-resolve "
                               "(ZeroDivisionError: a bug of ours)")
    saved = re.search(r"its traceback is in (\S+);", lines[0])
    assert saved is not None
    crash = Path(saved.group(1))
    assert crash.parent == tmp_path / "cache" / "jetson-resolve" / "crashes"
    text = crash.read_text("utf-8")
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError: a bug of ours" in text
    assert "_boom" in text


def test_debug_lets_the_exception_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("resolver.cli.commands.diagnose.run_diagnose", _boom)
    with pytest.raises(ZeroDivisionError, match="a bug of ours"):
        run_cli("diagnose", "--fixture", "thor-jp7.0", "--torch-fixture",
                "torch-2.11.0-aarch64", "--debug")


def test_our_errors_and_the_systems_are_exit_2_in_one_line(tmp_path: Path) -> None:
    """A ResolveError (an invalid fixture) and an OSError both end in one line and exit 2."""
    bad = tmp_path / "fixture"
    bad.mkdir()
    (bad / "manifest.toml").write_text("schema = [" * 100_000, "utf-8")
    (bad / "files.json").write_text("{}", "utf-8")
    run = run_cli("diagnose", "--fixture", str(bad), "--torch-fixture", "torch-2.11.0-aarch64")
    assert run.code == ExitCode.BAD_INPUT
    assert run.stderr.count("\n") == 1
    assert f"{bad / 'manifest.toml'}: not valid TOML" in run.stderr
    # An OSError, with the file it names: --out under a regular file cannot be made.
    root, blocker = tmp_path / "root", tmp_path / "a-file"
    root.mkdir()
    blocker.write_text("not a folder\n")
    run = run_cli("record", "--root", str(root), "--out", str(blocker / "fixture"),
                  env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert run.code == ExitCode.BAD_INPUT
    assert run.stderr == f"jetson-resolve: error: {blocker / 'fixture'}: Not a directory\n"
    assert blocker.read_text() == "not a folder\n"

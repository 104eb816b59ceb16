"""Hostile input to the fixing half (issue 10's kinds, where apply, rollback, status and recipes
read and write): a state folder holding symlinks, FIFOs and damaged journals, recipes whose paths
lead out of the root. Each goes through the real CLI or the real state files in a temporary
folder, and asserts one line and exit 2 (or a reported problem), and that nothing outside the
folders named was written or removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli
from hostile_inputs import (
    assert_one_line_error,
    cli_env,
    deep_json_array,
    drop_dac_preexec,
    run_hostile,
    tree_hash,
)

from resolver.apply.confine import confined, confined_name
from resolver.apply.journal import Event, Journal
from resolver.apply.lock import StateLock
from resolver.apply.runs import new_run
from resolver.apply.session import ApplyRequest
from resolver.errors import ApplyError

REPO = Path(__file__).resolve().parent.parent


def _dist(site: Path, name: str, version: str) -> None:
    """A distribution as pip leaves it: its package folder and its dist-info with a RECORD."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text("")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n"
                                 f"{info.name}/RECORD,,\n")


def _started_run(tmp_path: Path) -> tuple[Path, Path, Journal]:
    """A state folder with one run that started on a scratch root and site: (state, site, its
    journal), the site holding two distributions the run did not install."""
    root, state = tmp_path / "root", tmp_path / "state"
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    _dist(site, "other", "1.0")
    _dist(site, "torch", "9.9.9")
    run = new_run(state)
    request = ApplyRequest(root=str(root), site="/usr/lib/python3/dist-packages",
                           python="/usr/bin/python3", verify_argv=None)
    journal = run.journal()
    journal.append(Event.RUN_STARTED, data=request.as_data())
    return state, site, journal


def test_confined_keeps_paths_inside_their_base(tmp_path: Path) -> None:
    assert confined(tmp_path, "/opt/x/lib", "t") == tmp_path / "opt" / "x" / "lib"
    assert confined(tmp_path, "opt//x/./lib", "t") == tmp_path / "opt" / "x" / "lib"
    for bad in ("/../../etc", "/opt/../../x", "/", "", "/opt/lib\ninclude /evil/*", "/a\x1b[2J"):
        with pytest.raises(ApplyError, match=r"^t: "):
            confined(tmp_path, bad, "t")
    assert confined_name(tmp_path, "nvidia", "t") == tmp_path / "nvidia"
    for bad in ("", ".", "..", "a/b", "x\n"):
        with pytest.raises(ApplyError):
            confined_name(tmp_path, bad, "t")


def test_a_rollback_before_the_known_good_state_removes_no_distribution(tmp_path: Path) -> None:
    """A crash after the run began and before `begin` recorded the site: the distributions
    the run did not install stay (once every one of them was removed, exit 0)."""
    state, site, _ = _started_run(tmp_path)
    before = sorted(os.listdir(site))
    run = run_cli("rollback", "--state-dir", str(state))
    assert "Traceback" not in run.stderr, run.stderr
    assert sorted(os.listdir(site)) == before


def test_a_journal_path_outside_the_root_is_never_acted_on(tmp_path: Path) -> None:
    """Paths a damaged journal names outside the root (`..`) are reported, not removed."""
    state, site, journal = _started_run(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("someone else's\n")
    outside = tmp_path / "outside-file"
    outside.write_text("kept\n")
    journal.append(Event.SNAPSHOT, data={"entries": len(os.listdir(site))})
    journal.append(Event.STEP_STARTED, step=0, data={
        "recipe": "evil", "kind": "redist", "created": "/../victim",
        "writes": ["/../outside-file"], "touches": ["/../outside-file"]})
    journal.append(Event.STEP_DONE, step=0, data={"ok": True, "added": ["..", "../victim"]})
    before = tree_hash(tmp_path, skip=[state, tmp_path / "root"])
    run = run_cli("rollback", "--state-dir", str(state), "--json")
    assert "Traceback" not in run.stderr, run.stderr
    assert tree_hash(tmp_path, skip=[state, tmp_path / "root"]) == before
    assert run.code == 4, run.stdout  # incomplete: the paths it would not touch are named
    problems = json.dumps(run.json())
    assert "is not a path inside" in problems and "not taken back" in problems


def test_journal_damage_is_one_line_in_bounded_memory(tmp_path: Path) -> None:
    """A 100,000-deep JSON line, 64 MiB of empty lines: `damaged journal line`, exit 2, under
    a 1 GiB address-space limit (the whole file is never split into a list of lines)."""
    for shape, tail in (("deep", deep_json_array().encode() + b"\n"),
                        ("blank", b"\n" * (64 << 20))):
        state, _, journal = _started_run(tmp_path / shape)
        with journal.path.open("ab") as handle:
            handle.write(tail)
        run = run_hostile(["status", "--state-dir", state], env=cli_env(tmp_path), mem_gib=1)
        assert_one_line_error(run, f"{journal.path}:2", what="damaged journal line")


def test_state_files_are_never_written_through_symlinks(tmp_path: Path) -> None:
    """The lock's holder file, the `latest` pointer and the journal: a symlink planted in the
    state folder is replaced (or refused), and the file it points to is unchanged."""
    state = tmp_path / "state"
    state.mkdir()
    precious = tmp_path / "precious"
    precious.write_text("someone else's\n")
    (state / "apply.holder.json").symlink_to(precious)
    (state / "latest").symlink_to(precious)
    with StateLock(state):
        run = new_run(state)
    assert precious.read_text() == "someone else's\n"
    assert not (state / "latest").is_symlink()
    assert (state / "latest").read_text().strip() == run.id
    run.journal_path.parent.mkdir(parents=True, exist_ok=True)
    run.journal_path.symlink_to(precious)
    with pytest.raises(ApplyError, match="a symlink; a journal must be a regular file"):
        run.journal().append(Event.RUN_STARTED)
    os.unlink(run.journal_path)
    os.mkfifo(run.journal_path)
    with pytest.raises(ApplyError, match="a FIFO; a journal must be a regular file"):
        run.journal().append(Event.RUN_STARTED)
    assert precious.read_text() == "someone else's\n"


def test_run_names_that_are_no_run_folder_are_refused(tmp_path: Path) -> None:
    state, _, _ = _started_run(tmp_path)
    for name in (".", ".."):
        (state / "latest").write_text(name + "\n")
        run = run_hostile(["rollback", "--state-dir", state], env=cli_env(tmp_path))
        assert_one_line_error(run, "latest", what="not a run folder")
        assert not (tmp_path / "apply.lock").exists() and not (state / "runs" / "apply.lock"
                                                               ).exists()
        status = run_hostile(["status", "--state-dir", state, "--run", name],
                             env=cli_env(tmp_path))
        assert_one_line_error(status, what="no such run")


def test_status_shows_journal_text_escaped(tmp_path: Path) -> None:
    """A journal's strings are data: escapes and line breaks are shown escaped, and a step
    whose output is only blank lines is shown, not a crash."""
    state, _, journal = _started_run(tmp_path)
    journal.append(Event.STEP_STARTED, step=0, data={
        "recipe": "r", "kind": "pip\x1b[2J", "effect": "e\r\nfake: done"})
    journal.append(Event.STEP_FAILED, step=0, data={"ok": False, "output": "  \n "})
    journal.append(Event.STEP_STARTED, step=1, data={"recipe": "r", "kind": "pip",
                                                     "effect": "second"})
    journal.append(Event.STEP_FAILED, step=1, data={"ok": False, "output": "x\x1b[31mred"})
    run = run_cli("status", "--state-dir", str(state))
    assert run.code in (0, 1), run.stderr
    assert "\x1b" not in run.stdout and "\r" not in run.stdout
    assert "\\x1b[2J" in run.stdout and "e\\x0d\\x0afake: done" in run.stdout
    assert "\\x1b[31mred" in run.stdout


def _recipe(folder: Path, source: str, changes: dict[str, str]) -> Path:
    """A copy of a shipped recipe with lines replaced (`old line` -> `new line`)."""
    text = (REPO / "recipes" / source).read_text("utf-8")
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / source
    path.write_text(text, "utf-8")
    return path


@pytest.mark.parametrize(("source", "changes", "field", "says"), [
    ("cudss-0-cu13-redist-sbsa.toml", {'prefix = "/opt/nvidia/{component}-{version}"':
                                       'prefix = "/../../escaped-{version}"'},
     "prefix", "climbs out"),
    ("cuda13-runtime-apt.toml", {'directory = "/usr/local/cuda-13.0/targets/sbsa-linux/lib"':
                                 'directory = "/opt/dep/lib\\ninclude /evil/*"'},
     "directory", "control character"),
    ("cudss-0-cu13-redist-sbsa.toml", {'directory = "{prefix}/lib"':
                                       'directory = "{site}/../../../../etc"'},
     "directory", "climbs out"),
    ("cudss-0-cu13-redist-sbsa.toml", {'cuda = ">=13,<14"': 'cuda = "===abc"'},
     "applies.cuda", "arbitrary equality"),
    ("cuda13-runtime-apt.toml",
     {'summary = "CUDA 13.0': 'summary = "\\u001b]0;PWN\\u0007CUDA 13.0'},
     "summary", "control characters"),
])
def test_recipe_fields_that_lead_elsewhere_are_lint_problems(
        tmp_path: Path, source: str, changes: dict[str, str], field: str, says: str) -> None:
    """A recipe path with `..` or a line break, an `===` specifier, a summary holding
    terminal escapes: `recipes lint` names the file and the field (never exit 70)."""
    path = _recipe(tmp_path / "recipes", source, changes)
    run = run_cli("recipes", "lint", "--recipes", str(tmp_path / "recipes"), "--json")
    assert run.code == 1, run.stderr
    problems = run.json()["problems"]
    assert any(p["file"].endswith(path.name) and p["field"].endswith(field)
               and says in p["message"] for p in problems), problems
    text = run_cli("recipes", "lint", "--recipes", str(tmp_path / "recipes"))
    assert "\x1b" not in text.stdout and "\x07" not in text.stdout


def test_a_direct_reference_must_be_https(tmp_path: Path) -> None:
    source = next(p.name for p in sorted((REPO / "recipes").glob("*.toml"))
                  if re.search(r'^requirements = \["[a-z0-9-]+==', p.read_text(), re.MULTILINE))
    text = (REPO / "recipes" / source).read_text()
    first = re.search(r'^requirements = \["([^"]+)"', text, re.MULTILINE)
    assert first is not None
    name = re.split(r"[=<>!~ ]", first.group(1))[0]
    _recipe(tmp_path / "recipes", source, {first.group(0): f'requirements = ["{name} @ file:///etc/passwd"'})
    run = run_cli("recipes", "lint", "--recipes", str(tmp_path / "recipes"), "--json")
    assert run.code == 1
    assert any("must be an https URL" in p["message"] for p in run.json()["problems"])


def test_an_unreadable_folder_option_is_one_line(tmp_path: Path) -> None:
    """A --recipes or --state-dir folder of mode 000 is said by the command in one line, not
    refused by click's usage box."""
    drop = drop_dac_preexec()
    if drop is None:
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE: mode bits do not bite")
    locked = tmp_path / "locked"
    shutil.copytree(REPO / "recipes", locked)
    locked.chmod(0)
    try:
        commands: list[list[str | Path]] = [["recipes", "list", "--recipes", locked],
                                            ["status", "--state-dir", locked]]
        for args in commands:
            run = run_hostile(args, env=cli_env(tmp_path), preexec=drop)
            assert_one_line_error(run, locked, what="Permission denied")
    finally:
        locked.chmod(0o755)

"""The apply family's command line: bad usage is one line and exit 2, a state folder with no
run says so, a run that ended cannot be resumed, and `status --json` of a real journal
validates against the run schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli_helpers import run_cli, validate

from resolver.apply.journal import Event
from resolver.apply.runs import new_run
from resolver.apply.session import ApplyRequest

if TYPE_CHECKING:
    from pathlib import Path


def _one_line_error(stderr: str, says: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jetson-resolve: error: "), stderr
    assert says in lines[0], stderr


def test_bad_usage_is_one_line(tmp_path: Path) -> None:
    cases = [
        (("apply", "--python", "python3", "--root", str(tmp_path)), "give --python"),
        (("apply", "--offline"), "--offline and --wheelhouse"),
        (("apply", "--prefer", "conda"), "--prefer"),
        (("apply", "--wheel", str(tmp_path / "none.whl")), "no such file"),
        (("apply", "--root", str(tmp_path)), "--site-packages"),
        (("apply", "--root", str(tmp_path), "--site-packages", str(tmp_path)),
         "no torch installed there"),
        (("apply", "--python", str(tmp_path / "nopython")), "cannot run this interpreter"),
    ]
    for args, says in cases:
        run = run_cli(*args)
        assert run.code == 2, (args, run.stdout, run.stderr)
        _one_line_error(run.stderr, says)


def test_no_run_yet(tmp_path: Path) -> None:
    for command in ("status", "rollback", "resume"):
        run = run_cli(command, "--state-dir", str(tmp_path / "state"))
        assert run.code == 2
        _one_line_error(run.stderr, "no apply run in")
    run = run_cli("status", "--state-dir", str(tmp_path), "--run", "../etc")
    assert run.code == 2
    _one_line_error(run.stderr, "no such run")


def test_an_ended_run_has_a_status_and_cannot_be_resumed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = new_run(state)
    request = ApplyRequest(root="/", site=str(tmp_path / "site"), python="python3",
                           verify_argv=None)
    journal = run.journal()
    journal.append(Event.RUN_STARTED, data=request.as_data())
    journal.append(Event.SNAPSHOT, data={"entries": 0, "freeze": ["six==1.16.0"]})
    journal.append(Event.RUN_FINISHED, data={"outcome": "done", "ending": "done"})
    status = run_cli("status", "--state-dir", str(state), "--json")
    assert status.code == 0
    document = status.json()
    validate("run", document)
    assert document["outcome"] == "done" and document["freeze"] == ["six==1.16.0"]
    text = run_cli("status", "--state-dir", str(state))
    assert text.stdout.startswith(f"run {run.id}: done")
    resumed = run_cli("resume", "--state-dir", str(state))
    assert resumed.code == 2
    _one_line_error(resumed.stderr, "already ended (done): nothing to resume")


def test_a_wheel_or_known_good_that_cannot_be_one_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    text.write_text("not a zip")
    other = tmp_path / "sympy-1.14.0-py3-none-any.whl"
    other.write_bytes(b"")
    cases = [
        (("apply", "--wheel", str(text)), "not a zip archive"),
        (("apply", "--wheel", str(other)), "a wheel of sympy, not of torch"),
        (("apply", "--wheel", str(tmp_path)), "not a regular file"),
        (("apply", "--known-good", "garbage!!"), "not a pip requirement"),
        (("apply", "--known-good", "numpy==2.0"), "not a torch requirement"),
    ]
    for args, says in cases:
        run = run_cli(*args)
        assert run.code == 2, (args, run.stderr)
        _one_line_error(run.stderr, says)

"""Crash safety, for real: `apply` killed with SIGKILL (with its children, as a power loss would)
after every journal record and in the middle of each pip step, then `resume` or `rollback`.
After each, the venv is the old one or the new one, every distribution matching its RECORD
hashes, nothing half-installed left, and the journal says how the run ended.

The venv lacks two wheels torch 2.14.1 needs (`_data.CRASH_WITHHELD`), so a run is two real
pip steps from a local wheelhouse, each its own round, then verification. The crash points come
from a run that is not killed: one per record it writes, plus instants inside each step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import _data
import pytest
from cli_helpers import validate

from resolver.apply.journal import Event, read_journal
from resolver.apply.known_good import list_site
from resolver.apply.snapshot import verify_record

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_MID_STEP = (0.6, 1.0)  # seconds after a step-started record: pip is unpacking


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resolver", *args], capture_output=True,
                          text=True, check=False, timeout=900, start_new_session=True,
                          env={**os.environ, **(env or {})})


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def _link_copy(venv: Path, dest: Path) -> Path:
    """A link copy of the template venv (`template` checks at the end that it is unchanged)."""
    return _data.link_copy(venv, dest)


def _fingerprint(site: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The site's distributions (each checked against its RECORD) and top-level entries."""
    listing = list_site(site)
    for dist_info in listing.dists.values():
        assert verify_record(site, dist_info) == (), f"{dist_info} is half-installed"
    return tuple(sorted(listing.dists.values())), listing.entries


@pytest.fixture(scope="module")
def template(cuda_venv_lacking: Path) -> Iterator[Path]:
    """The shared venv; after the module, checked to be unchanged (no write went through)."""
    before = _fingerprint(_site(cuda_venv_lacking))
    yield cuda_venv_lacking
    assert _fingerprint(_site(cuda_venv_lacking)) == before


@pytest.fixture(scope="module")
def reference(template: Path, x86_wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    """A run that is not killed: the old and new fingerprints and the records it writes."""
    folder = tmp_path_factory.mktemp("reference")
    venv = _link_copy(template, folder / "venv")
    old = _fingerprint(_site(venv))
    done = _cli(*_apply_args(venv, x86_wheelhouse, folder / "state"))
    assert done.returncode == 0, done.stderr
    journal = next((folder / "state" / "runs").glob("*/journal.jsonl"))
    records = read_journal(journal)
    recipes = [r.data["recipe"] for r in records if r.event is Event.STEP_STARTED]
    # torch pins nvshmem itself (its Requires-Dist); cuFile comes through cuda-toolkit[cufile],
    # which is installed, so a recipe brings it: two real pip steps, two rounds.
    assert recipes == ["torch-requires", "cufile-cu13-pip"]
    new = _fingerprint(_site(venv))
    assert {d.split("-")[0] for d in set(new[0]) - set(old[0])} == {
        name.replace("-", "_") for name in _data.CRASH_WITHHELD}
    return {"old": old, "new": new,
            "events": [r.event for r in records],
            "steps": [r.seq for r in records if r.event is Event.STEP_STARTED]}


def _apply_args(venv: Path, wheelhouse: Path, state: Path) -> tuple[str, ...]:
    # No --rollback-on-fail: the torch is broken before the run (two libraries missing), so
    # that would make a CPU build the known-good state; `rollback` here restores the exact one.
    return ("apply", "--python", str(venv / "bin" / "python"), "--offline", "--wheelhouse",
            str(wheelhouse), "--state-dir", str(state))


def _case(template: Path, wheelhouse: Path, folder: Path, reference: dict[str, Any], *,
          crash: str, recovery: str) -> None:
    venv = _link_copy(template, folder / "venv")
    state = folder / "state"
    killed = _cli(*_apply_args(venv, wheelhouse, state),
                  env={"JETSON_RESOLVE_TEST_CRASH": crash})
    assert killed.returncode == -signal.SIGKILL, (crash, killed.returncode, killed.stderr)
    journal = next((state / "runs").glob("*/journal.jsonl"))
    ended = read_journal(journal)[-1].event is Event.RUN_FINISHED
    recovered = _cli(recovery, "--state-dir", str(state), "--json")
    if recovery == "resume" and ended:
        assert recovered.returncode == 2, recovered.stderr  # nothing to resume: it had ended
        assert "already ended" in recovered.stderr
        want = reference["new"]
    elif recovery == "resume":
        assert recovered.returncode == 0, (crash, recovered.stderr)
        document = json.loads(recovered.stdout)
        validate("run", document)
        assert document["outcome"] == "done" and document["verified"]["ok"]
        want = reference["new"]
    else:
        assert recovered.returncode == 0, (crash, recovered.stderr)
        document = json.loads(recovered.stdout)
        validate("run", document)
        assert document["outcome"] == "rolled-back"
        assert document["restored"]["problems"] == []
        want = reference["old"]
    assert _fingerprint(_site(venv)) == want, crash
    status = _cli("status", "--state-dir", str(state), "--json")
    assert json.loads(status.stdout)["outcome"] is not None  # the journal says how it ended


def test_kill_after_every_record_then_resume_or_rollback(
        template: Path, x86_wheelhouse: Path, reference: dict[str, Any],
        tmp_path: Path) -> None:
    events = reference["events"]
    assert events[0] is Event.RUN_STARTED and events[-1] is Event.RUN_FINISHED
    for seq in range(len(events)):
        # Alternate, so each kind of instant (before a step, a step in doubt, between steps,
        # verifying, ended) is recovered both ways across neighbouring records.
        recovery = "resume" if seq % 2 == 0 else "rollback"
        _case(template, x86_wheelhouse, tmp_path / f"r{seq}", reference,
              crash=f"after-record:{seq}", recovery=recovery)


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_kill_mid_step_then_resume_or_rollback(
        template: Path, x86_wheelhouse: Path, reference: dict[str, Any], tmp_path: Path,
        recovery: str) -> None:
    for seq in reference["steps"]:
        for delay in _MID_STEP:
            _case(template, x86_wheelhouse, tmp_path / f"m{seq}-{delay}", reference,
                  crash=f"after-record:{seq}:{delay}", recovery=recovery)


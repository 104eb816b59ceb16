"""x86, the full story, for real: a venv with torch 2.13.0+cpu, `apply --wheel` to torch 2.14.1
CUDA 13 from a local wheelhouse only, verified by the venv's own interpreter; a second run does
nothing; `rollback` brings torch 2.13.0+cpu back byte for byte. Then the same with the cuDNN
wheel withheld: the run fails, rolls back, exits 3.

The commands run as a user runs them (`python -m resolver ...` in a subprocess), each with its
own state folder."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import _data
from cli_helpers import validate

from resolver.apply.known_good import list_site
from resolver.apply.snapshot import find_dist_info, verify_record

if TYPE_CHECKING:
    from pathlib import Path


def _cli(*args: str, cwd: Path) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run([sys.executable, "-m", "resolver", *args], capture_output=True,
                          text=True, check=False, cwd=cwd, timeout=1800)
    try:
        document = json.loads(done.stdout) if "--json" in args else None
    except ValueError:
        document = None
    return done.returncode, document, done.stderr


def _copy(venv: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the CPU venv: its python and its site-packages."""
    target = _data.link_copy(venv, tmp_path / "venv")
    site = next((target / "lib").glob("python3.*/site-packages"))
    return target / "bin" / "python", site


def _python_says(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def _freeze(python: Path) -> list[str]:
    return sorted(_python_says(python, "import importlib.metadata as m; print('\\n'.join("
                               "f'{d.metadata[\"Name\"]}=={d.version}' for d in "
                               "m.distributions()))").splitlines())


def _assert_cpu_torch_back(python: Path, site: Path, freeze: list[str]) -> None:
    assert find_dist_info(site, "torch") == "torch-2.13.0+cpu.dist-info"
    assert verify_record(site, "torch-2.13.0+cpu.dist-info") == ()  # every file, by its hash
    assert _python_says(python, "import torch; print(torch.__version__, torch.version.cuda)"
                        ) == "2.13.0+cpu None"
    assert _freeze(python) == freeze


def test_full_story_then_rollback(cpu_venv: Path, x86_wheelhouse: Path, tmp_path: Path) -> None:
    python, site = _copy(cpu_venv, tmp_path)
    freeze = _freeze(python)
    entries = list_site(site).entries
    wheel = next(x86_wheelhouse.glob("torch-2.14.1-*.whl"))
    state = tmp_path / "state"
    apply = ("apply", "--python", str(python), "--wheel", str(wheel), "--offline",
             "--wheelhouse", str(x86_wheelhouse), "--rollback-on-fail", "--state-dir",
             str(state), "--json")

    code, document, stderr = _cli(*apply, cwd=tmp_path)
    assert code == 0, stderr
    assert document is not None
    validate("run", document)
    assert document["outcome"] == "done"
    assert [s["state"] for s in document["steps"]] == ["done"]
    verified = document["verified"]
    assert verified["ok"] and verified["report"]["version"] == "2.14.1+cu130"
    assert verified["report"]["cuda"] == "13.0" and verified["report"]["cudnn"] >= 91900
    assert _python_says(python, "import torch; print(torch.version.cuda)") == "13.0"

    # diagnose agrees: clean except the driver this machine does not have.
    code, diagnosis, _ = _cli("diagnose", "--python", str(python), "--json", "--no-cache",
                              cwd=tmp_path)
    assert code == 0
    assert diagnosis is not None
    assert {f["soname"] for f in diagnosis["findings"]} == {"libcuda.so.1"}

    # A second run does nothing.
    code, again, stderr = _cli(*apply, cwd=tmp_path)
    assert code == 0, stderr
    assert again is not None and again["steps"] == [] and again["run"] != document["run"]

    # Roll the first run back, by name: torch 2.13.0+cpu byte for byte, the site as it was.
    code, rolled, stderr = _cli("rollback", "--state-dir", str(state), "--run",
                                document["run"], "--json", cwd=tmp_path)
    assert code == 0, stderr
    assert rolled is not None
    validate("run", rolled)
    assert rolled["outcome"] == "rolled-back" and rolled["restored"]["problems"] == []
    _assert_cpu_torch_back(python, site, freeze)
    assert list_site(site).entries == entries

    code, status, _ = _cli("status", "--state-dir", str(state), "--run", document["run"],
                           "--json", cwd=tmp_path)
    assert code == 3 and status is not None
    assert [s["state"] for s in status["steps"]] == ["undone"]


def test_cudnn_withheld_fails_and_rolls_back(cpu_venv: Path, x86_wheelhouse: Path,
                                             tmp_path: Path) -> None:
    python, site = _copy(cpu_venv, tmp_path)
    freeze = _freeze(python)
    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for wheel in x86_wheelhouse.glob("*.whl"):
        if not wheel.name.startswith("nvidia_cudnn"):
            (partial / wheel.name).symlink_to(wheel)
    wheel = next(partial.glob("torch-2.14.1-*.whl"))
    code, document, stderr = _cli(
        "apply", "--python", str(python), "--wheel", str(wheel), "--offline", "--wheelhouse",
        str(partial), "--rollback-on-fail", "--state-dir", str(tmp_path / "state"), "--json",
        cwd=tmp_path)
    assert code == 3, stderr
    assert document is not None
    assert document["outcome"] == "rolled-back"
    assert document["steps"][0]["state"] == "undone"
    assert "nvidia-cudnn" in document["steps"][0]["output"].lower().replace("_", "-")
    _assert_cpu_torch_back(python, site, freeze)


def test_dry_run_says_what_it_would_run_and_changes_nothing(cpu_venv: Path,
                                                            x86_wheelhouse: Path,
                                                            tmp_path: Path) -> None:
    python = cpu_venv / "bin" / "python"
    site = next((cpu_venv / "lib").glob("python3.*/site-packages"))
    entries = list_site(site).entries
    wheel = next(x86_wheelhouse.glob("torch-2.14.1-*.whl"))
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "apply", "--python", str(python), "--wheel",
         str(wheel), "--offline", "--wheelhouse", str(x86_wheelhouse), "--dry-run",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"would run: {python} -m pip install --no-index --find-links" in done.stdout
    assert str(wheel) in done.stdout
    assert list_site(site).entries == entries and not (tmp_path / "state").exists()


def test_a_broken_torch_needs_an_installable_known_good_build(cuda_venv_lacking: Path,
                                                             x86_wheelhouse: Path,
                                                             tmp_path: Path) -> None:
    # torch 2.14.1 missing two CUDA wheels blocks import: with --rollback-on-fail the fallback
    # is the target's known-good CPU recipe (torch 2.9.1+cpu), which no source here holds.
    # Refused before anything changes.
    venv = _data.link_copy(cuda_venv_lacking, tmp_path / "venv")
    site = next((venv / "lib").glob("python3.*/site-packages"))
    entries = list_site(site).entries
    code, _, stderr = _cli("apply", "--python", str(venv / "bin" / "python"), "--offline",
                           "--wheelhouse", str(x86_wheelhouse), "--rollback-on-fail",
                           "--state-dir",
                           str(tmp_path / "state"), cwd=tmp_path)
    assert code == 2
    assert "the installed torch is already broken, and the known-good build" in stderr
    assert "cannot be installed from these sources" in stderr
    assert list_site(site).entries == entries and not (tmp_path / "state").exists()


def test_a_broken_torch_falls_back_to_the_known_good_build_it_names(
        cuda_venv_lacking: Path, x86_wheelhouse: Path, tmp_path: Path) -> None:
    # torch 2.14.1 lacking two CUDA wheels, and a wheelhouse lacking one of them: the run
    # cannot finish, so --rollback-on-fail puts the site back and installs the named CPU build.
    venv = _data.link_copy(cuda_venv_lacking, tmp_path / "venv")
    python = venv / "bin" / "python"
    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for wheel in x86_wheelhouse.glob("*.whl"):
        if not wheel.name.startswith("nvidia_cufile"):
            (partial / wheel.name).symlink_to(wheel)
    code, document, stderr = _cli(
        "apply", "--python", str(python), "--offline", "--wheelhouse", str(partial),
        "--rollback-on-fail", "--known-good", "torch==2.13.0+cpu", "--state-dir",
        str(tmp_path / "state"), "--json", cwd=tmp_path)
    assert code == 3, stderr
    assert document is not None
    validate("run", document)
    assert document["outcome"] == "rolled-back" and document["restored"]["problems"] == []
    # The +cpu build comes from pip's configured sources, as the CPU venv's did.
    assert _python_says(python, "import torch; print(torch.__version__)") == "2.13.0+cpu"

"""A source-build step run for real, on a small project standing in for PyTorch's tree (a real
torch build takes hours): a git repository made here, reached through the recipe's GitHub URL
by git's own `url.<base>.insteadOf` (as an air-gapped mirror would be), its tag checked out,
an upstream commit cherry-picked, a wheel built with the recipe's environment (the version
from `PYTORCH_BUILD_VERSION`, as PyTorch's setup.py reads it) and installed into a venv. A
commit that does not apply cleanly stops the step, and rollback removes the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from cli_helpers import QuietProgress

from resolver.apply.executor import SubprocessExecutor
from resolver.apply.journal import Event
from resolver.apply.rollback import roll_back
from resolver.apply.runs import new_run
from resolver.apply.session import ApplyReport, ApplyRequest, Ending, StepKeeper
from resolver.findings.model import MissingLibrary, Severity
from resolver.plan import PlanOptions, make_plan
from resolver.recipes.database import load_database
from resolver.recipes.match import Fix

if TYPE_CHECKING:
    from pathlib import Path

    from resolver.plan import Action

_UPSTREAM = "https://github.com/pytorch/pytorch"
_SETUP = """import os
from setuptools import setup
setup(name="torch", version=os.environ["PYTORCH_BUILD_VERSION"], packages=["torch"])
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@invalid"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> dict[str, str]:
    """A repository with a tag and, after it, a commit that applies to the tag and one that
    does not (it edits a line the tag does not have)."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "uploadpack.allowAnySHA1InWant", "true")
    _commit(repo, {"setup.py": _SETUP, "torch/__init__.py": "VALUE = 1\n"}, "tag")
    _git(repo, "tag", "v1.0")
    clean = _commit(repo, {"torch/fix.py": "FIXED = True\n"}, "an upstream fix")
    _commit(repo, {"torch/__init__.py": "VALUE = 3\n"}, "moves on")
    conflicting = _commit(repo, {"torch/__init__.py": "VALUE = 4\n"}, "builds on that")
    return {"repo": str(repo), "clean": clean, "conflicting": conflicting}


def _action(tmp_path: Path, python: Path, sha: str) -> Action:
    folder = tmp_path / "recipes"
    folder.mkdir(exist_ok=True)
    (folder / "torch-built.toml").write_text(f"""schema = 1
summary = "torch built from source at v1.0 with one upstream commit"
sources = ["{_UPSTREAM}"]

[provides]
sonames = ["libtorch_cuda.so"]
version = "1.0+jr"

[applies]
arch = ["x86_64"]

[[methods]]
id = "source-build"
[[methods.steps]]
kind = "source-build"
repository = "{_UPSTREAM}"
tag = "v1.0"
commits = [{{sha = "{sha}", url = "{_UPSTREAM}/pull/1", first_release = "9.9"}}]
[methods.steps.env]
PYTORCH_BUILD_VERSION = "1.0+jr"
""")
    (recipe,) = load_database(folder)
    finding = MissingLibrary(severity=Severity.BLOCKS_IMPORT, soname="libtorch_cuda.so",
                             requested_by=("python",), searched=())
    fix = Fix(finding=finding, wanted="torch", recipes=(recipe,), excluded=())
    options = PlanOptions(python=str(python), site="/", source_build=True,
                          build_dir=str(tmp_path / "build"))
    (action,) = make_plan([fix], options).actions
    return action


def _venv(tmp_path: Path, x86_wheelhouse: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(x86_wheelhouse), "--upgrade", "setuptools"],
                   check=True)  # the build backend, with its own bdist_wheel
    return python


def _run(tmp_path: Path, python: Path, action: Action, upstream: dict[str, str]
         ) -> tuple[bool, ApplyReport, StepKeeper]:
    git_mirror = {"GIT_CONFIG_COUNT": "1",
                  "GIT_CONFIG_KEY_0": f"url.file://{upstream['repo']}.insteadOf",
                  "GIT_CONFIG_VALUE_0": _UPSTREAM}
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip()
    request = ApplyRequest(root="/", site=site, python=str(python), verify_argv=None)
    run = new_run(tmp_path / "state")
    run.journal().append(Event.RUN_STARTED, data=request.as_data())
    run.known_good.begin(request.site_host, tmp_path / "no-conf")
    keeper = StepKeeper(run, request, QuietProgress())
    report = ApplyReport(ending=Ending.DONE)
    executor = SubprocessExecutor(root=tmp_path / "unused-root",
                                  env={**os.environ, **git_mirror})
    return keeper.run_round([action], executor, report), report, keeper


def test_tag_plus_cherry_pick_built_with_the_recipe_env_and_installed(
        tmp_path: Path, upstream: dict[str, str], x86_wheelhouse: Path) -> None:
    python = _venv(tmp_path, x86_wheelhouse)
    action = _action(tmp_path, python, upstream["clean"])
    assert action.argv[0][:3] == ("git", "clone", "--branch")
    assert ("cherry-pick", upstream["clean"]) == action.argv[2][-2:]
    ok, report, _ = _run(tmp_path, python, action, upstream)
    assert ok, report.failed_output
    probe = ("import torch, torch.fix, importlib.metadata as m; "
             "print(m.version('torch'), torch.VALUE, torch.fix.FIXED)")
    shown = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                           check=True, cwd=tmp_path)
    assert shown.stdout.split() == ["1.0+jr", "1", "True"]  # the tag, the fix, the env


def test_a_commit_that_does_not_apply_cleanly_stops_the_step(
        tmp_path: Path, upstream: dict[str, str], x86_wheelhouse: Path) -> None:
    python = _venv(tmp_path, x86_wheelhouse)
    action = _action(tmp_path, python, upstream["conflicting"])
    ok, report, keeper = _run(tmp_path, python, action, upstream)
    assert not ok
    assert "could not apply" in report.failed_output.lower() or (
        "conflict" in report.failed_output.lower())
    assert (tmp_path / "build" / "torch-built").is_dir()
    assert roll_back(keeper.run, SubprocessExecutor(root=tmp_path / "unused-root")).complete
    assert not (tmp_path / "build" / "torch-built").exists()  # the checkout, taken away
    assert subprocess.run([str(python), "-c", "import torch"], check=False,
                          capture_output=True, cwd=tmp_path).returncode != 0  # nothing installed

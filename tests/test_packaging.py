"""The wheel a plain `pip install .` builds carries the top-level fixtures/ and recipes/ folders,
and the installed package finds and uses them from outside any checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from resolver.shipped_data import fixtures_root, recipes_root

TOP = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((TOP / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    # Every folder of resolver/ is a package (setuptools' namespace discovery, without setuptools).
    found = {".".join(d.relative_to(TOP).parts) for d in [TOP / "resolver",
             *(TOP / "resolver").rglob("*")] if d.is_dir() and d.name != "__pycache__"}
    mapped = set(config["package-dir"])
    assert listed - mapped == found
    assert {str(TOP / d) for d in config["package-dir"].values()} == {
        str(fixtures_root()), str(recipes_root())}


def _clean_copy(destination: Path) -> Path:
    """The files git tracks (and untracked, unignored ones), as a fresh clone would hold them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=TOP,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (TOP / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TOP / name, destination / name)
    return destination


@pytest.mark.network  # build isolation fetches setuptools (pip caches it)
@pytest.mark.slow
def test_plain_pip_install_carries_and_finds_the_shipped_folders(tmp_path: Path) -> None:
    source = _clean_copy(tmp_path / "clone")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True)
    wheel = next((tmp_path / "dist").glob("jetson_resolve-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(TOP).as_posix() for d in ("fixtures", "recipes")
               for p in (TOP / d).rglob("*") if p.is_file()}
    assert shipped, "nothing to ship"
    assert {f"resolver/_shipped/{name}" for name in shipped} <= names
    assert {"resolver/cli/schemas/diagnose.json", "resolver/loader/dlopen.json",
            "resolver/target/jetson_releases.json"} <= names

    # Run the wheel's own code, not this checkout's: unpacked, with site processing off so the
    # editable install's import hook never loads, its dependencies from this interpreter.
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    env = {**os.environ, "PYTHONPATH": f"{installed}:{sysconfig.get_paths()['purelib']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    probe = ("import resolver.shipped_data as s, sys; "
             "print(s.__file__); print(s.fixtures_root()); print(s.recipes_root())")
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env,
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out == [str(installed / "resolver" / "shipped_data.py"),
                   str(installed / "resolver" / "_shipped" / "fixtures"),
                   str(installed / "resolver" / "_shipped" / "recipes")]
    run = subprocess.run([sys.executable, "-S", "-m", "resolver", "diagnose", "--fixture",
                          "thor-jp7.0", "--torch-fixture", "torch-2.11.0-aarch64", "--json"],
                         cwd=tmp_path, env=env, check=False, capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["target"]["fixture"] == "thor-jp7.0"

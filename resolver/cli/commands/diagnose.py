"""`jetson-resolve diagnose`: what will fail to load, why, and how badly.

This module turns options into a `resolver.sources.Source` (detecting the live host where the
user left things out), diagnoses it, and hands the result to a renderer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.errors import ExitCode, fail, guarded, parse_gpu_arch
from resolver.sources import Source

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.recipes.match import Fix
    from resolver.target.rootfs import RootFS

__all__ = [
    "Source",
    "detect_python_site",
    "exit_code_of",
    "make_source",
    "match_fixes",
    "register",
    "run_diagnose",
]


def detect_python_site(python: str) -> tuple[str, tuple[str, ...], str]:
    """Ask an interpreter where its torch is (without importing torch) and what sys.path is."""
    probe = ("import importlib.util, json, sys; s = importlib.util.find_spec('torch'); "
             "print(json.dumps({'torch': s.origin if s else None, 'path': sys.path, "
             "'version': '%d.%d' % sys.version_info[:2]}))")
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                              check=False, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise fail(f"{python}: cannot run this interpreter ({err})") from None
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
        torch = info["torch"]
        sys_path, version = [str(p) for p in info["path"]], str(info["version"])
    except (ValueError, IndexError, KeyError, TypeError):
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(f"{python}: cannot ask it where torch is (exit {done.returncode}: "
                   f"{said})") from None
    if not torch:
        raise fail(f"{python}: this interpreter has no torch installed")
    site = str(Path(torch).parent.parent)
    return site, tuple(p for p in sys_path if p), version


def make_source(
    *, python: str | None, site_packages: Path | None, wheel: Path | None, root: Path | None,
    ld_library_path: str | None, gpu_arch: str | None, no_cache: bool,
    fixture: str | None = None, torch_fixture: str | None = None,
) -> Source:
    """Decide what to diagnose from the options and the live host; exits 2 on bad usage."""
    from resolver.elf.cache import default_cache_path  # noqa: PLC0415

    chosen = [name for name, value in (("--python", python), ("--site-packages", site_packages),
                                       ("--wheel", wheel), ("--torch-fixture", torch_fixture))
              if value is not None]
    if len(chosen) > 1:
        raise fail("give one of --python, --site-packages, --wheel, --torch-fixture "
                   f"(got {' and '.join(chosen)})")
    if fixture is not None and root is not None:
        raise fail("give --root or --fixture, not both")
    root = root or Path("/")
    live = os.path.abspath(root) == "/" and fixture is None
    if ld_library_path is None:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH", "") if live else ""
    source = Source(root=str(root), fixture=fixture, torch_fixture=torch_fixture,
                    ld_library_path=ld_library_path, gpu_arch=parse_gpu_arch(gpu_arch),
                    facts_cache=None if no_cache else default_cache_path())
    if wheel is not None:
        if not wheel.is_file():
            raise fail(f"--wheel {wheel}: no such file")
        return dataclasses.replace(source, wheel=str(wheel.resolve()))
    if site_packages is not None:
        if not site_packages.is_dir():
            raise fail(f"--site-packages {site_packages}: not a directory")
        return dataclasses.replace(source, site=str(site_packages.resolve()))
    if torch_fixture is not None:
        return source
    if not live:
        raise fail("give --site-packages, --wheel or --torch-fixture for another root "
                   "(--python runs the interpreter here, so it needs the live root)")
    return _with_interpreter(source, python or sys.executable)


def _with_interpreter(source: Source, interpreter: str) -> Source:
    """`source` with the torch, sys.path and version the live interpreter reports."""
    from packaging.version import Version  # noqa: PLC0415

    from resolver.cli.result_cache import active_witness  # noqa: PLC0415

    site, sys_path, version = detect_python_site(interpreter)
    witness = active_witness()
    if witness is not None:
        # The interpreter's answer changes with its binary and what its sys.path folders hold.
        for path in (shutil.which(interpreter) or interpreter, *sys_path):
            witness.saw(os.path.realpath(path))
    return dataclasses.replace(source, site=site, sys_path=sys_path, python=Version(version))


def run_diagnose(source: Source) -> tuple[Diagnosis, RootFS]:
    """Open the source and diagnose it.

    Raises:
        ResolveError: bad input (no torch, unreadable wheel, fixture or C library).

    """
    from resolver.cli.result_cache import active_witness  # noqa: PLC0415
    from resolver.diagnose import diagnose_source  # noqa: PLC0415
    from resolver.sources import open_source  # noqa: PLC0415

    with open_source(source, witness=active_witness()) as opened:
        return diagnose_source(opened), opened.rootfs


def match_fixes(result: Diagnosis, folder: Path | None) -> tuple[Fix, ...]:
    """The fix of every finding, from the recipes in `folder` (default: the shipped ones).

    Raises:
        RecipeError: a recipe is invalid, or the folder cannot be read.

    """
    from resolver.cli.result_cache import active_witness  # noqa: PLC0415
    from resolver.errors import RecipeError  # noqa: PLC0415
    from resolver.recipes.database import load_database  # noqa: PLC0415
    from resolver.recipes.match import match_findings, target_of, wanted_by  # noqa: PLC0415
    from resolver.shipped_data import recipes_root  # noqa: PLC0415

    folder = folder or recipes_root()
    if not folder.is_dir():
        raise RecipeError("not a directory of recipes", file=str(folder))
    if not any(wanted_by(f) for f in result.findings):
        return ()  # nothing a recipe could fix: no need to read the database
    witness = active_witness()
    if witness is not None:  # the recipes decide the fixes shown: a changed one is a miss
        witness.saw(str(folder))
        for path in sorted(folder.glob("*.toml")):
            witness.saw(str(path))
    recipes = load_database(folder)
    target = target_of(result.platform, result.torch.cuda if result.torch else None)
    return match_findings(result.findings, recipes, target)


def exit_code_of(result: Diagnosis) -> ExitCode:
    """0 when nothing blocks `import torch`, 1 when something does."""
    return ExitCode.FINDINGS if result.blocks_import else ExitCode.OK


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("diagnose")
    def diagnose_command(
        python: opt.Python = None,
        site_packages: opt.SitePackages = None,
        wheel: opt.Wheel = None,
        root: opt.Root = None,
        fixture: opt.Fixture = None,
        torch_fixture: opt.TorchFixture = None,
        ld_library_path: opt.LdLibraryPath = None,
        gpu_arch: opt.GpuArch = None,
        as_json: opt.Json = False,
        verbose: Annotated[int, typer.Option(
            "--verbose", "-v", count=True, metavar="",
            help="-v: where the loader looked for each finding; -vv: every path it tried.",
        )] = 0,
        no_cache: opt.NoCache = False,
        recipes: opt.Recipes = None,
        debug: opt.Debug = False,
    ) -> None:
        """What will fail to load on the target, why, and whether it breaks `import torch`."""
        if verbose > 2:
            raise fail(f"-v: give it at most twice (-v or -vv), got {verbose}")
        source = make_source(python=python, site_packages=site_packages, wheel=wheel, root=root,
                             ld_library_path=ld_library_path, gpu_arch=gpu_arch,
                             no_cache=no_cache, fixture=fixture, torch_fixture=torch_fixture)
        result, rootfs = guarded(debug, lambda: run_diagnose(source))
        fixes = guarded(debug, lambda: match_fixes(result, recipes))
        code = exit_code_of(result)
        if as_json:
            from resolver.cli.render_json import diagnosis_json, dump  # noqa: PLC0415

            sys.stdout.write(dump(diagnosis_json(result, rootfs, code, fixture=fixture,
                                                torch_fixture=torch_fixture, fixes=fixes)))
        else:
            from resolver.cli.render_human import render_diagnosis  # noqa: PLC0415

            render_diagnosis(result, rootfs, code, verbosity=verbose, fixture=fixture,
                             torch_fixture=torch_fixture, fixes=fixes)
        raise typer.Exit(int(code))

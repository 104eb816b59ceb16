"""`jetson-resolve diagnose`: what will fail to load, why, and how badly.

This module turns options into a `resolver.sources.Source` (detecting the live host where the
user left things out), diagnoses it, and hands the result to a renderer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.errors import ExitCode, fail, parse_gpu_arch
from resolver.sources import Source

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.elf.facts import ElfFacts
    from resolver.recipes.match import Fix
    from resolver.target.rootfs import RootFS

__all__ = [
    "Probed",
    "Source",
    "exit_code_of",
    "interpreter_argv",
    "make_source",
    "match_fixes",
    "probe_interpreter",
    "register",
    "run_diagnose",
]


# The maps are read before anything else is imported: what they list is the process as site.py
# left it (the probe's own json import would add `_json`).
_PROBE = (
    "import os, sys\n"
    "maps = []\n"
    "try:\n"
    "    maps = [l.split(None, 5)[5].strip() for l in open('/proc/self/maps') if "
    "len(l.split(None, 5)) == 6]\n"
    "except OSError: pass\n"
    "import importlib.util, json\n"
    "if sys.flags.no_site:\n"
    "    import site\n"
    "    sys.path.extend(p for p in site.getsitepackages() if p not in sys.path)\n"
    "s = importlib.util.find_spec('torch')\n"
    "print(json.dumps({'torch': s.origin if s else None, 'path': sys.path, "
    "'version': '%d.%d' % sys.version_info[:2], 'executable': os.path.realpath(sys.executable), "
    "'maps': sorted(set(m for m in maps if '.so' in os.path.basename(m)))}))"
)
# Another root's interpreter runs isolated (-I: no PYTHONPATH, user site or working folder of
# ours) and without site (-S): site.py would run the root's .pth `import` lines here, on this
# machine, where qemu-user does not confine their writes. Its site folders come from
# site.getsitepackages(); their .pth path lines are read by `site_sys_path`.
_ROOT_PROBE_FLAGS = ("-I", "-S")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Probed:
    """What an interpreter said of itself (host paths; under qemu -L, with the root's prefix)."""

    site: str | None  # where its torch is; None when it has none
    sys_path: tuple[str, ...]
    version: str
    executable: str
    loaded: tuple[str, ...]  # shared objects mapped at start (its own and site's imports)


def probe_interpreter(argv: tuple[str, ...], python: str, *, isolated: bool = False) -> Probed:
    """Run `argv` (an interpreter, maybe under qemu-user) and ask it about itself.

    `isolated` runs it as another root's: -I -S, a clean environment, from `/`.
    Exits 2 when it cannot run or does not answer.
    """
    flags = _ROOT_PROBE_FLAGS if isolated else ()
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"} if isolated else None
    try:
        done = subprocess.run([*argv, *flags, "-c", _PROBE], capture_output=True, text=True,
                              check=False, timeout=120, env=env, cwd="/" if isolated else None)
    except (OSError, subprocess.SubprocessError) as err:
        raise fail(f"{python}: cannot run this interpreter ({err})") from None
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(f"{python}: cannot ask it where torch is (exit {done.returncode}: "
                   f"{said})") from None
    return _probed_of(info, python)


def _probed_of(info: object, python: str) -> Probed:
    """The probe's answer, checked field by field; exits 2 on any other shape."""
    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    if not (isinstance(info, dict) and (info.get("torch") is None or isinstance(
            info["torch"], str)) and strings(info.get("path")) and strings(info.get("maps"))
            and isinstance(info.get("executable"), str) and isinstance(info.get("version"), str)
            and re.fullmatch(r"\d+\.\d+", info["version"])):
        raise fail(f"{python}: answered the probe with something else than expected: "
                   f"{json.dumps(info)[:120]}")
    torch = info["torch"]
    return Probed(site=str(Path(torch).parent.parent) if torch else None,
                  sys_path=tuple(p for p in info["path"] if p), version=info["version"],
                  executable=info["executable"], loaded=tuple(info["maps"]))


def _split_list(value: str | None) -> tuple[str, ...]:
    """A colon-separated list (LD_PRELOAD also takes spaces), empty entries dropped."""
    if not value:
        return ()
    return tuple(p for p in re.split(r"[:\s]", value) if p)


def make_source(
    *, python: str | None, site_packages: Path | None, wheel: Path | None, root: Path | None,
    ld_library_path: str | None, gpu_arch: str | None, no_cache: bool,
    fixture: str | None = None, torch_fixture: str | None = None,
    sys_path: str | None = None, ld_preload: str | None = None, preloaded: str | None = None,
) -> Source:
    """Decide what to diagnose from the options and the live host; exits 2 on bad usage.

    `sys_path`, `ld_preload` and `preloaded` are lists as the target sees them (paths in the
    root); `python` for another root is a path inside it.
    """
    from resolver.elf.cache import default_cache_path  # noqa: PLC0415

    _check_choice(python=python, site_packages=site_packages, wheel=wheel,
                  torch_fixture=torch_fixture, fixture=fixture, root=root)
    # The root's real path: every path given inside it is compared with it, and a root given
    # through a symlink would not match the paths the interpreter prints.
    root = Path(os.path.realpath(root)) if root is not None else Path("/")
    live = os.path.abspath(root) == "/" and fixture is None
    if ld_library_path is None:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH", "") if live else ""
    source = Source(root=str(root), fixture=fixture, torch_fixture=torch_fixture,
                    ld_library_path=ld_library_path, gpu_arch=parse_gpu_arch(gpu_arch),
                    facts_cache=None if no_cache else default_cache_path(),
                    sys_path=tuple(_in_root(root, p) for p in _split_list(sys_path)),
                    ld_preload=_split_list(os.environ.get("LD_PRELOAD", "") if ld_preload is None
                                           and live else ld_preload),
                    preloaded=_split_list(preloaded))
    if wheel is not None:
        from resolver.host_files import not_regular  # noqa: PLC0415

        problem = not_regular(wheel)
        if problem:
            raise fail(f"--wheel {wheel}: {problem}")
        return dataclasses.replace(source, wheel=str(wheel.resolve()))
    if python is not None and not live:
        source = _with_root_interpreter(source, root, python, fixture,
                                        site_given=site_packages is not None)
        if site_packages is None:
            return source
    if site_packages is not None:
        return _with_site(source, site_packages, python if live else None)
    if torch_fixture is not None:
        return source
    if not live:
        raise fail("give --site-packages, --wheel, --torch-fixture or the root's --python for "
                   "another root")
    return _with_interpreter(source, python or sys.executable)


def _with_site(source: Source, site_packages: Path, live_python: str | None) -> Source:
    """`source` with the torch in `site_packages`; with the live `--python`, its process."""
    if not site_packages.is_dir():
        raise fail(f"--site-packages {site_packages}: not a directory")
    if live_python is not None:
        source = _with_interpreter(source, live_python, require_torch=False)
    return dataclasses.replace(source, site=str(site_packages.resolve()))


def _check_choice(*, python: str | None, site_packages: Path | None, wheel: Path | None,
                  torch_fixture: str | None, fixture: str | None, root: Path | None) -> None:
    """Exit 2 unless one torch is named (--python may go with --site-packages)."""
    chosen = [name for name, value in (("--python", python), ("--site-packages", site_packages),
                                       ("--wheel", wheel), ("--torch-fixture", torch_fixture))
              if value is not None]
    if len(chosen) > 1 and chosen != ["--python", "--site-packages"]:
        raise fail("give one of --python, --site-packages, --wheel, --torch-fixture "
                   f"(got {' and '.join(chosen)}; --python may go with --site-packages)")
    if fixture is not None and root is not None:
        raise fail("give --root or --fixture, not both")


def _in_root(root: Path, path: str) -> str:
    """A path as the target names it, as a host path (`root` + path)."""
    if os.path.abspath(root) == "/":
        return path
    return str(root / path.lstrip("/"))


def _with_root_interpreter(source: Source, root: Path, python: str, fixture: str | None,
                           *, site_given: bool = False) -> Source:
    """`source` with another root's interpreter: read as ELF always, run when it can be.

    The path is resolved inside the root (its absolute symlinks point into the root, not at
    this machine's files).
    """
    from packaging.version import Version  # noqa: PLC0415

    from resolver.target.python_env import with_pth_dirs  # noqa: PLC0415
    from resolver.target.rootfs import RootFS, path_in_root  # noqa: PLC0415

    if fixture is not None:
        raise fail("--python with --fixture: a fixture's interpreter cannot be run; give "
                   "--site-packages or --torch-fixture")
    inside = path_in_root(str(root), os.path.abspath(python)) if python.startswith(
        str(root).rstrip("/") + "/") else python
    if inside is None or not inside.startswith("/"):
        raise fail(f"--python {python}: give a path inside {root}")
    resolved = RootFS(str(root)).resolve(inside)
    if not resolved.ok or resolved.real is None or os.path.isdir(_in_root(root, resolved.real)):
        what = resolved.problem or "not a file"
        raise fail(f"--python {python}: {what} in {root}")
    host = Path(_in_root(root, resolved.real))
    argv, _why = interpreter_argv(root, host)
    source = dataclasses.replace(source, interpreter=str(host))
    if argv is None:
        return source  # read as ELF only: sys.path and its torch from its prefix
    probed = probe_interpreter(argv, python, isolated=True)
    prefix = str(root).rstrip("/") + "/"

    def host_path(path: str) -> str:
        return path if path.startswith(prefix) else _in_root(root, path)

    site = None if probed.site is None else host_path(probed.site)
    if site is None and not site_given:
        raise fail(f"--python {python}: this interpreter has no torch installed")
    # Run without site, it printed its site folders but not what their .pth lines add.
    sys_path = source.sys_path or tuple(
        _in_root(root, p) for p in with_pth_dirs(
            RootFS(str(root)), tuple(path_in_root(str(root), host_path(p)) or p
                                     for p in probed.sys_path)))
    return dataclasses.replace(source, site=site, sys_path=sys_path,
                               python=Version(probed.version))


def interpreter_argv(root: Path, interpreter: Path) -> tuple[tuple[str, ...] | None, str]:
    """How to run a root's interpreter here, or None and why it cannot run.

    Another architecture runs under qemu-user; this one, in another root, would need chroot.
    """
    from resolver.elf.facts import machine_name  # noqa: PLC0415
    from resolver.elf.reader import read_elf_facts  # noqa: PLC0415
    from resolver.errors import InvalidElf  # noqa: PLC0415

    try:
        with interpreter.open("rb") as stream:
            facts = read_elf_facts(stream, origin=str(interpreter))
    except (OSError, InvalidElf) as err:
        raise fail(f"--python {interpreter}: not an interpreter this tool can read ({err})"
                   ) from None
    # It will run: it must be Python (its entry point in itself or a libpython it needs), not
    # whatever program the path names (a root's ldconfig would write this machine's cache).
    if not _is_python(facts):
        raise fail(f"--python {interpreter}: not a Python interpreter (defines no Py_BytesMain "
                   "and needs no libpython)")
    machine = machine_name(facts.machine)
    if machine == os.uname().machine:
        return None, "an interpreter of this machine's architecture in another root needs chroot"
    qemu = shutil.which(f"qemu-{machine}-static") or shutil.which(f"qemu-{machine}")
    if qemu is None:
        return None, f"no qemu-{machine}-static here"
    return (qemu, "-L", str(root.resolve()), str(interpreter)), ""


def _is_python(facts: ElfFacts) -> bool:
    """True for a CPython executable: it defines Py_BytesMain/Py_Main or needs libpython."""
    from resolver.elf.facts import reference_binds  # noqa: PLC0415

    if any(name.startswith("libpython") for name in facts.needed):
        return True
    symbols = facts.symbols
    return symbols is not None and any(reference_binds(name, symbols.keys)
                                       for name in ("Py_BytesMain", "Py_Main"))


def _with_interpreter(source: Source, interpreter: str, *, require_torch: bool = True
                      ) -> Source:
    """`source` with what the live interpreter reports.

    That is its torch, sys.path, version, executable and the libraries it has loaded.
    """
    from packaging.version import Version  # noqa: PLC0415

    from resolver.cli.result_cache import active_witness  # noqa: PLC0415

    probed = probe_interpreter((interpreter,), interpreter)
    if probed.site is None and require_torch:
        raise fail(f"{interpreter}: this interpreter has no torch installed")
    witness = active_witness()
    if witness is not None:
        # The interpreter's answer changes with its binary and what its sys.path folders hold.
        for path in (shutil.which(interpreter) or interpreter, *probed.sys_path):
            witness.saw(os.path.realpath(path))
    return dataclasses.replace(
        source, site=probed.site or source.site, sys_path=probed.sys_path,
        python=Version(probed.version),
        interpreter=probed.executable, preloaded=source.preloaded or probed.loaded)


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
        sys_path: opt.SysPath = None,
        ld_preload: opt.LdPreload = None,
        preloaded: opt.Preloaded = None,
        gpu_arch: opt.GpuArch = None,
        as_json: opt.Json = False,
        verbose: Annotated[int, typer.Option(
            "--verbose", "-v", count=True, metavar="",
            help="-v: where the loader looked for each finding; -vv: every path it tried.",
        )] = 0,
        no_cache: opt.NoCache = False,
        recipes: opt.Recipes = None,
        debug: opt.Debug = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """What will fail to load on the target, why, and whether it breaks `import torch`."""
        if verbose > 2:
            raise fail(f"-v: give it at most twice (-v or -vv), got {verbose}")
        source = make_source(python=python, site_packages=site_packages, wheel=wheel, root=root,
                             ld_library_path=ld_library_path, gpu_arch=gpu_arch,
                             no_cache=no_cache, fixture=fixture, torch_fixture=torch_fixture,
                             sys_path=sys_path, ld_preload=ld_preload, preloaded=preloaded)
        result, rootfs = run_diagnose(source)
        fixes = match_fixes(result, recipes)
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

"""`jetson-resolve plan`: the ordered fix steps, as the exact commands `apply` will run.

It diagnoses as `diagnose` does, matches every finding to the recipes that fit the target, and
prints the plan (`resolver.plan`); it changes nothing and reads no network. With `--offline
--wheelhouse DIR`, pip steps resolve against DIR only, and a requirement DIR lacks is named.
Exit 0 when the plan fixes every finding it can see, 1 when something is left unfixable.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from resolver.cli import options as opt  # noqa: TC001 - typer reads the annotations at run time
from resolver.cli.errors import ExitCode, fail

if TYPE_CHECKING:
    from resolver.cli.commands.diagnose import Source
    from resolver.diagnose import Diagnosis
    from resolver.plan import PlanOptions

__all__ = ["check_plan_flags", "pip_platform_options", "plan_options", "register"]

_PREFER = ("pip", "apt", "redist")
_DEB_ARCH = {"aarch64": "arm64", "x86_64": "amd64"}  # dpkg-architecture(1) names


def check_plan_flags(*, prefer: str | None, offline: bool, wheelhouse: Path | None) -> None:
    """Refuse (exit 2) a --prefer that names no step kind, and half of --offline --wheelhouse."""
    if prefer is not None and prefer not in _PREFER:
        raise fail(f"--prefer: expected one of {', '.join(_PREFER)}, got {prefer!r}")
    if offline != (wheelhouse is not None):
        raise fail("give --offline and --wheelhouse DIR together")
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise fail(f"--wheelhouse {wheelhouse}: not a directory")


def plan_options(
    result: Diagnosis, source: Source, *, prefer: str | None, no_root: bool,
    wheelhouse: Path | None, source_build: bool, interpreter: str | None = None,
) -> PlanOptions:
    """The plan's options from the diagnosis and the command line.

    On the live root the commands name `interpreter` (`--python`, else this one); on another
    root or a fixture they name the target's own `python3`, and pip installs go into the
    torch's site.
    """
    from resolver.plan import PlanOptions  # noqa: PLC0415
    from resolver.recipes.schema import StepKind  # noqa: PLC0415

    wheels: tuple[str, ...] = ()
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise fail(f"--wheelhouse {wheelhouse}: not a directory")
        wheels = tuple(sorted(p.name for p in wheelhouse.iterdir() if p.suffix == ".whl"))
    root = "/" if source.live or source.fixture is not None else os.path.abspath(source.root)
    python = (interpreter or sys.executable) if source.live else "python3"
    installed = _installed(result, source)
    version = result.platform.python
    return PlanOptions(
        python=python, site=result.torch.site if result.torch else "/", root=root,
        triplet=result.platform.multiarch, prefer=StepKind(prefer) if prefer else None,
        no_root=no_root, wheelhouse=str(wheelhouse.resolve()) if wheelhouse else None,
        wheels=wheels, source_build=source_build,
        torch_requires=result.torch.requires if result.torch else (),
        pip_platform=pip_platform_options(result) if root != "/" else (),
        deb_arch=_DEB_ARCH.get(result.platform.arch) if root != "/" else None,
        ldconfig=_root_ldconfig(Path(root), result.platform.arch) if root != "/" else (),
        installed=installed, markers={
            "platform_machine": result.platform.arch, "platform_system": "Linux",
            "sys_platform": "linux", "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            **({"python_version": f"{version.major}.{version.minor}",
                "python_full_version": str(version)} if version else {})},
        # Where the loader looked for torch's libraries (its DT_RPATH among them): a folder
        # there needs no activation.
        searched=frozenset(
            posixpath.normpath(posixpath.dirname(c.path)) for request in result.requests
            for c in request.candidates if c.via.value in ("DT_RPATH", "DT_RUNPATH")))


def _installed(result: Diagnosis, source: Source) -> frozenset[str] | None:
    """The canonical names of the distributions torch's interpreter sees.

    Known when the torch is installed on a root here (not a wheel or a fixture): its site,
    and on this machine the interpreter's sys.path too.
    """
    from packaging.utils import canonicalize_name  # noqa: PLC0415

    if result.torch is None or source.wheel is not None or source.fixture is not None or (
            source.torch_fixture is not None):
        return None
    if source.live:
        folders = [result.torch.site, *source.sys_path]
    else:
        folders = [os.path.join(source.root, result.torch.site.lstrip("/"))]
    names: set[str] = set()
    for folder in folders:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        names.update(canonicalize_name(e.removesuffix(".dist-info").rsplit("-", 1)[0])
                     for e in entries if e.endswith(".dist-info"))
    return frozenset(names)


def pip_platform_options(result: Diagnosis) -> tuple[str, ...]:
    """The pip options that choose wheels for another root: its platform tags and Python.

    pip does not widen an explicit `--platform` to the older manylinux tags a newer glibc
    accepts (PEP 600: manylinux_2_Y runs on glibc 2.Y and later), so every one is named.
    """
    platform = result.platform
    minor = platform.glibc.minor if platform.glibc and platform.glibc.major == 2 else 17
    tags = [f"manylinux_2_{m}_{platform.arch}" for m in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{platform.arch}")
    argv = [option for tag in tags for option in ("--platform", tag)]
    argv += ["--only-binary=:all:", "--implementation", "cp"]
    if platform.python is not None:
        argv += ["--python-version", f"{platform.python.major}.{platform.python.minor}"]
    return tuple(argv)


def _root_ldconfig(root: Path, machine: str) -> tuple[str, ...]:
    """A root of another architecture: its own ldconfig, under qemu-user (`-r` chroots)."""
    import shutil  # noqa: PLC0415

    from resolver.target.rootfs import RootFS  # noqa: PLC0415

    if machine == os.uname().machine:
        return ()
    qemu = shutil.which(f"qemu-{machine}-static") or shutil.which(f"qemu-{machine}")
    fs = RootFS(str(root))
    for name in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        resolved = fs.resolve(name)
        if qemu and resolved.ok and resolved.real is not None:
            return (qemu, str(root / resolved.real.lstrip("/")), "-r", str(root))
    return ()


def unfixable_by_kind(result: Diagnosis) -> tuple[tuple[str, str], ...]:
    """(subject, why) of each blocking finding no recipe kind fixes, for the plan to name."""
    from resolver.cli.sentences import describe  # noqa: PLC0415
    from resolver.recipes.match import beyond_recipes  # noqa: PLC0415

    return tuple((f.subject, f"no recipe fixes this kind of finding ({f.kind}): {describe(f)}")
                 for f in beyond_recipes(result.findings))


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("plan")
    def plan_command(
        python: opt.Python = None,
        site_packages: opt.SitePackages = None,
        wheel: opt.Wheel = None,
        root: opt.Root = None,
        fixture: opt.Fixture = None,
        torch_fixture: opt.TorchFixture = None,
        ld_library_path: opt.LdLibraryPath = None,
        gpu_arch: opt.GpuArch = None,
        recipes: opt.Recipes = None,
        prefer: opt.Prefer = None,
        offline: opt.Offline = False,
        wheelhouse: opt.Wheelhouse = None,
        no_root: opt.NoRoot = False,
        source_build: opt.SourceBuild = False,
        no_cache: opt.NoCache = False,
        as_json: opt.Json = False,
        debug: opt.Debug = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """The ordered steps that fix what diagnose finds, as exact commands; changes nothing."""
        from resolver.cli.commands.diagnose import (  # noqa: PLC0415
            make_source,
            match_fixes,
            run_diagnose,
        )
        from resolver.plan import make_plan  # noqa: PLC0415

        check_plan_flags(prefer=prefer, offline=offline, wheelhouse=wheelhouse)
        source = make_source(python=python, site_packages=site_packages, wheel=wheel, root=root,
                             ld_library_path=ld_library_path, gpu_arch=gpu_arch,
                             no_cache=no_cache, fixture=fixture, torch_fixture=torch_fixture)
        result, _ = run_diagnose(source)
        fixes = match_fixes(result, recipes)
        options = plan_options(result, source, prefer=prefer, no_root=no_root,
                               wheelhouse=wheelhouse, source_build=source_build,
                               interpreter=python)
        plan = make_plan(fixes, options)
        plan = dataclasses.replace(plan, unfixable=plan.unfixable + unfixable_by_kind(result))
        code = ExitCode.FINDINGS if plan.unfixable else ExitCode.OK
        if as_json:
            from resolver.cli.render_json import dump, plan_json  # noqa: PLC0415

            sys.stdout.write(dump(plan_json(plan, int(code))))
        else:
            from resolver.cli.render_human import emit, plan_lines  # noqa: PLC0415

            emit(plan_lines(plan))
        raise typer.Exit(int(code))

"""`jetson-resolve diagnose`: what will fail to load, why, and how badly.

This module turns options into the inputs of `resolver.diagnose.diagnose` (detecting the live
host where the user left things out), runs it, and hands the result to a renderer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli.app import fail, guarded
from resolver.cli.exitcodes import ExitCode
from resolver.errors import RootFsError

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.rootfs import Mount, RootFS

__all__ = ["DiagnoseInputs", "exit_code_of", "prepare", "register", "run_diagnose"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagnoseInputs:
    """Everything diagnose needs, decided from the options and the live host."""

    root: str
    site: str  # host path of site-packages, or of the wheel
    is_wheel: bool
    sys_path: tuple[str, ...]
    ld_library_path: str
    gpu_arch: int | None
    python: str | None
    use_cache: bool
    fixture: str | None = None  # a system fixture (name or directory) as the root
    torch_fixture: str | None = None  # a site-packages fixture as the torch to diagnose


def _parse_gpu_arch(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.lower().removeprefix("sm_").removeprefix("sm").replace(".", "")
    if not digits.isdigit():
        raise fail(f"--gpu-arch: expected sm_XY, XY or X.Y (e.g. sm_110, 87, 11.0), got {text!r}")
    return int(digits)


def detect_python_site(python: str) -> tuple[str, tuple[str, ...], str]:
    """Ask an interpreter where its torch is (without importing torch) and what sys.path is."""
    probe = ("import importlib.util, json, sys; s = importlib.util.find_spec('torch'); "
             "print(json.dumps({'torch': s.origin if s else None, 'path': sys.path, "
             "'version': '%d.%d' % sys.version_info[:2]}))")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                             timeout=60).stdout
        info = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        raise fail(f"--python {python}: cannot ask it where torch is ({err})") from None
    if not info.get("torch"):
        raise fail(f"--python {python}: has no torch installed")
    site = str(Path(info["torch"]).parent.parent)
    return site, tuple(p for p in info["path"] if p), str(info["version"])


def prepare(
    *, python: str | None, site_packages: Path | None, wheel: Path | None, root: Path,
    ld_library_path: str | None, gpu_arch: str | None, no_cache: bool,
    fixture: str | None = None, torch_fixture: str | None = None,
) -> DiagnoseInputs:
    """Decide the inputs; exits with code 2 on bad usage."""
    chosen = [name for name, value in (("--python", python), ("--site-packages", site_packages),
                                       ("--wheel", wheel), ("--torch-fixture", torch_fixture))
              if value is not None]
    if len(chosen) > 1:
        raise fail("give one of --python, --site-packages, --wheel, --torch-fixture "
                   f"(got {' and '.join(chosen)})")
    if fixture is not None and os.path.abspath(root) != "/":
        raise fail("give --root or --fixture, not both")
    live = os.path.abspath(root) == "/" and fixture is None
    if ld_library_path is None:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH", "") if live else ""
    interpreter_version = None
    sys_path: tuple[str, ...] = ()
    site, is_wheel = "", False
    if wheel is not None:
        if not wheel.is_file():
            raise fail(f"--wheel {wheel}: no such file")
        site, is_wheel = str(wheel.resolve()), True
    elif site_packages is not None:
        if not site_packages.is_dir():
            raise fail(f"--site-packages {site_packages}: not a directory")
        site = str(site_packages.resolve())
    elif torch_fixture is None:
        if not live:
            raise fail("give --site-packages, --wheel or --torch-fixture for another root "
                       "(--python runs the interpreter here, so it needs the live root)")
        site, sys_path, interpreter_version = detect_python_site(python or sys.executable)
    return DiagnoseInputs(root=str(root), site=site, is_wheel=is_wheel, sys_path=sys_path,
                          ld_library_path=ld_library_path, gpu_arch=_parse_gpu_arch(gpu_arch),
                          python=interpreter_version, use_cache=not no_cache, fixture=fixture,
                          torch_fixture=torch_fixture)


def _fixture_root(name: str) -> tuple[str, int | None]:
    from resolver.errors import InvalidFixture  # noqa: PLC0415
    from resolver.fixture.catalog import find_fixture  # noqa: PLC0415
    from resolver.fixture.materialize import materialize  # noqa: PLC0415
    from resolver.fixture.model import parse_fixture_dir  # noqa: PLC0415

    fixture = parse_fixture_dir(find_fixture(name))
    if fixture.manifest.kind != "system":
        raise InvalidFixture(f"{name}: is a {fixture.manifest.kind} fixture; give it with "
                             "--torch-fixture")
    return str(materialize(fixture)), fixture.manifest.gpu_arch


def _torch_fixture(name: str) -> tuple[str, dict[str, Mount]]:
    from resolver.errors import InvalidFixture  # noqa: PLC0415
    from resolver.fixture.catalog import find_fixture  # noqa: PLC0415
    from resolver.fixture.materialize import materialize  # noqa: PLC0415
    from resolver.fixture.model import parse_fixture_dir  # noqa: PLC0415
    from resolver.rootfs import DirMount  # noqa: PLC0415

    fixture = parse_fixture_dir(find_fixture(name))
    site = fixture.manifest.site
    if fixture.manifest.kind != "site-packages" or site is None:
        raise InvalidFixture(f"{name}: is a {fixture.manifest.kind} fixture; give it with "
                             "--fixture")
    top = materialize(fixture)
    return site, {site: DirMount(top / site.lstrip("/"))}


def _place(rootfs_root: str, host_path: str) -> tuple[str, dict[str, Mount]]:
    """Where a host directory appears in the root's namespace, and the mount that puts it there."""
    from resolver.rootfs import DirMount, path_in_root  # noqa: PLC0415

    inside = path_in_root(rootfs_root, host_path)
    if inside is not None:
        return inside, {}
    return host_path, {host_path: DirMount(host_path)}


def run_diagnose(inputs: DiagnoseInputs) -> tuple[Diagnosis, RootFS]:
    """Build the root, read the platform, diagnose.

    Raises:
        ResolveError: bad input (no torch, unreadable wheel or cache).

    """
    from resolver.diagnose import diagnose  # noqa: PLC0415
    from resolver.elf.cache import FactsCache, default_cache_path  # noqa: PLC0415
    from resolver.platform import read_platform  # noqa: PLC0415
    from resolver.rootfs import RootFS, ZipMount  # noqa: PLC0415
    from resolver.wheeltags import parse_wheel_file_tags  # noqa: PLC0415

    wheel_tags = None
    root, gpu_arch = inputs.root, inputs.gpu_arch
    if inputs.fixture is not None:
        root, recorded_gpu = _fixture_root(inputs.fixture)
        gpu_arch = gpu_arch if gpu_arch is not None else recorded_gpu
    mounts: dict[str, Mount] = {}
    try:
        if inputs.torch_fixture is not None:
            site, mounts = _torch_fixture(inputs.torch_fixture)
        elif inputs.is_wheel:
            site = "/" + os.path.basename(inputs.site)
            mounts = {site: ZipMount(inputs.site)}  # first: is it a zip at all
            try:
                wheel_tags = parse_wheel_file_tags(os.path.basename(inputs.site))
            except ValueError as err:
                raise RootFsError(f"{inputs.site}: {err}") from err
        else:
            site, mounts = _place(root, inputs.site)
        sys_path = tuple(_place(root, p)[0] for p in inputs.sys_path)
        rootfs = RootFS(root, mounts=mounts)
        cache = FactsCache(default_cache_path() if inputs.use_cache else None)
        try:
            platform = read_platform(rootfs, gpu_arch=gpu_arch, python=inputs.python,
                                     cache=cache)
            for mount in mounts.values():
                if isinstance(mount, ZipMount):
                    # Inflate the libraries whose facts are not cached on worker threads now,
                    # biggest first, while the walk reads the small ones.
                    mount.prefetch([
                        name for name in mount.member_names()
                        if (name.endswith(".so") or ".so." in name)
                        and cache.get(cache.key(mount.identity(name))) is None
                    ])
            result = diagnose(rootfs, platform, site, cache,
                              ld_library_path=inputs.ld_library_path, sys_path=sys_path,
                              wheel_tags=wheel_tags,
                              wheel_name=os.path.basename(inputs.site) if inputs.is_wheel
                              else None)
        finally:
            cache.save()
    finally:
        for mount in mounts.values():
            if isinstance(mount, ZipMount):
                mount.close()
    return result, rootfs


def exit_code_of(result: Diagnosis) -> ExitCode:
    """0 when nothing blocks `import torch`, 1 when something does."""
    return ExitCode.FINDINGS if result.blocks_import else ExitCode.OK


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("diagnose")
    def diagnose_command(
        python: Annotated[str | None, typer.Option(
            "--python", help="Diagnose the torch of this interpreter (default: the current one).",
        )] = None,
        site_packages: Annotated[Path | None, typer.Option(
            "--site-packages", help="Diagnose the torch installed in this directory.",
        )] = None,
        wheel: Annotated[Path | None, typer.Option(
            "--wheel", help="Diagnose a torch wheel, read from the zip without extracting it.",
        )] = None,
        root: Annotated[Path, typer.Option(
            "--root", help="The target's root filesystem (default: this machine's /).",
        )] = Path("/"),
        fixture: Annotated[str | None, typer.Option(
            "--fixture", help="A recorded target instead of --root: a bundled name "
            "(thor-jp7.0, orin-jp6.2) or a fixture directory.",
        )] = None,
        torch_fixture: Annotated[str | None, typer.Option(
            "--torch-fixture", help="A recorded torch install to diagnose (a bundled name such "
            "as torch-2.11.0-aarch64, or a fixture directory).",
        )] = None,
        ld_library_path: Annotated[str | None, typer.Option(
            "--ld-library-path", help="The target's LD_LIBRARY_PATH (default: this shell's for "
            "/, empty for another root).",
        )] = None,
        gpu_arch: Annotated[str | None, typer.Option(
            "--gpu-arch", help="The target GPU (sm_110, 87, ...); default: from the L4T release.",
        )] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print JSON instead of tables.",
        )] = False,
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Show every path tried for each finding (else the first 24).",
        )] = False,
        no_cache: Annotated[bool, typer.Option(
            "--no-cache", help="Do not read or write the on-disk ELF facts cache.",
        )] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    ) -> None:
        """What will fail to load on the target, why, and whether it breaks `import torch`."""
        inputs = prepare(python=python, site_packages=site_packages, wheel=wheel, root=root,
                         ld_library_path=ld_library_path, gpu_arch=gpu_arch, no_cache=no_cache,
                         fixture=fixture, torch_fixture=torch_fixture)
        result, rootfs = guarded(debug, lambda: run_diagnose(inputs))
        code = exit_code_of(result)
        if as_json:
            from resolver.cli.render_json import diagnosis_json, dump  # noqa: PLC0415

            sys.stdout.write(dump(diagnosis_json(result, rootfs, code, fixture=fixture,
                                                torch_fixture=torch_fixture)))
        else:
            from resolver.cli.render_human import render_diagnosis  # noqa: PLC0415

            render_diagnosis(result, rootfs, code, verbose=verbose, fixture=fixture,
                             torch_fixture=torch_fixture)
        raise typer.Exit(int(code))

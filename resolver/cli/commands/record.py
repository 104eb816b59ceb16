"""`jetson-resolve record`: capture a machine's (or a torch install's) loader facts as a fixture.

With `--root` (default `/`) it records a system fixture: the loader configuration, the libraries
in the loader's directories and the platform files, plus the site-packages of `--python` or
`--site-packages` when given. With `--site-only` it records just a site-packages directory, as a
fixture that `diagnose --torch-fixture` mounts at `--site-at` inside any target.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from resolver import __version__
from resolver.cli.errors import fail, parse_gpu_arch
from resolver.cli.text import write_lines

__all__ = ["public_command", "register"]


def _python_sites(python: str) -> tuple[str, ...]:
    """The site-packages directories of an interpreter (purelib and platlib), torch or not."""
    probe = ("import json, sysconfig; p = sysconfig.get_paths(); "
             "print(json.dumps(sorted({p['purelib'], p['platlib']})))")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                             timeout=60).stdout
        sites = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, RecursionError) as err:
        raise fail(f"--python {python}: cannot ask it for its site-packages ({err})") from None
    if not (isinstance(sites, list) and all(isinstance(site, str) for site in sites)):
        raise fail(f"--python {python}: answered with something else than a list of folders")
    return tuple(sites)


def _provenance_extras(path: Path | None) -> dict[str, Any]:
    """The packages / hand_written / notes of a JSON file that describes a composed root."""
    if path is None:
        return {}
    from resolver.errors import UnusableFile  # noqa: PLC0415
    from resolver.host_files import MIB, read_regular  # noqa: PLC0415

    try:
        data = json.loads(read_regular(path, MIB, "a --composed-from file"))
    except UnusableFile as err:
        raise fail(f"--composed-from {err}") from None
    except OSError as err:
        raise fail(f"--composed-from {path}: cannot read it: {err.strerror}") from None
    except (ValueError, RecursionError) as err:
        raise fail(f"--composed-from {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise fail(f"--composed-from {path}: expected a JSON object")
    return data


def _site_only_inputs(site_packages: Path | None, site_at: str | None) -> tuple[Path, str]:
    """The torch install to record and where the target has it; exits 2 when unusable."""
    if site_packages is None:
        raise fail("--site-only needs --site-packages DIR")
    if site_at is None or not site_at.startswith("/"):
        # The fixture names the folder as the target has it, never this machine's path.
        raise fail("--site-only needs --site-at: where this site-packages lives on the "
                   "target, an absolute path such as /usr/local/lib/python3.12/dist-packages")
    if site_at.rstrip("/") != os.path.normpath(site_at) or "\0" in site_at:
        raise fail(f"--site-at {site_at!r}: give a normal absolute path (no '..', '.' or '//')")
    if not (site_packages / "torch").is_dir():
        raise fail(f"--site-packages {site_packages}: no torch package here")
    return site_packages, site_at


def _record(
    *, root: Path, out: Path, name: str, description: str, python: str | None,
    site_packages: Path | None, site_only: bool, site_at: str | None,
    composed_from: Path | None, gpu_arch: int | None, command: str,
) -> dict[str, Any]:
    import datetime as dt  # noqa: PLC0415 - the record command only
    import platform as host_platform  # noqa: PLC0415

    from resolver.elf.cache import FactsCache, default_cache_path  # noqa: PLC0415
    from resolver.fixture.model import Manifest, render_files_json, render_manifest  # noqa: PLC0415
    from resolver.fixture.record import record_root, record_site  # noqa: PLC0415
    from resolver.target.platform import read_platform  # noqa: PLC0415
    from resolver.target.rootfs import RootFS, path_in_root  # noqa: PLC0415

    cache = FactsCache(default_cache_path())
    extras = _provenance_extras(composed_from)
    site: str | None = None
    if site_only:
        site_packages, site = _site_only_inputs(site_packages, site_at)
        entries, skipped = record_site(RootFS(site_packages), "/", cache)
        entries = {(site.rstrip("/") + path).rstrip("/") or "/": entry
                   for path, entry in entries.items()}
        for depth in range(1, site.count("/") + 1):  # the directories leading to the site
            entries.setdefault("/".join(site.split("/")[: depth + 1]) or "/", ("dir", None))
        entries.pop("/", None)
    else:
        rootfs = RootFS(root)
        sites: tuple[str, ...] = ()
        if python is not None:
            if os.path.abspath(root) != "/":
                raise fail("--python needs the live root; use --site-packages for another root")
            sites = _python_sites(python)
        elif site_packages is not None:
            inside = path_in_root(str(root), str(site_packages.resolve()))
            if inside is None:
                raise fail(f"--site-packages {site_packages}: not inside --root {root}")
            sites = (inside,)
        platform = read_platform(rootfs, cache=cache)
        entries, skipped = record_root(rootfs, platform, cache, sites=sites)
    cache.save()
    manifest = Manifest(
        name=name, kind="site-packages" if site_only else "system", description=description,
        provenance="composed" if composed_from else "recorded",
        source={"host": host_platform.node(), "tool": f"jetson-resolve {__version__}",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "command": command},
        packages=tuple(extras.get("packages", ())),
        hand_written=tuple(extras.get("hand_written", ())),
        notes=(*extras.get("notes", ()), *skipped), site=site, gpu_arch=gpu_arch)
    _write_fixture(out, render_manifest(manifest), render_files_json(entries))
    kinds: dict[str, int] = {}
    for kind, _ in entries.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"schema": 1, "command": "record", "out": str(out), "name": name,
            "entries": kinds, "skipped": skipped}


def _write_fixture(out: Path, manifest: str, files: str) -> None:
    """Write a fixture's two files into `out`, read back by the fixture reader first.

    Both are written into a scratch folder inside `out` and parsed there by
    `parse_fixture_dir`, the reader `diagnose --fixture` uses; only a fixture it accepts is
    renamed into place (replacing, never writing through, what was there).

    Raises:
        InvalidFixture: the reader rejects what would be written.
        OSError: `out` cannot be written.

    """
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from resolver.errors import InvalidFixture  # noqa: PLC0415
    from resolver.fixture.model import parse_fixture_dir  # noqa: PLC0415

    try:
        data = {"manifest.toml": manifest.encode("utf-8"),
                "files.json": files.encode("utf-8", "surrogateescape")}
    except UnicodeEncodeError as err:
        raise InvalidFixture(f"{out}: would hold text that is not UTF-8 ({err.reason})") from None
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=".record-"))
    try:
        for name, content in data.items():
            (scratch / name).write_bytes(content)
        try:
            parse_fixture_dir(scratch)
        except InvalidFixture as err:  # named as the fixture it would have been, in --out
            raise InvalidFixture(f"{out}: the fixture recorded would not read back, nothing "
                                 f"written: {str(err).replace(str(scratch), str(out))}") from None
        for name in data:
            os.replace(scratch / name, out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fixture_name_of(name: str | None, out: Path) -> str:
    """`--name`, or the --out folder's name made into one; exits 2 on a name the reader refuses.

    A fixture's name also names the folder it is materialised in, so it holds letters, digits,
    '.', '_' and '-' only (`resolver.fixture.model`).
    """
    import re  # noqa: PLC0415

    from resolver.fixture.model import FIXTURE_NAME  # noqa: PLC0415

    if name is not None:
        if not FIXTURE_NAME.fullmatch(name):
            raise fail(f"--name {name!r}: give letters, digits, '.', '_' or '-' (not starting "
                       "with '.' or '-'), at most 100")
        return name
    made = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(os.path.abspath(out)))
    return made.lstrip(".-")[:100] or "fixture"


# Options whose values are paths of the recording machine (a scratch root, the checkout): the
# manifest names them by placeholder, so a fixture does not carry where it was made.
_HOST_PATH_OPTIONS = ("--root", "--out", "--site-packages", "--composed-from")


def public_command(argv: list[str]) -> str:
    """The record command line as a manifest states it: host paths as `<root>`, `<out>`, ...

    `/` stays `/`: recording a live machine's root says something about the fixture.
    """
    def placeholder(option: str, value: str) -> str:
        return value if value == "/" else f"<{option.removeprefix('--')}>"

    shown: list[str] = []
    pending: str | None = None
    for arg in argv:
        option, sep, value = arg.partition("=")
        if pending is not None:
            shown.append(placeholder(pending, arg))
            pending = None
        elif option in _HOST_PATH_OPTIONS and sep:
            shown.append(f"{option}={placeholder(option, value)}")
        else:
            shown.append(arg)
            pending = arg if arg in _HOST_PATH_OPTIONS else None
    return shlex.join(["jetson-resolve", *shown])


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("record")
    def record_command(
        out: Annotated[Path, typer.Option("--out", help="The fixture directory to write.")],
        root: Annotated[Path, typer.Option("--root", help="The root to record.")] = Path("/"),
        name: Annotated[str | None, typer.Option(
            "--name", help="Fixture name (default: the --out folder's name).")] = None,
        description: Annotated[str, typer.Option(
            "--description", help="One line on what it is.")] = "",
        python: Annotated[str | None, typer.Option(
            "--python", help="Also record this interpreter's site-packages (live root only).",
        )] = None,
        site_packages: Annotated[Path | None, typer.Option(
            "--site-packages", help="Also record this site-packages directory.")] = None,
        site_only: Annotated[bool, typer.Option(
            "--site-only", help="Record only --site-packages, as a torch-install fixture.",
        )] = False,
        site_at: Annotated[str | None, typer.Option(
            "--site-at", help="With --site-only: where the site-packages lives on the target.",
        )] = None,
        composed_from: Annotated[Path | None, typer.Option(
            "--composed-from", help="JSON naming the packages a composed root was built from "
            "(packages, hand_written, notes); marks the fixture as composed, not recorded.",
        )] = None,
        gpu_arch: Annotated[str | None, typer.Option(
            "--gpu-arch", help="The machine's GPU (sm_110, 110 or 11.0 for Thor).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """Record a machine's loader-relevant facts (no library bytes) into a fixture."""
        if not root.is_dir():
            raise fail(f"--root {root}: not a directory")
        if site_packages is not None and not site_packages.is_dir():
            raise fail(f"--site-packages {site_packages}: not a directory")
        if site_at is not None and not site_only:
            raise fail("--site-at goes with --site-only")
        try:
            description.encode("utf-8")
        except UnicodeEncodeError:
            raise fail("--description: not valid UTF-8 text") from None
        if "\n" in description or "\r" in description:
            raise fail("--description: give one line")
        result = _record(
            root=root, out=out, name=_fixture_name_of(name, out), description=description,
            python=python, site_packages=site_packages, site_only=site_only, site_at=site_at,
            composed_from=composed_from, gpu_arch=parse_gpu_arch(gpu_arch),
            command=public_command([
                "record", *(["--site-only"] if site_only else []),
                *[arg for option, value in (
                    ("--root", root), ("--out", out), ("--name", name),
                    ("--description", description or None), ("--python", python),
                    ("--site-packages", site_packages), ("--site-at", site_at),
                    ("--composed-from", composed_from), ("--gpu-arch", gpu_arch))
                  if value is not None for arg in (option, str(value))]]))
        if as_json:
            sys.stdout.write(json.dumps(result, sort_keys=True, indent=2) + "\n")
        else:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(result["entries"].items()))
            write_lines([f"recorded {result['name']} into {result['out']}: {counts}",
                         *(f"  not recorded: {line}" for line in result["skipped"])])

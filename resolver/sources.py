"""What is diagnosed, opened: a torch on a target, with the lifetimes of what holds them open.

The torch is a site-packages directory, a wheel or a recorded torch; the target is a root
directory, the live `/` or a recorded fixture. `open_source` turns a `Source` (plain values
decided by the CLI from its options) into an `Opened` bundle — the `RootFS` with the mounts
that put the torch into the root's namespace, the target's `Platform`, the facts cache — and
owns their lifetimes: zip mounts are closed and the facts cache is saved when the `with` block
ends, however it ends. Fixtures are materialised into their cache directory first. It never
runs the target's interpreter (the CLI's `detect_*` functions do, before a `Source` exists) and
never decides what a finding is.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.errors import InvalidFixture, RootFsError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from packaging.version import Version

    from resolver.elf.cache import FactsCache
    from resolver.fixture.model import Fixture
    from resolver.target.mounts import Mount
    from resolver.target.platform import Platform
    from resolver.target.rootfs import RootFS
    from resolver.target.witness import Witness

__all__ = ["Opened", "Source", "open_source"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """A torch and a target, as host paths and names; nothing is opened yet.

    Exactly one of `site` (a site-packages directory), `wheel` and `torch_fixture` names the
    torch; the target is `root` unless `fixture` names a recorded one.
    """

    root: str = "/"
    fixture: str | None = None  # a system fixture (bundled name or directory)
    site: str | None = None  # host path of a site-packages directory
    wheel: str | None = None  # host path of a wheel
    torch_fixture: str | None = None  # a site-packages fixture (bundled name or directory)
    sys_path: tuple[str, ...] = ()  # host paths: the target interpreter's sys.path
    interpreter: str | None = None  # host path of the target's interpreter, when known
    ld_preload: tuple[str, ...] = ()  # LD_PRELOAD entries as the target's loader reads them
    preloaded: tuple[str, ...] = ()  # libraries the process opened before torch (root paths)
    ld_library_path: str = ""
    gpu_arch: int | None = None
    python: Version | None = None  # the target interpreter's version, when asked
    facts_cache: Path | None = None  # None: no on-disk facts cache

    @property
    def live(self) -> bool:
        """True when the target is this machine's own `/`."""
        return self.fixture is None and os.path.abspath(self.root) == "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A source, opened: valid inside `open_source`'s `with` block only."""

    source: Source
    rootfs: RootFS
    platform: Platform
    site: str  # the torch's site-packages in the root's namespace
    sys_path: tuple[str, ...]  # in the root's namespace
    interpreter: str | None  # in the root's namespace
    cache: FactsCache
    wheel_tags: tuple[str, ...] | None  # a wheel's file-name tags; None: read the dist-info
    wheel_name: str | None


def _parse_fixture(name: str, witness: Witness | None) -> Fixture:
    from resolver.fixture.catalog import find_fixture  # noqa: PLC0415
    from resolver.fixture.model import parse_fixture_dir  # noqa: PLC0415

    directory = find_fixture(name)
    if witness is not None:
        for file in ("manifest.toml", "files.json"):
            witness.saw(str(directory / file))
    return parse_fixture_dir(directory)


def _fixture_root(name: str, witness: Witness | None) -> tuple[str, int | None]:
    from resolver.fixture.materialize import materialize  # noqa: PLC0415

    fixture = _parse_fixture(name, witness)
    if fixture.manifest.kind != "system":
        raise InvalidFixture(f"{name}: is a {fixture.manifest.kind} fixture; give it with "
                             "--torch-fixture")
    return str(materialize(fixture)), fixture.manifest.gpu_arch


def _torch_fixture(name: str, witness: Witness | None) -> tuple[str, dict[str, Mount]]:
    from resolver.fixture.materialize import materialize  # noqa: PLC0415
    from resolver.target.mounts import DirMount  # noqa: PLC0415

    fixture = _parse_fixture(name, witness)
    site = fixture.manifest.site
    if fixture.manifest.kind != "site-packages" or site is None:
        raise InvalidFixture(f"{name}: is a {fixture.manifest.kind} fixture; give it with "
                             "--fixture")
    top = materialize(fixture)
    return site, {site: DirMount(top / site.lstrip("/"), witness=witness)}


def _place(root: str, host_path: str, witness: Witness | None = None
           ) -> tuple[str, dict[str, Mount]]:
    """Where a host directory appears in the root's namespace, and the mount that puts it there."""
    from resolver.target.mounts import DirMount  # noqa: PLC0415
    from resolver.target.rootfs import path_in_root  # noqa: PLC0415

    inside = path_in_root(root, host_path)
    if inside is not None:
        return inside, {}
    return host_path, {host_path: DirMount(host_path, witness=witness)}


def _interpreter_in_root(root: str, host_path: str | None) -> str | None:
    """The interpreter's path in the root's namespace; None when it lies outside the root."""
    from resolver.target.rootfs import path_in_root  # noqa: PLC0415

    return None if host_path is None else path_in_root(root, host_path)


def _torch_mounts(source: Source, root: str, witness: Witness | None
                  ) -> tuple[str, dict[str, Mount], tuple[str, ...] | None]:
    """The torch's site in the root's namespace, its mounts, and a wheel's file-name tags."""
    from resolver.findings.wheel_tags import parse_wheel_file_tags  # noqa: PLC0415
    from resolver.target.mounts import ZipMount  # noqa: PLC0415

    if source.torch_fixture is not None:
        site, mounts = _torch_fixture(source.torch_fixture, witness)
        return site, mounts, None
    if source.wheel is not None:
        site = "/" + os.path.basename(source.wheel)
        mount = ZipMount(source.wheel, witness=witness)  # first: is it a zip at all
        try:
            tags = parse_wheel_file_tags(os.path.basename(source.wheel))
        except ValueError as err:
            mount.close()
            raise RootFsError(f"{source.wheel}: {err}") from err
        return site, {site: mount}, tags
    if source.site is None:
        raise RootFsError("no torch to diagnose: give a site-packages, a wheel or a torch fixture")
    site, mounts = _place(root, source.site, witness)
    return site, mounts, None


@contextlib.contextmanager
def open_source(source: Source, *, witness: Witness | None = None) -> Iterator[Opened]:
    """Open `source`: materialise fixtures, mount the torch, read the platform.

    `witness`, when given, records every host path the diagnose consults.

    Raises:
        InvalidFixture: a fixture is unknown, malformed or of the other kind.
        RootFsError: a wheel is not a zip or has a bad name; there is no torch to diagnose.
        InvalidElf: the root's C library cannot be read.

    """
    from resolver.elf.cache import FactsCache  # noqa: PLC0415
    from resolver.target.mounts import ZipMount  # noqa: PLC0415
    from resolver.target.platform import read_platform  # noqa: PLC0415
    from resolver.target.rootfs import RootFS  # noqa: PLC0415

    root, gpu_arch = source.root, source.gpu_arch
    if source.fixture is not None:
        root, recorded_gpu = _fixture_root(source.fixture, witness)
        gpu_arch = gpu_arch if gpu_arch is not None else recorded_gpu
    site, mounts, wheel_tags = _torch_mounts(source, root, witness)
    cache = FactsCache(source.facts_cache)
    try:
        rootfs = RootFS(root, mounts=mounts, witness=witness)
        platform = read_platform(rootfs, gpu_arch=gpu_arch, python=source.python, cache=cache)
        for mount in mounts.values():
            if isinstance(mount, ZipMount):
                # Inflate the libraries whose facts are not cached on worker threads now,
                # biggest first, while the walk reads the small ones.
                mount.prefetch([
                    name for name in mount.member_names()
                    if (name.endswith(".so") or ".so." in name)
                    and cache.get(cache.key(mount.identity(name))) is None
                ])
        yield Opened(
            source=source, rootfs=rootfs, platform=platform, site=site,
            sys_path=tuple(_place(root, p)[0] for p in source.sys_path), cache=cache,
            interpreter=_interpreter_in_root(root, source.interpreter),
            wheel_tags=wheel_tags,
            wheel_name=os.path.basename(source.wheel) if source.wheel else None)
    finally:
        try:
            cache.save()
        finally:
            for mount in mounts.values():
                if isinstance(mount, ZipMount):
                    mount.close()

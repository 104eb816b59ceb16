"""Packages that load torch: the distributions whose compiled modules are imported after torch.

torchvision, torchaudio, torch_tensorrt and the like are found, not named: a distribution in a
site directory of `sys.path` whose `Requires-Dist` names torch (PEP 508, names compared as PEP
503 normalises them), or one of whose compiled modules needs one of torch's own libraries
(DT_NEEDED of a `torch/lib` file name). Its compiled modules are its RECORD's `.so` files
outside the `<name>.libs` folders auditwheel vendors dependencies into (PEP 376 RECORD;
auditwheel's layout); for a distribution without a torch pin, only those not named `lib*` are
read to see whether they link torch. `import <package>` opens them after torch, each with
RTLD_NOW in its own local scope (CPython `_PyImport_FindSharedFuncptr`, `torch.ops.load_library`).

Nothing here loads anything: it lists what to load and the pins to compare.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from resolver.target.rootfs import RootFS

__all__ = ["Extension", "find_extensions", "import_phase"]

_MAX_RECORD = 4 << 20  # bytes of a RECORD read; torch's own is about 1 MB
_MAX_METADATA = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Extension:
    """A distribution whose compiled modules are imported after torch."""

    name: str  # the distribution's name as its METADATA writes it
    version: str | None
    package: str  # the top-level import name (`torchvision`)
    modules: tuple[str, ...]  # its compiled modules, paths in the root
    torch_requirements: tuple[str, ...]  # its Requires-Dist entries naming torch


def import_phase(extension: Extension) -> str:
    """The phase its modules are loaded in: `import torchvision`."""
    return f"import {extension.package}"


def _normalise(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(text: str) -> tuple[str | None, str | None, list[str]]:
    """Name, Version and Requires-Dist of a METADATA file (its header part)."""
    name = version = None
    requires: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) starts
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "Name":
            name = value.strip()
        elif key == "Version":
            version = value.strip()
        elif key == "Requires-Dist":
            requires.append(value.strip())
    return name, version, requires


_NAMES_TORCH = re.compile(r"^\s*torch\s*(?:[\[(;<>=!~ ]|$)", re.IGNORECASE)


def _torch_requirements(requires: list[str]) -> tuple[str, ...]:
    """The Requires-Dist entries that name torch, those only for an extra left out."""
    # Parsing every requirement of every distribution would cost more than the rest: only the
    # lines that may name torch are parsed (PEP 503 names: "torch" has no separators to fold).
    requires = [text for text in requires if _NAMES_TORCH.match(text)]
    if not requires:
        return ()
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

    found = []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if _normalise(requirement.name) != "torch":
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        found.append(text)
    return tuple(found)


def _record_modules(record: str, site: str) -> tuple[list[str], str | None]:
    """The compiled modules a RECORD lists (root paths) and its first top-level package."""
    modules: list[str] = []
    packages: list[str] = []
    for line in record.splitlines():
        path = line.split(",", 1)[0].strip()
        if not path or path.startswith(("/", "../")) or ".dist-info/" in path:
            continue
        top = path.split("/", 1)[0]
        if top.endswith((".libs", ".data")) or top == "bin":
            continue
        if "/" in path and top not in packages:
            packages.append(top)
        name = posixpath.basename(path)
        if name.endswith(".so"):  # an extension module (PEP 3149 names end in .so too)
            modules.append(posixpath.join(site, path))
    return modules, packages[0] if packages else None


def find_extensions(
    rootfs: RootFS, site_dirs: tuple[str, ...], torch_site: str, torch_libs: frozenset[str],
    needed_of: Callable[[str], tuple[str, ...]],
) -> tuple[Extension, ...]:
    """Every distribution in `site_dirs` that loads torch, in directory then name order.

    `torch_libs` are the file names in torch/lib; `needed_of` gives a module's DT_NEEDED (empty
    when it is not a readable ELF file). torch's own distribution is left out.
    """
    found: list[Extension] = []
    seen: set[str] = set()
    for site in site_dirs:
        for entry in sorted(rootfs.list_dir(site)):
            if not entry.endswith(".dist-info"):
                continue
            folder = posixpath.join(site, entry)
            name, version, requires = _metadata(
                rootfs.read_text(posixpath.join(folder, "METADATA"), _MAX_METADATA) or "")
            if name is None or _normalise(name) in seen or _normalise(name) == "torch":
                continue
            seen.add(_normalise(name))
            record = rootfs.read_text(posixpath.join(folder, "RECORD"), _MAX_RECORD) or ""
            modules, package = _record_modules(record, site)
            if not modules:
                continue
            pins = _torch_requirements(requires)
            # Without a pin, only files named like Python modules are read: a `libX.so` is a
            # library the distribution ships, not something `import` opens, and the nvidia-*
            # wheels hold hundreds of them.
            if not pins and not any(set(needed_of(m)) & torch_libs for m in modules
                                    if not posixpath.basename(m).startswith("lib")):
                continue
            if site == torch_site and package == "torch":
                continue
            found.append(Extension(name=name, version=version,
                                   package=package or _normalise(name).replace("-", "_"),
                                   modules=tuple(modules), torch_requirements=pins))
    return tuple(found)

"""Whether a wheel's tags fit the target: platform, glibc and Python ABI (via `packaging.tags`).

The target's supported tags are built from its platform facts, not from the running host:
`manylinux_2_X_<arch>` for every X up to the target's glibc (and the legacy aliases), `linux_<arch>`
and CPython tags for the target's Python. Reading the tags of a wheel (its file name, or the
`Tag:` lines of an installed dist-info's WHEEL file) is the caller's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resolver.findings.model import Severity, TagMismatch, WheelTagMismatch

if TYPE_CHECKING:
    from collections.abc import Iterable

    from resolver.target.platform import Platform

__all__ = ["parse_wheel_file_tags", "parse_wheel_metadata_tags", "wheel_tag_findings"]

# Legacy manylinux names and the glibc they stand for (PEP 600).
_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


def parse_wheel_file_tags(filename: str) -> tuple[str, ...]:
    """Tags of a wheel from its file name.

    Raises:
        ValueError: the name is not a valid wheel file name.

    """
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename  # noqa: PLC0415

    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as err:
        raise ValueError(str(err)) from err
    return tuple(sorted(str(tag) for tag in tags))


def parse_wheel_metadata_tags(text: str) -> tuple[str, ...]:
    """Tags from the `Tag:` lines of a dist-info WHEEL file."""
    from packaging.tags import parse_tag  # noqa: PLC0415

    tags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("Tag:"):
            try:
                tags.update(str(tag) for tag in parse_tag(line.split(":", 1)[1].strip()))
            except ValueError:
                continue  # a malformed tag names no platform: pip would refuse it too
    return tuple(sorted(tags))


def _platform_tags(platform: Platform) -> list[str]:
    arch = platform.arch
    tags: list[str] = []
    if platform.glibc:
        major, minor = platform.glibc.major, platform.glibc.minor
        for glibc_minor in range(minor, -1, -1):
            tags.append(f"manylinux_{major}_{glibc_minor}_{arch}")
            legacy = _LEGACY.get((major, glibc_minor))
            if legacy:
                tags.append(f"{legacy}_{arch}")
    tags.append(f"linux_{arch}")
    return tags


def _mismatch(wanted: set[str], platform: Platform) -> TagMismatch | None:
    """Which part of the tags the target rejects: platform first, then the Python ABI."""
    from packaging.tags import compatible_tags, cpython_tags  # noqa: PLC0415

    platforms = _platform_tags(platform)
    wheel_platforms = {t.rsplit("-", 1)[-1] for t in wanted}
    if not any(p in platforms or p == "any" for p in wheel_platforms):
        if not any(p.endswith(platform.arch) for p in wheel_platforms):
            return TagMismatch.ARCHITECTURE
        return TagMismatch.GLIBC
    if platform.python is None:
        return None
    python = (platform.python.major, platform.python.minor)
    supported = {str(tag) for tag in cpython_tags(python, platforms=platforms)}
    supported.update(str(tag) for tag in compatible_tags(python, platforms=platforms))
    return None if wanted & supported else TagMismatch.PYTHON


def wheel_tag_findings(
    tags: Iterable[str], platform: Platform, *, wheel: str
) -> tuple[WheelTagMismatch, ...]:
    """A `WheelTagMismatch` when none of the wheel's tags is supported by the target.

    When the target's Python is unknown, only the platform part (architecture, glibc) is judged.
    """
    wanted = set(tags)
    mismatch = _mismatch(wanted, platform) if wanted else None
    if mismatch is None:
        return ()
    return (WheelTagMismatch(
        severity=Severity.BLOCKS_IMPORT, phases=("install",), wheel=wheel,
        tags=tuple(sorted(wanted)), mismatch=mismatch, target_arch=platform.arch,
        target_glibc=platform.glibc, target_python=platform.python),)

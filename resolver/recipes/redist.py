"""NVIDIA redistrib manifests: the archive a `redist` step means, checked against its pins.

A manifest (`redistrib_<version>.json`, ../shared/FACTS.md "NVIDIA redist manifests") has
`release_date`, `release_label`, `release_product`, then one object per component with `name`,
`version` and platform keys (`linux-sbsa`, `linux-aarch64`, `linux-x86_64`, ...). A platform key
holds the archive — `relative_path`, `sha256`, `md5`, `size` (a string) — in the flat form
(the CUDA toolkit, NVPL), or one such object per CUDA variant (`cuda12`, `cuda13`) in the nested
form (cuDNN, cuDSS, cuSPARSELt, NVSHMEM), told apart by the absence of `relative_path`
(NVIDIA/build-system-archive-import-examples `parse_redist.py`). The archive's URL is the
manifest's folder plus `relative_path`.

Pure: the bytes of the manifest come in; fetching them is the apply stage's
(`resolver.apply.download`).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from resolver.errors import RecipeError

if TYPE_CHECKING:
    from resolver.recipes.schema import Step

__all__ = ["MAX_MANIFEST_BYTES", "Archive", "find_archive", "parse_manifest"]

MAX_MANIFEST_BYTES = 4 << 20  # NVIDIA's largest manifests are about 100 KB
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Archive:
    """One archive a manifest lists."""

    url: str
    relative_path: str
    sha256: str
    size: int  # bytes


def parse_manifest(data: bytes, *, url: str) -> dict[str, Any]:
    """The manifest's JSON object.

    Raises:
        RecipeError: it is too large, not JSON, or not an object (names `url`).

    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise RecipeError(f"larger than {MAX_MANIFEST_BYTES} bytes", file=url)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise RecipeError(f"not a redistrib manifest (not JSON: {err})", file=url) from None
    if not isinstance(document, dict):
        raise RecipeError("not a redistrib manifest (not a JSON object)", file=url)
    return document


def _entry(manifest: dict[str, Any], step: Step, url: str) -> dict[str, Any]:
    component = manifest.get(step.component or "")
    if not isinstance(component, dict):
        raise RecipeError(f"lists no component {step.component!r}", file=url)
    if str(component.get("version")) != step.version:
        raise RecipeError(f"{step.component} is version {component.get('version')!r}, the "
                          f"recipe pins {step.version!r}", file=url)
    platform = component.get(step.platform or "")
    if not isinstance(platform, dict):
        raise RecipeError(f"{step.component} has no {step.platform} archive", file=url)
    if "relative_path" in platform:
        if step.cuda_variant is not None:
            raise RecipeError(f"{step.component} for {step.platform} has no CUDA variants; "
                              f"the recipe names {step.cuda_variant}", file=url)
        return platform
    variant = platform.get(step.cuda_variant or "")
    if not isinstance(variant, dict):
        have = ", ".join(sorted(k for k, v in platform.items() if isinstance(v, dict)))
        raise RecipeError(f"{step.component} for {step.platform} has no variant "
                          f"{step.cuda_variant!r} (it has {have or 'none'})", file=url)
    return variant


def find_archive(manifest: dict[str, Any], step: Step, *, url: str) -> Archive:
    """The archive `step` (a `redist` step) names in `manifest`, fetched from `url`.

    Raises:
        RecipeError: the manifest lacks it, or disagrees with the recipe's version, sha256 or
            size; or its path would leave the manifest's folder.

    """
    entry = _entry(manifest, step, url)
    relative, sha256, size = entry.get("relative_path"), entry.get("sha256"), entry.get("size")
    if not isinstance(relative, str) or not relative or relative.startswith("/") or (
            ".." in relative.split("/")) or "://" in relative:
        raise RecipeError(f"relative_path {relative!r} leaves the manifest's folder", file=url)
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise RecipeError(f"sha256 {sha256!r} is not 64 hex digits", file=url)
    try:
        size_bytes = int(str(size))
    except ValueError:
        raise RecipeError(f"size {size!r} is not a byte count", file=url) from None
    if sha256 != step.sha256:
        raise RecipeError(f"{step.component} {step.version} has sha256 {sha256}, the recipe "
                          f"pins {step.sha256}", file=url)
    if size_bytes != step.size:
        raise RecipeError(f"{step.component} {step.version} is {size_bytes} bytes, the recipe "
                          f"says {step.size}", file=url)
    base = url if url.endswith("/") else posixpath.dirname(url) + "/"
    return Archive(url=urljoin(base, relative), relative_path=relative, sha256=sha256,
                   size=size_bytes)

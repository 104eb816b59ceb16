"""Matching: for each finding, the recipes that fit the target, best first, and why not others.

A recipe fits when every constraint of its `applies` holds for the target's facts (`Target`,
derived from the `Platform` and the torch being diagnosed). It provides the thing a finding
names when one of its `provides.sonames` (globs allowed) matches: the missing soname, the soname
a version node belongs to (`libcublas.so.13` requires the node of the same name), the cuDNN a
torch refuses (and then only a recipe whose version is new enough), or the driver's
`libcuda.so.1`. A torch that cannot run here (wheel tags, no kernel for the GPU) is matched to
recipes that replace torch. A library that exists under the root but off every search path gets
an activation of its folder, not a reinstall. A soname nothing provides is said plainly, with the
files of the same library that are present.

Pure: no I/O; `resolver.recipes.database` loads the recipes.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.findings.model import (
    CpuOnlyTorch,
    CudnnTooOld,
    DriverTooOld,
    MissingLibrary,
    NoKernelForGpu,
    PreloadNotFound,
    VersionNotFound,
    WheelTagMismatch,
)
from resolver.recipes.schema import StepKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from resolver.findings.model import Finding
    from resolver.recipes.schema import Applies, Recipe
    from resolver.target.platform import Platform

__all__ = [
    "Fix",
    "Target",
    "beyond_recipes",
    "match_findings",
    "target_of",
    "wanted_by",
    "why_not",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The facts a recipe's `applies` is judged against; None where nobody knows."""

    arch: str
    flavour: str | None  # sbsa, tegra, x86_64
    distro: str | None
    distro_version: Version | None
    cuda: Version | None
    l4t: Version | None
    jetpack: Version | None
    python: Version | None
    glibc: Version | None


def _version(text: str | None) -> Version | None:
    from resolver.target.platform import parse_version  # noqa: PLC0415

    return parse_version(text)


def target_of(platform: Platform, torch_cuda: str | None) -> Target:
    """The target's facts: the root's CUDA toolkit, else the CUDA torch was built with.

    The CUDA userspace flavour is the toolkit's (`targets/sbsa-linux` or `aarch64-linux`);
    without a toolkit, x86_64 is its own flavour and a Jetson's follows its L4T release (R38
    and later run SBSA userspace on Thor with CUDA 13; R35 and R36 run Tegra userspace).
    """
    flavour = platform.cuda_flavour
    if flavour is None and platform.arch == "x86_64":
        flavour = "x86_64"
    elif flavour is None and platform.l4t is not None:
        flavour = "sbsa" if platform.l4t.major >= 38 else "tegra"
    return Target(
        arch=platform.arch, flavour=flavour, distro=platform.os_id,
        distro_version=_version(platform.os_version),
        cuda=platform.cuda or _version(torch_cuda), l4t=platform.l4t, jetpack=platform.jetpack,
        python=platform.python, glibc=platform.glibc)


def _outside(name: str, specifier: SpecifierSet | None, have: Version | None) -> str | None:
    if specifier is None:
        return None
    if have is None:
        return f"needs {name} {specifier}, the target's {name} is unknown"
    if not specifier.contains(have, prereleases=True):
        return f"needs {name} {specifier}, the target has {have}"
    return None


def why_not(applies: Applies, target: Target) -> str | None:
    """Why a recipe does not fit the target (its first unmet constraint), or None if it does."""
    for name, allowed, have in (("architecture", applies.arch, target.arch),
                                ("CUDA userspace", applies.flavour, target.flavour),
                                ("distribution", applies.distro, target.distro)):
        if allowed and have not in allowed:
            return f"needs {name} {' or '.join(sorted(allowed))}, the target has {have or '?'}"
    for name, specifier, version in (
            ("CUDA", applies.cuda, target.cuda), ("L4T", applies.l4t, target.l4t),
            ("JetPack", applies.jetpack, target.jetpack),
            ("distribution release", applies.distro_version, target.distro_version),
            ("Python", applies.python, target.python), ("glibc", applies.glibc, target.glibc)):
        reason = _outside(name, specifier, version)
        if reason:
            return reason
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """The answer to one finding: what to do, or that nothing here can."""

    finding: Finding
    wanted: str  # the soname (or torch) the finding needs
    recipes: tuple[Recipe, ...]  # those that fit, best first
    excluded: tuple[tuple[Recipe, str], ...]  # those that provide it but do not fit, and why
    activate: str | None = None  # a folder holding the soname, off every search path
    family: tuple[str, ...] = ()  # files of the same library present, when nothing provides it

    @property
    def chosen(self) -> Recipe | None:
        """The recipe a plan uses: the best that fits."""
        return self.recipes[0] if self.recipes else None


@functools.lru_cache(maxsize=1024)
def _soname_patterns(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression matching what any of a recipe's soname globs matches."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")


def _provides(recipe: Recipe, soname: str) -> bool:
    """`soname` (itself a glob when an LD_PRELOAD pattern) meets one of the recipe's globs."""
    if _soname_patterns(recipe.provides.sonames).match(soname):
        return True
    # A plain name matches a glob only as above; a glob is tried against each pattern.
    return any(c in soname for c in "*?[") and any(
        fnmatch.fnmatchcase(pattern, soname) for pattern in recipe.provides.sonames)


def _replaces_torch(recipe: Recipe) -> bool:
    return any(step.kind in (StepKind.TORCH_WHEEL, StepKind.SOURCE_BUILD)
               for m in recipe.methods for step in m.steps)


def wanted_by(finding: Finding) -> str | None:
    """The soname a finding needs provided, `torch` for a torch that cannot run here."""
    wanted: str | None = None
    if isinstance(finding, MissingLibrary):
        wanted = finding.soname
    elif isinstance(finding, VersionNotFound) and ".so" in finding.file:
        wanted = finding.file
    elif isinstance(finding, CudnnTooOld):
        wanted = f"libcudnn.so.{finding.built_with.major}"
    elif isinstance(finding, PreloadNotFound):
        wanted = finding.pattern
    elif isinstance(finding, DriverTooOld):
        wanted = "libcuda.so.1"
    elif isinstance(finding, WheelTagMismatch | NoKernelForGpu | CpuOnlyTorch):
        wanted = "torch"
    return wanted


def _new_enough(recipe: Recipe, finding: Finding) -> str | None:
    """Why the recipe's version cannot fix the finding, or None.

    A cuDNN torch refuses needs one of its major, minor or newer; a driver too old needs a
    driver branch new enough for torch's CUDA.
    """
    if isinstance(finding, DriverTooOld):
        branches = [s.min_branch for m in recipe.methods for s in m.steps
                    if s.kind is StepKind.DRIVER and s.min_branch is not None]
        if branches and max(branches) < finding.needed_branch:
            return (f"names driver {max(branches)}, torch's CUDA {finding.cuda} needs "
                    f"{finding.needed_branch} or newer")
        return None
    if not isinstance(finding, CudnnTooOld):
        return None
    version, built = recipe.provides.version, finding.built_with
    if version is None or version.major != built.major or version.minor < built.minor:
        return f"provides cuDNN {version or '?'}, torch needs {built.major}.{built.minor} or newer"
    return None


def _best_first(recipe: Recipe) -> tuple[int, str]:
    return (-recipe.prefer, recipe.id)


def _fix(finding: Finding, wanted: str, recipes: Sequence[Recipe], target: Target) -> Fix:
    if wanted == "torch":
        offered = [r for r in recipes if _replaces_torch(r)]
    else:
        offered = [r for r in recipes if _provides(r, wanted)]
    fitting, excluded = [], []
    for recipe in sorted(offered, key=_best_first):
        reason = why_not(recipe.applies, target) or _new_enough(recipe, finding)
        if reason is None:
            fitting.append(recipe)
        else:
            excluded.append((recipe, reason))
    activate = None
    family: tuple[str, ...] = ()
    if isinstance(finding, MissingLibrary):
        here = [f.path for f in finding.found_elsewhere if f.same_soname]
        activate = posixpath.dirname(here[0]) if here else None
        family = tuple(f.name for f in finding.found_elsewhere if not f.same_soname)
    return Fix(finding=finding, wanted=wanted, recipes=tuple(fitting), excluded=tuple(excluded),
               activate=activate, family=family)


def beyond_recipes(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Findings that block `import torch` and that no recipe can fix by their kind.

    Undefined symbols, a package pinned to another torch, static TLS exhausted: no library
    installed makes them go, so a plan must name them instead of claiming to fix everything.
    """
    from resolver.findings.model import Severity  # noqa: PLC0415

    return tuple(f for f in findings
                 if f.severity is Severity.BLOCKS_IMPORT and wanted_by(f) is None)


def match_findings(findings: Sequence[Finding], recipes: Sequence[Recipe], target: Target
                   ) -> tuple[Fix, ...]:
    """A `Fix` for every finding that names something a recipe could provide, in order."""
    fixes = []
    for finding in findings:
        wanted = wanted_by(finding)
        if wanted is not None:
            fixes.append(_fix(finding, wanted, recipes, target))
    return tuple(fixes)

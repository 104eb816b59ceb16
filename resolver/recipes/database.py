"""The recipe database: every `<id>.toml` of a folder, loaded, and linted as a whole.

`load_database` reads the folder and fails on the first bad file (a command that uses recipes
must not guess around a broken one); `lint_database` reads every file and reports every problem
of every file, then what only the whole set shows: files that are not recipes, and two recipes
that provide the same soname where both could apply, with no `prefer` to choose between them
(spack's `audit`). Constraint overlap is decided by probing the versions the two specifiers
mention, so `>=13` and `<13` never overlap and `>=12` and `<14` do.
"""

from __future__ import annotations

import fnmatch
import itertools
import tomllib
from typing import TYPE_CHECKING

from packaging.version import Version

from resolver.errors import InvalidRecipe, RecipeError
from resolver.recipes.schema import parse_recipe

if TYPE_CHECKING:
    from pathlib import Path

    from packaging.specifiers import SpecifierSet

    from resolver.recipes.schema import Applies, Recipe

__all__ = ["applies_overlap", "lint_database", "load_database", "read_recipe"]

# Files a recipe folder may hold besides recipes.
_ALLOWED = frozenset({"README.md"})
_MAX_BYTES = 1 << 20  # a recipe is a page of TOML


def read_recipe(path: Path) -> Recipe:
    """The recipe in `path` (its stem is the id).

    Raises:
        InvalidRecipe: the file is unreadable, not TOML, or not a valid recipe.

    """
    from resolver.errors import UnusableFile  # noqa: PLC0415
    from resolver.host_files import read_regular  # noqa: PLC0415

    try:
        data = tomllib.loads(read_regular(path, _MAX_BYTES, "a recipe").decode("utf-8"))
    except UnusableFile as err:
        raise InvalidRecipe((RecipeError(str(err).removeprefix(f"{path}: "), file=str(path)),)
                            ) from err
    except OSError as err:
        raise InvalidRecipe((RecipeError(f"cannot read: {err.strerror}", file=str(path)),)
                            ) from err
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise InvalidRecipe((RecipeError(f"not TOML: {err}", file=str(path)),)) from err
    return parse_recipe(path.stem, data, file=str(path))


def load_database(folder: Path) -> tuple[Recipe, ...]:
    """Every recipe of `folder`, sorted by id.

    Raises:
        InvalidRecipe: a recipe is invalid (the first one met, with all its problems).
        RecipeError: the folder cannot be listed.

    """
    try:
        # iterdir, not glob: glob takes a folder it cannot list for an empty one.
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(".toml"))
    except OSError as err:
        raise RecipeError(f"cannot list: {err.strerror}", file=str(folder)) from err
    return tuple(read_recipe(path) for path in paths)


def _probe_versions(*specifiers: SpecifierSet | None) -> list[Version]:
    """Versions around every bound the specifiers mention: enough to find a common one."""
    probes = {Version("0")}
    for specifier in specifiers:
        for spec in specifier or ():
            base = Version(spec.version.replace(".*", ""))
            release = base.release
            probes.update({base, Version(".".join(map(str, (*release[:-1], release[-1] + 1)))),
                           Version(f"{base}.post999"), Version(f"{base}.dev0")})
            if release[-1] > 0:
                probes.add(Version(".".join(map(str, (*release[:-1], release[-1] - 1)))))
    return sorted(probes)


def _specifiers_overlap(a: SpecifierSet | None, b: SpecifierSet | None) -> bool:
    if a is None or b is None:
        return True
    return any(a.contains(v, prereleases=True) and b.contains(v, prereleases=True)
               for v in _probe_versions(a, b))


def applies_overlap(a: Applies, b: Applies) -> bool:
    """True when some target could satisfy both constraint sets."""
    sets = all(not x or not y or x & y for x, y in (
        (a.arch, b.arch), (a.flavour, b.flavour), (a.distro, b.distro)))
    return sets and all(_specifiers_overlap(x, y) for x, y in (
        (a.cuda, b.cuda), (a.l4t, b.l4t), (a.jetpack, b.jetpack),
        (a.distro_version, b.distro_version), (a.python, b.python), (a.glibc, b.glibc)))


def _shared_sonames(a: Recipe, b: Recipe) -> list[str]:
    """Sonames (or globs) of `a` that some soname of `b` matches, or the other way round."""
    return sorted({x for x, y in itertools.product(a.provides.sonames, b.provides.sonames)
                   if fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)})


def lint_database(folder: Path) -> tuple[tuple[Recipe, ...], tuple[RecipeError, ...]]:
    """Every valid recipe of `folder` and every problem of the folder, file by file.

    Never raises for a bad recipe: its problems are returned.
    """
    problems: list[RecipeError] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        return (), (RecipeError(f"cannot list: {err.strerror}", file=str(folder)),)
    recipes: list[Recipe] = []
    for path in entries:
        if path.suffix != ".toml":
            if path.name not in _ALLOWED:
                problems.append(RecipeError("not a recipe (a recipe is <id>.toml)",
                                            file=str(path)))
            continue
        try:
            recipes.append(read_recipe(path))
        except InvalidRecipe as err:
            problems.extend(err.problems)
    for a, b in itertools.combinations(recipes, 2):
        shared = _shared_sonames(a, b)
        if shared and a.prefer == b.prefer and applies_overlap(a.applies, b.applies):
            problems.append(RecipeError(
                f"provides {', '.join(shared)} as {b.id} does, where both apply, with no "
                "preference: give one a higher `prefer`, or disjoint `applies`",
                file=str(folder / f"{a.id}.toml"), field="provides.sonames"))
    return tuple(recipes), tuple(problems)

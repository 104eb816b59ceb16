"""Recipe files (TOML, `schema = 1`) read into frozen values, every error collected.

A recipe says what it provides (sonames, globs allowed, and the libraries those open with
dlopen), where it applies (architecture, CUDA userspace flavour, CUDA, L4T, JetPack, distribution
and release, Python, glibc: PEP 440 specifiers or plain sets), how to apply it (methods in order
of preference, each a list of typed steps), how to check it worked, and the public sources its
facts come from. The undo of a step follows from its kind (`pip` uninstalls what it installed,
`apt` removes its packages, `redist` removes its prefix, `activate` removes its ld.so.conf.d
file or DT_RUNPATH entry); no recipe carries executable Python or shell text.

`parse_recipe` reads one file's data and raises one `RecipeError` listing every problem, each
with the file and a dotted field path (`methods[1].steps[0].sha256`); unknown keys are errors
(spack's `audit`, packaging's `pylock` validation). This module reads no files and knows nothing
of findings (`resolver.recipes.database` loads the folder, `resolver.recipes.match` matches).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from resolver.errors import InvalidRecipe, RecipeError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "PATH_TOKENS",
    "Applies",
    "Check",
    "Commit",
    "Method",
    "Provides",
    "Recipe",
    "Step",
    "StepKind",
    "parse_recipe",
]

SCHEMA = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SONAME = re.compile(r"[A-Za-z0-9_.+*?\[\]-]+\.so(\.[0-9*?\[\]]+)*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?")
_ID = re.compile(r"[a-z0-9][a-z0-9.-]*")
_FLAVOURS = frozenset({"sbsa", "tegra", "x86_64"})
_ARCHES = frozenset({"aarch64", "x86_64"})
_REDIST_PLATFORMS = frozenset({"linux-sbsa", "linux-aarch64", "linux-x86_64"})


class StepKind(enum.Enum):
    """What a step does; each kind has its own fields and its own undo."""

    PIP = "pip"  # python -m pip install REQUIREMENTS (undo: uninstall what it installed)
    APT = "apt"  # apt-get install PACKAGES (undo: remove them)
    REDIST = "redist"  # an NVIDIA redistrib_*.json archive unpacked under a prefix (undo: rm)
    ACTIVATE = "activate"  # make a directory findable by the loader (undo: take it back)
    TORCH_WHEEL = "torch-wheel"  # replace torch with a named build (undo: the snapshot)
    SOURCE_BUILD = "source-build"  # build torch from a tag plus upstream commits
    DRIVER = "driver"  # not installable: names the JetPack/L4T component and driver branch


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """An upstream commit a source build cherry-picks, and the first release that has it."""

    sha: str  # 40 hex digits: the content address of the change
    url: str  # where it is discussed (the pull request)
    first_release: Version | None = None  # a tag at or past this needs no cherry-pick


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One typed step. Fields not used by its kind are empty."""

    kind: StepKind
    requirements: tuple[str, ...] = ()  # pip, torch-wheel: PEP 508 requirements
    index_url: str | None = None  # pip, torch-wheel
    packages: tuple[str, ...] = ()  # apt: name or name=version
    repository: str | None = None  # apt: the NVIDIA CUDA repository (https); source-build: git
    keyring_url: str | None = None  # apt: the keyring package that repository needs
    manifest_url: str | None = None  # redist: the redistrib_*.json
    component: str | None = None  # redist: the manifest's component key; driver: the package
    version: str | None = None  # redist: the component version; source-build: the tag
    platform: str | None = None  # redist: linux-sbsa, linux-aarch64, linux-x86_64
    cuda_variant: str | None = None  # redist: cuda12 / cuda13 for nested manifests
    sha256: str | None = None  # redist: of the archive
    size: int | None = None  # redist: bytes
    prefix: str | None = None  # redist: where it unpacks (`{component}` and `{version}` expand)
    directory: str | None = None  # activate: `{site}` and `{prefix}` expand
    commits: tuple[Commit, ...] = ()  # source-build: upstream commits to cherry-pick, in order
    env: tuple[tuple[str, str], ...] = ()  # source-build: the build environment
    min_branch: int | None = None  # driver: the oldest driver branch that works
    where: str | None = None  # driver: where the file belongs on the target


@dataclass(frozen=True, slots=True, kw_only=True)
class Method:
    """One way to apply a recipe: its steps in order."""

    id: str
    steps: tuple[Step, ...]
    needs_root: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Provides:
    """What a recipe makes loadable."""

    sonames: tuple[str, ...]  # globs allowed: `libnvpl_lapack_*.so.0`
    opens: tuple[str, ...] = ()  # what those open with dlopen, which must load too
    version: Version | None = None  # the version of what it provides, where it matters


@dataclass(frozen=True, slots=True, kw_only=True)
class Applies:
    """Where a recipe applies; an empty set or None means anywhere."""

    arch: frozenset[str] = frozenset()
    flavour: frozenset[str] = frozenset()  # sbsa, tegra, x86_64
    distro: frozenset[str] = frozenset()  # os-release ID
    cuda: SpecifierSet | None = None
    l4t: SpecifierSet | None = None
    jetpack: SpecifierSet | None = None
    distro_version: SpecifierSet | None = None
    python: SpecifierSet | None = None
    glibc: SpecifierSet | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """How to tell the recipe worked."""

    sonames: tuple[str, ...]  # resolve in a re-diagnosis
    python: str | None = None  # a snippet the target interpreter runs (exit 0: worked)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """One recipe file."""

    id: str  # the file's stem
    summary: str
    sources: tuple[str, ...]  # where its facts come from (https URLs)
    provides: Provides
    applies: Applies
    methods: tuple[Method, ...]
    check: Check
    prefer: int = 0  # among recipes providing one soname under overlapping constraints
    needs: tuple[str, ...] = ()  # sonames its libraries need from other recipes (plan order)


_TOML_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "an array",
               dict: "a table"}


class _Errors:
    """Collects `RecipeError`s for one file (packaging's `_ErrorCollector`)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[RecipeError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(RecipeError(message, file=self.file, field=field))


class _Table:
    """A TOML table being read: each key taken once, leftovers reported as unknown."""

    def __init__(self, data: object, path: str, errors: _Errors) -> None:
        self.path, self.errors = path, errors
        if not isinstance(data, dict):
            errors.add(path or "(top)", f"expected a table, got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data
        self.taken: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type, default: object = None) -> Any:  # noqa: ANN401 - TOML
        """The value of `key` if it has type `kind` (a bool is no int), else `default`."""
        self.taken.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.errors.add(self.field(key), f"expected {_TOML_NAMES.get(kind, kind.__name__)}, "
                            f"got {value!r}")
            return default
        return value

    def strings(self, key: str, check: Callable[[str], str | None] | None = None
                ) -> tuple[str, ...]:
        value = self.get(key, list, [])
        out = []
        for index, item in enumerate(value):
            where = f"{self.field(key)}[{index}]"
            if not isinstance(item, str) or not item:
                self.errors.add(where, f"expected a non-empty string, got {item!r}")
                continue
            problem = check(item) if check else None
            if problem:
                self.errors.add(where, problem)
                continue
            out.append(item)
        return tuple(out)

    def done(self) -> None:
        for key in sorted(set(self.data) - self.taken):
            self.errors.add(self.field(key), "unknown key")


def _https(url: str) -> str | None:
    if url.startswith("https://") and len(url) > len("https://") and not re.search(r"\s", url):
        return None
    return f"not an https URL: {url!r}"


# The tokens a recipe path may hold: the torch's site-packages, the redist prefix, the target's
# multiarch triplet, and a redist step's component and version.
PATH_TOKENS = frozenset({"{site}", "{prefix}", "{triplet}", "{component}", "{version}"})
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # C0 controls and DEL: a line break, an escape


def _tokens(path: str) -> str | None:
    """Why a recipe path cannot be used: an unknown token, a '..', a control character.

    A path names a place apply writes (a prefix, a folder in an ld.so.conf.d file): it stays
    where it says, one line, inside the root (`resolver.apply.confine` checks again).
    """
    if _CONTROL.search(path):
        return f"holds a control character: {path!r}"
    if ".." in path.split("/"):
        return f"climbs out with '..': {path!r}"
    unknown = sorted(set(re.findall(r"\{[^}]*\}", path)) - PATH_TOKENS)
    if unknown:
        return f"unknown token(s) {', '.join(unknown)} in {path!r} (known: " + ", ".join(
            sorted(PATH_TOKENS)) + ")"
    return None


def _soname(name: str) -> str | None:
    return None if _SONAME.fullmatch(name) else f"not a soname or soname glob: {name!r}"


def _requirement(text: str) -> str | None:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as err:
        return f"not a PEP 508 requirement: {(str(err).splitlines() or [''])[0]}"
    if requirement.url is not None and _https(requirement.url):
        # A direct reference (PEP 440 `name @ URL`) is fetched as it is: https only, like
        # every other address a recipe names (no file://, no plain http).
        return f"a direct reference must be an https URL, got {requirement.url!r}"
    return None


def _package(text: str) -> str | None:
    return None if _PACKAGE.fullmatch(text) else f"not a Debian package[=version]: {text!r}"


def _specifier(table: _Table, key: str) -> SpecifierSet | None:
    text = table.get(key, str)
    if text is None:
        return None
    try:
        specifier = SpecifierSet(text)
    except InvalidSpecifier:
        table.errors.add(table.field(key), f"not a PEP 440 specifier: {text!r}")
        return None
    if any(spec.operator == "===" for spec in specifier):
        # Arbitrary equality compares strings (PEP 440): a target's version is a version,
        # and `===abc` would match none while looking like a constraint.
        table.errors.add(table.field(key), f"arbitrary equality (===) is not supported: {text!r}")
        return None
    return specifier


def _choices(table: _Table, key: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    def check(item: str) -> str | None:
        if allowed is not None and item not in allowed:
            return f"{item!r} is not one of {', '.join(sorted(allowed))}"
        return None

    return frozenset(table.strings(key, check))


def _optional_url(table: _Table, key: str) -> str | None:
    url: str | None = table.get(key, str)
    if url is not None and (problem := _https(url)):
        table.errors.add(table.field(key), problem)
        return None
    return url


def _step(data: object, path: str, errors: _Errors) -> Step | None:
    table = _Table(data, path, errors)
    text = table.get("kind", str)
    try:
        kind = StepKind(text)
    except ValueError:
        errors.add(table.field("kind"), f"expected one of {', '.join(k.value for k in StepKind)},"
                   f" got {text!r}")
        return None
    reader = _STEP_READERS[kind]
    fields = reader(table)
    table.done()
    return Step(kind=kind, **fields)


def _pip_fields(table: _Table) -> dict[str, Any]:
    requirements = table.strings("requirements", _requirement)
    if not requirements:
        table.errors.add(table.field("requirements"), "a pip step installs something")
    return {"requirements": requirements, "index_url": _optional_url(table, "index_url")}


def _apt_fields(table: _Table) -> dict[str, Any]:
    packages = table.strings("packages", _package)
    if not packages:
        table.errors.add(table.field("packages"), "an apt step installs something")
    return {"packages": packages, "repository": _optional_url(table, "repository"),
            "keyring_url": _optional_url(table, "keyring_url")}


def _redist_fields(table: _Table) -> dict[str, Any]:
    fields: dict[str, Any] = {"manifest_url": _optional_url(table, "manifest_url")}
    for key in ("component", "version", "platform", "prefix"):
        fields[key] = table.get(key, str)
        if key not in table.data:
            table.errors.add(table.field(key), "required")
    if "manifest_url" not in table.data:
        table.errors.add(table.field("manifest_url"), "required")
    if fields["platform"] is not None and fields["platform"] not in _REDIST_PLATFORMS:
        table.errors.add(table.field("platform"), f"expected one of "
                         f"{', '.join(sorted(_REDIST_PLATFORMS))}, got {fields['platform']!r}")
    variant = table.get("cuda_variant", str)
    if variant is not None and not re.fullmatch(r"cuda\d+", variant):
        table.errors.add(table.field("cuda_variant"), f"expected cudaNN, got {variant!r}")
    sha256, size = _archive_pins(table)
    prefix = fields["prefix"]
    if prefix is not None and not prefix.startswith("/"):
        table.errors.add(table.field("prefix"), f"expected an absolute path, got {prefix!r}")
    elif prefix is not None and (problem := _tokens(prefix)):
        table.errors.add(table.field("prefix"), problem)
    return {**fields, "cuda_variant": variant, "sha256": sha256, "size": size}


def _archive_pins(table: _Table) -> tuple[str | None, int | None]:
    """A redist step's sha256 and size, both required."""
    sha256 = table.get("sha256", str)
    if sha256 is None or not _SHA256.fullmatch(sha256):
        table.errors.add(table.field("sha256"), f"expected 64 lowercase hex digits, got {sha256!r}")
    if "size" not in table.data:
        table.errors.add(table.field("size"), "required: the archive's size in bytes")
    size = table.get("size", int)
    if size is not None and size <= 0:
        table.errors.add(table.field("size"), f"expected a positive byte count, got {size}")
    return sha256, size


def _activate_fields(table: _Table) -> dict[str, Any]:
    directory = table.get("directory", str)
    if directory is None or not directory.startswith(("/", "{site}", "{prefix}")):
        table.errors.add(table.field("directory"),
                         f"expected an absolute path or one under {{site}}, got {directory!r}")
    elif problem := _tokens(directory):
        table.errors.add(table.field("directory"), problem)
    return {"directory": directory}


def _torch_wheel_fields(table: _Table) -> dict[str, Any]:
    requirements = table.strings("requirements", _requirement)
    if not any(Requirement(r).name == "torch" for r in requirements):
        table.errors.add(table.field("requirements"), "a torch-wheel step names torch")
    return {"requirements": requirements, "index_url": _optional_url(table, "index_url")}


def _source_build_fields(table: _Table) -> dict[str, Any]:
    repository = _optional_url(table, "repository")
    tag = table.get("tag", str)
    for key, value in (("repository", repository), ("tag", tag)):
        if value is None:
            table.errors.add(table.field(key), "required")
    commits = tuple(c for index, raw in enumerate(table.get("commits", list, []))
                    if (c := _commit(raw, f"{table.field('commits')}[{index}]", table.errors)))
    env = table.get("env", dict, {})
    pairs = []
    for key, value in sorted(env.items()):
        if not isinstance(value, str):
            table.errors.add(f"{table.field('env')}.{key}", f"expected a string, got {value!r}")
            continue
        pairs.append((key, value))
    return {"repository": repository, "version": tag, "commits": commits, "env": tuple(pairs)}


def _commit(data: object, path: str, errors: _Errors) -> Commit | None:
    table = _Table(data, path, errors)
    sha, url, first = table.get("sha", str), table.get("url", str), table.get(
        "first_release", str)
    table.done()
    if sha is None or not _COMMIT.fullmatch(sha):
        errors.add(table.field("sha"), f"expected a 40-digit commit hash, got {sha!r}")
        return None
    if url is None or _https(url):
        errors.add(table.field("url"), f"expected the https URL of the change, got {url!r}")
        return None
    release = None
    if first is not None:
        try:
            release = Version(first)
        except InvalidVersion:
            errors.add(table.field("first_release"), f"not a PEP 440 version: {first!r}")
    return Commit(sha=sha, url=url, first_release=release)


def _driver_fields(table: _Table) -> dict[str, Any]:
    component, where = table.get("component", str), table.get("where", str)
    branch = table.get("min_branch", int)
    for key, value in (("component", component), ("min_branch", branch), ("where", where)):
        if value is None:
            table.errors.add(table.field(key), "required")
    return {"component": component, "min_branch": branch, "where": where}


_STEP_READERS: dict[StepKind, Callable[[_Table], dict[str, Any]]] = {
    StepKind.PIP: _pip_fields,
    StepKind.APT: _apt_fields,
    StepKind.REDIST: _redist_fields,
    StepKind.ACTIVATE: _activate_fields,
    StepKind.TORCH_WHEEL: _torch_wheel_fields,
    StepKind.SOURCE_BUILD: _source_build_fields,
    StepKind.DRIVER: _driver_fields,
}


def _methods(top: _Table, errors: _Errors) -> tuple[Method, ...]:
    raw = top.get("methods", list, [])
    if not raw:
        errors.add("methods", "a recipe has at least one method")
    methods, ids = [], set()
    for index, data in enumerate(raw):
        table = _Table(data, f"methods[{index}]", errors)
        method_id = table.get("id", str)
        if method_id is None or not _ID.fullmatch(method_id) or method_id in ids:
            errors.add(table.field("id"), f"expected a unique lowercase id, got {method_id!r}")
        ids.add(method_id)
        steps_raw = table.get("steps", list, [])
        if not steps_raw:
            errors.add(table.field("steps"), "a method has at least one step")
        steps = [_step(s, f"{table.path}.steps[{i}]", errors) for i, s in enumerate(steps_raw)]
        needs_root = table.get("needs_root", bool, False)
        table.done()
        methods.append(Method(id=method_id or "", steps=tuple(s for s in steps if s),
                              needs_root=needs_root))
    return tuple(methods)


def _provides(top: _Table, errors: _Errors) -> Provides:
    table = _Table(top.get("provides", dict, {}), "provides", errors)
    sonames = table.strings("sonames", _soname)
    if not sonames:
        errors.add("provides.sonames", "a recipe provides at least one soname")
    opens = table.strings("opens", _soname)
    text = table.get("version", str)
    version = None
    if text is not None:
        try:
            version = Version(text)
        except InvalidVersion:
            errors.add("provides.version", f"not a PEP 440 version: {text!r}")
    table.done()
    return Provides(sonames=sonames, opens=opens, version=version)


def _applies(top: _Table, errors: _Errors) -> Applies:
    table = _Table(top.get("applies", dict, {}), "applies", errors)
    applies = Applies(
        arch=_choices(table, "arch", _ARCHES), flavour=_choices(table, "flavour", _FLAVOURS),
        distro=_choices(table, "distro"), cuda=_specifier(table, "cuda"),
        l4t=_specifier(table, "l4t"), jetpack=_specifier(table, "jetpack"),
        distro_version=_specifier(table, "distro_version"),
        python=_specifier(table, "python"), glibc=_specifier(table, "glibc"))
    table.done()
    return applies


def _check(top: _Table, errors: _Errors, provides: Provides) -> Check:
    table = _Table(top.get("check", dict, {}), "check", errors)
    sonames = table.strings("sonames", _soname) or tuple(
        s for s in provides.sonames if not any(c in s for c in "*?["))
    python = table.get("python", str)
    table.done()
    return Check(sonames=sonames, python=python)


def parse_recipe(recipe_id: str, data: Mapping[str, Any], *, file: str) -> Recipe:
    """The recipe `recipe_id` from its parsed TOML `data`.

    Raises:
        InvalidRecipe: anything is wrong; its `problems` are every `RecipeError`, each naming
            `file` and the dotted field.

    """
    errors = _Errors(file)
    top = _Table(dict(data), "", errors)
    if top.get("schema", int) != SCHEMA:
        errors.add("schema", f"expected schema = {SCHEMA}")
    if not _ID.fullmatch(recipe_id):
        errors.add("(file name)", f"a recipe id is lowercase letters, digits, '.' and '-': "
                   f"{recipe_id!r}")
    summary = top.get("summary", str) or ""
    if not summary:
        errors.add("summary", "required: one line saying what the recipe does")
    elif _CONTROL.search(summary):
        errors.add("summary", f"one line without control characters, got {summary!r}")
    sources = top.strings("sources", _https)
    if not sources:
        errors.add("sources", "a recipe cites at least one public source (https URL)")
    prefer = top.get("prefer", int, 0)
    needs = top.strings("needs", _soname)
    provides = _provides(top, errors)
    applies = _applies(top, errors)
    methods = _methods(top, errors)
    check = _check(top, errors, provides)
    top.done()
    if errors.errors:
        raise InvalidRecipe(tuple(errors.errors))
    return Recipe(id=recipe_id, summary=summary, sources=sources, provides=provides,
                  applies=applies, methods=methods, check=check, prefer=prefer, needs=needs)

"""The plan: the ordered, de-duplicated steps that fix a diagnosis, as the commands `apply` runs.

A pure function of the fixes (`resolver.recipes.match`), the target and the options: it reads
no network and no file. Each chosen recipe contributes the steps of one method — the first
whose kinds include the `prefer`red one, else its first — and a recipe chosen for several
findings contributes them once. A soname that exists under the root off every search path gets
its folder activated instead. Recipes run after the recipes providing what they `need`
(cuDSS and cuDNN need `libcublas.so.13`). What no recipe can fix (nothing provides it, or only
the driver's JetPack component can) is listed, never guessed.

The installed torch's own pins (its Requires-Dist) replace a recipe's versions of the same
distributions: pip would otherwise report a conflict, and the next torch install undo the fix. A
folder the loader already searches for the soname (torch's DT_RPATH names `nvidia/*/lib`) is not
activated again. Offline (`wheelhouse`), only pip steps whose requirements the wheelhouse holds
are taken; writing into a site-packages of the system (`/usr`, `/opt`) needs root.

Activation: as root, a file in `/etc/ld.so.conf.d` and `ldconfig` (`-r ROOT` for another root);
without root (`no_root`), the folder is added to the DT_RPATH of each object that needs the
soname with `patchelf --force-rpath --add-rpath`, since torch's libraries carry DT_RPATH, which
their dependencies inherit and LD_LIBRARY_PATH cannot override (FACTS.md, "How torch wheels find
them"); both are undone exactly, and both are seen by a re-diagnosis.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from resolver.recipes.schema import Step, StepKind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from resolver.recipes.match import Fix
    from resolver.recipes.schema import Commit, Method, Recipe

__all__ = [
    "LDCONFIG_CACHES",
    "STAGING",
    "Action",
    "Plan",
    "PlanOptions",
    "make_plan",
    "missing_requirements",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanOptions:
    """How to plan: the target's interpreter and site, and what the user allows."""

    python: str  # the target interpreter, as the plan's commands name it
    site: str  # the torch's site-packages, in the root's namespace
    root: str = "/"  # the target root (host path); "/" is the live machine
    triplet: str | None = None  # the target's multiarch triplet
    prefer: StepKind | None = None  # pip, apt or redist first when a recipe offers it
    no_root: bool = False  # only steps an unprivileged user can take inside the environment
    wheelhouse: str | None = None  # offline: pip resolves against this folder only
    wheels: tuple[str, ...] = ()  # the wheel file names in the wheelhouse
    source_build: bool = False  # allow a torch source build
    torch_requires: tuple[str, ...] = ()  # the installed torch's Requires-Dist: its own pins
    searched: frozenset[str] = frozenset()  # folders the loader searched in the diagnosis
    pip_sources: tuple[str, ...] = ()  # the user's --index-url / --find-links for pip
    pip_platform: tuple[str, ...] = ()  # another root: pip's --platform, --python-version...
    ldconfig: tuple[str, ...] = ()  # how to rebuild the root's ld.so.cache, when not ours
    deb_arch: str | None = None  # another root: its Debian architecture (arm64, amd64)
    build_dir: str = "/var/lib/jetson-resolve/build"  # where source builds check out
    installed: frozenset[str] | None = None  # canonical names of the site's distributions
    # (None: not known, so torch's own requirements are not checked)
    markers: Mapping[str, str] = field(default_factory=dict)  # the target's PEP 508 marker
    # environment (platform_machine, python_version, ...), for torch's Requires-Dist


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One step of the plan: the command it runs (or what it does, when it is no command)."""

    recipe: str  # the recipe id, or "activate" for a folder found under the root
    method: str
    kind: StepKind
    argv: tuple[tuple[str, ...], ...]  # the exact argument lists, in order
    effect: str  # what it changes, in words
    writes: tuple[str, ...] = ()  # files it creates (in the root's namespace)
    directory: str | None = None  # activate: the folder made findable
    needs_root: bool = False
    fixes: tuple[str, ...] = ()  # the sonames (or torch) it is there for
    undo: tuple[tuple[str, ...], ...] = ()  # the argument lists that take it back
    undo_effect: str = ""  # how it is taken back, in words
    env: tuple[tuple[str, str], ...] = ()  # added to the environment its commands run in
    touches: tuple[str, ...] = ()  # caches its commands rewrite (ld.so.cache, ldconfig's
    # aux-cache): kept before it runs, put back after its undo
    redist: Step | None = None  # a redist step: the manifest, archive pins and the prefix
    creates: str | None = None  # a folder (root's namespace) the action creates whole, taken
    # away whole when it is undone (a redist prefix)
    unpack_into: str | None = None  # apt into another root: the root (host path) the
    # downloaded packages are unpacked into
    merge_into: str | None = None  # pip into another root: the site (host path) the staging
    # folder pip installed into (`STAGING`) is merged into, file by file, after the commands


# What ldconfig rewrites besides the conf files it reads (glibc's elf/ldconfig.c, elf/cache.c).
LDCONFIG_CACHES = ("/etc/ld.so.cache", "/var/cache/ldconfig/aux-cache")

# Where pip installs for another root before apply merges it into the site: inside the site, so
# a rename moves each file and a crash leaves it where rollback looks (a new top-level entry).
STAGING = ".jetson-resolve-staging"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The whole fix, and what it cannot fix."""

    actions: tuple[Action, ...]
    unfixable: tuple[tuple[str, str], ...]  # (what is wanted, why no step fixes it)
    deferred: tuple[str, ...] = ()  # findings of a torch the plan replaces: re-diagnosed after


def _expand(text: str, options: PlanOptions, prefix: str | None,
            step: Step | None = None) -> str:
    """A recipe path with its tokens filled in (`resolver.recipes.schema.PATH_TOKENS`)."""
    text = (text.replace("{site}", options.site).replace("{prefix}", prefix or "{prefix}")
            .replace("{triplet}", options.triplet or "{triplet}"))
    if step is not None:
        text = (text.replace("{component}", step.component or "{component}")
                .replace("{version}", step.version or "{version}"))
    return text


def _pinned_by_torch(requirements: Sequence[str], options: PlanOptions
                     ) -> tuple[tuple[str, ...], list[str]]:
    """`requirements` with each distribution torch itself pins replaced by torch's pin.

    A CUDA torch wheel pins the exact nvidia-* builds it was tested with (its Requires-Dist);
    installing another version makes pip report a conflict and the next torch install undo it.
    Returns the requirements and the ones replaced, as `recipe's -> torch's`.
    """
    pins = {}
    for line in options.torch_requires:
        try:
            pinned = Requirement(line)
        except ValueError:
            continue
        if any(spec.operator == "==" for spec in pinned.specifier):
            pins[canonicalize_name(pinned.name)] = f"{pinned.name}{pinned.specifier}"
    out, replaced = [], []
    for text in requirements:
        torch_pin = pins.get(canonicalize_name(Requirement(text).name))
        if torch_pin is not None and torch_pin != text:
            replaced.append(f"{text} -> {torch_pin}")
        out.append(torch_pin or text)
    return tuple(out), replaced


def _searched(directory: str, fix: Fix, options: PlanOptions) -> bool:
    """True when the loader already searches `directory` for the finding's soname.

    Torch's DT_RPATH names `nvidia/*/lib`: installing there is enough, no activation needed.
    """
    trail = getattr(fix.finding, "searched", ())
    wanted = posixpath.normpath(directory)
    return wanted in options.searched or any(
        posixpath.normpath(posixpath.dirname(c.path)) == wanted for c in trail)


def _pip_argv(options: PlanOptions, requirements: Sequence[str], index_url: str | None,
              *, upgrade: bool = False) -> tuple[str, ...]:
    argv = [options.python, "-m", "pip", "install"]
    if options.root != "/":
        # pip here installs for the target (its platform tags) into a staging folder, merged
        # into the site after: `--target SITE --upgrade` would replace whole top-level folders
        # (`nvidia/`, `bin/`), deleting what other distributions keep there.
        argv += [*options.pip_platform, "--target", posixpath.join(_site_host(options), STAGING)]
    elif upgrade:
        argv += ["--upgrade"]
    if options.wheelhouse is not None:
        argv += ["--no-index", "--find-links", options.wheelhouse]
    elif "--index-url" in options.pip_sources or not index_url:
        argv += options.pip_sources
    else:
        argv += ["--index-url", index_url, *options.pip_sources]
    return (*argv, *requirements)


def _site_host(options: PlanOptions) -> str:
    """The torch's site-packages as a path on this machine."""
    return posixpath.join(options.root, options.site.lstrip("/"))


def _merge_into(options: PlanOptions) -> str | None:
    """Where a pip step's staging folder is merged: another root's site, else nowhere."""
    return _site_host(options) if options.root != "/" else None


def _system_site(options: PlanOptions) -> bool:
    """True when the torch's site-packages belongs to the system (root writes there)."""
    return options.site.startswith(("/usr/", "/opt/"))


def _activation(directory: str, name: str, options: PlanOptions, requesters: Sequence[str]
                ) -> tuple[tuple[tuple[str, ...], ...], str, tuple[str, ...], bool]:
    """(argv lists, effect, files written, needs root) to make `directory` findable."""
    if options.no_root and _system_site(options):
        return (), "", (), False  # patching the system's libraries needs root too
    if options.no_root:
        argv = tuple(("patchelf", "--force-rpath", "--add-rpath", directory, path)
                     for path in requesters if path != "python")
        return argv, f"add {directory} to the DT_RPATH of {len(argv)} object(s)", (), False
    conf = f"/etc/ld.so.conf.d/jetson-resolve-{name}.conf"
    ldconfig = _ldconfig(options)
    return ((ldconfig,), f"write {conf} naming {directory}, then rebuild ld.so.cache", (conf,),
            True)


def _ldconfig(options: PlanOptions) -> tuple[str, ...]:
    """The command that rebuilds the target's ld.so.cache.

    The one given (a root of another architecture: its own ldconfig under qemu-user), else
    this machine's.
    """
    if options.ldconfig:
        return options.ldconfig
    return ("ldconfig",) if options.root == "/" else ("ldconfig", "-r", options.root)


def _undo(action: Action, step: Step, options: PlanOptions) -> Action:
    """`action` with how it is taken back.

    Apply records what a step did and undoes exactly that; these are the commands for what the
    plan already knows.
    """
    undo: tuple[tuple[str, ...], ...] = ()
    if step.kind in (StepKind.PIP, StepKind.TORCH_WHEEL):
        # What pip replaced was kept before it ran (pip's own dry-run report names it); what it
        # added is recorded as it runs. Both are put back from that, offline.
        text = ("remove what it installed and put back, byte for byte, what it replaced "
                "(kept before it ran)")
    elif step.kind is StepKind.APT and options.root == "/":
        names = tuple(p.split("=", 1)[0] for p in step.packages)
        undo = (("apt-get", "remove", "-y", *names),)
        text = f"remove {', '.join(names)}"
    elif step.kind is StepKind.ACTIVATE and action.writes:
        # The file goes back to what it was (kept before the step wrote it), then the cache.
        undo = (_ldconfig(options),)
        text = f"put {', '.join(action.writes)} back as it was, then rebuild ld.so.cache"
    elif step.kind is StepKind.ACTIVATE:
        text = "set each object's DT_RPATH back to what it was before"
    elif step.kind is StepKind.SOURCE_BUILD:
        text = ("remove the build's checkout, and put the torch it replaced back, byte for "
                "byte (kept before it ran)")
    else:
        text = "remove every file it unpacked (recorded as it unpacks)"
    return dataclasses.replace(action, undo=undo, undo_effect=text)


def _step_action(recipe: Recipe, method: Method, step: Step, options: PlanOptions,
                 fix: Fix) -> Action:
    """The action of one recipe step, with its exact commands and their undo."""
    return _undo(_step_do(recipe, method, step, options, fix), step, options)


def _step_do(recipe: Recipe, method: Method, step: Step, options: PlanOptions,
             fix: Fix) -> Action:
    """The action of one recipe step, with its exact commands."""

    def action(argv: tuple[tuple[str, ...], ...], effect: str, writes: tuple[str, ...] = (),
               *, needs_root: bool = method.needs_root) -> Action:
        return Action(recipe=recipe.id, method=method.id, kind=step.kind, argv=argv,
                      effect=effect, writes=writes, needs_root=needs_root, fixes=(fix.wanted,))

    if step.kind in (StepKind.PIP, StepKind.TORCH_WHEEL):
        upgrade = step.kind is StepKind.TORCH_WHEEL
        requirements, replaced = ((step.requirements, []) if upgrade
                                  else _pinned_by_torch(step.requirements, options))
        argv = _pip_argv(options, requirements, step.index_url, upgrade=upgrade)
        what = "install, in place of the current torch," if upgrade else "install"
        note = f" (torch's own pins: {'; '.join(replaced)})" if replaced else ""
        # pip writes into the torch's site: the system's (/usr, /opt) needs root.
        return dataclasses.replace(
            action((argv,), f"{what} {', '.join(requirements)}{note}",
                   needs_root=method.needs_root or _system_site(options)),
            merge_into=_merge_into(options))
    if step.kind is StepKind.APT:
        return _apt(action, step, options)
    if step.kind is StepKind.ACTIVATE:
        # `{prefix}` is where the method's redist step unpacks, its own tokens filled in.
        redist = next((s for s in method.steps if s.kind is StepKind.REDIST), None)
        prefix = _expand(redist.prefix or "", options, None, redist) if redist else None
        directory = _expand(step.directory or "", options, prefix)
        requesters = getattr(fix.finding, "requested_by", ())
        argv_lists, effect, writes, root = _activation(directory, recipe.id, options, requesters)
        return dataclasses.replace(action(argv_lists, effect, writes, needs_root=root),
                                   directory=directory, touches=LDCONFIG_CACHES if writes else ())
    if step.kind is StepKind.SOURCE_BUILD:
        return _source_build(action, recipe, step, options)
    if step.kind is StepKind.REDIST:
        prefix = _expand(step.prefix or "", options, None, step)
        return dataclasses.replace(action((), _effect(step, options)),
                                   redist=dataclasses.replace(step, prefix=prefix),
                                   creates=prefix)
    return action((), _effect(step, options))


def _apt(action: Callable[..., Action], step: Step, options: PlanOptions) -> Action:
    """An apt step: `apt-get install` on this machine, else download and unpack into the root."""
    setup: tuple[tuple[str, ...], ...] = ()
    source = ""
    if step.keyring_url:
        # NVIDIA's CUDA repository: its keyring package adds the source list; the file is
        # downloaded (https, checked) before dpkg installs it.
        keyring = posixpath.basename(step.keyring_url)
        setup = (("dpkg", "-i", keyring), ("apt-get", "update"))
        source = (f" from {step.repository or 'NVIDIA'} (its keyring {step.keyring_url} "
                  "downloaded and installed first)")
    if options.root == "/":
        return action((*setup, ("apt-get", "install", "-y", *step.packages)),
                      f"install {', '.join(step.packages)}{source}")
    # apt-get downloads the target's architecture (`pkg:arm64`); the packages are
    # unpacked into the root by apply, file by file (`resolver.apply.debs`).
    packages = tuple(p if ":" in p.split("=", 1)[0] or not options.deb_arch
                     else f"{p.split('=', 1)[0]}:{options.deb_arch}"
                     + (f"={p.split('=', 1)[1]}" if "=" in p else "")
                     for p in step.packages)
    return dataclasses.replace(
        action((("apt-get", "download", *packages),),
               f"download {', '.join(packages)} and unpack them into {options.root}, "
               "recording every file (no maintainer scripts run)"),
        unpack_into=options.root)


def _source_build(action: Callable[..., Action], recipe: Recipe, step: Step,
                  options: PlanOptions) -> Action:
    """A source build as its exact commands.

    A checkout of the tag, the cherry-picks (git stops at the first that does not apply
    cleanly, and so does the step), the submodules, a wheel built with the recipe's
    environment, and that wheel installed.
    """
    checkout = posixpath.join(options.build_dir, recipe.id)
    wheels = posixpath.join(checkout, "dist-jetson-resolve")
    git = ("git", "-C", checkout)
    argv: list[tuple[str, ...]] = [
        ("git", "clone", "--branch", step.version or "", "--depth", "1",
         step.repository or "", checkout)]
    for commit in _cherry_picks(step):
        argv += [(*git, "fetch", "--depth", "2", "origin", commit.sha),
                 (*git, "-c", "user.name=jetson-resolve", "-c", "user.email=jetson-resolve@invalid",
                  "cherry-pick", commit.sha)]
    argv += [(*git, "submodule", "update", "--init", "--recursive", "--depth", "1"),
             (options.python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
              "--wheel-dir", wheels, checkout),
             (options.python, "-m", "pip", "install", "--no-index", "--no-deps",
              "--find-links", wheels, "--upgrade",
              f"torch=={recipe.provides.version}" if recipe.provides.version else "torch")]
    return dataclasses.replace(action(tuple(argv), _effect(step, options)), env=step.env,
                               creates=checkout)


def _effect(step: Step, options: PlanOptions) -> str:
    """What a step that runs no single command does, in words."""
    if step.kind is StepKind.REDIST:
        variant = f" {step.cuda_variant}" if step.cuda_variant else ""
        return (f"download {step.component} {step.version} for {step.platform}{variant} as "
                f"listed in {step.manifest_url} (sha256 {step.sha256}, {step.size} bytes), "
                f"check it, and unpack it into {_expand(step.prefix or '', options, None, step)}")
    if step.kind is StepKind.SOURCE_BUILD:
        env = " ".join(f"{k}={v}" for k, v in step.env)
        picks = _cherry_picks(step)
        have = len(step.commits) - len(picks)
        already = f" ({have} more already in {step.version})" if have else ""
        shas = f": {', '.join(c.sha[:12] for c in picks)}" if picks else ""
        return (f"build torch from {step.repository} at {step.version} with "
                f"{len(picks)} upstream commit(s) cherry-picked{shas}{already}; {env}")
    return f"{step.component}: driver {step.min_branch} or newer"


# The step an activation of a folder found under the root stands for (no recipe names it).
_ACTIVATE = Step(kind=StepKind.ACTIVATE)


def _cherry_picks(step: Step) -> list[Commit]:
    """The commits a tag lacks: those whose first release is after it, or unknown."""
    try:
        tag = Version((step.version or "").removeprefix("v"))
    except InvalidVersion:
        return list(step.commits)
    return [c for c in step.commits if c.first_release is None or c.first_release > tag]


_NETWORK_KINDS = (StepKind.APT, StepKind.REDIST, StepKind.SOURCE_BUILD)


def _method(recipe: Recipe, options: PlanOptions) -> Method | None:
    """The method to use: allowed without root or offline when asked, the preferred kind first.

    Offline (a wheelhouse), only pip steps can be satisfied: apt, redist and source builds
    fetch from the network.
    """
    allowed = [m for m in recipe.methods if not (options.no_root and m.needs_root) and not (
        options.wheelhouse is not None and any(s.kind in _NETWORK_KINDS for s in m.steps))]
    preferred = [m for m in allowed
                 if options.prefer is not None and any(s.kind is options.prefer for s in m.steps)]
    candidates = preferred or allowed
    return candidates[0] if candidates else None


def _missing_wheels(method: Method, options: PlanOptions) -> list[str]:
    """The requirements of pip steps that no wheel in the wheelhouse satisfies."""
    if options.wheelhouse is None:
        return []
    have: dict[str, list[str]] = {}
    for name in options.wheels:
        try:
            dist, version, _, _ = parse_wheel_filename(name)
        except ValueError:
            continue
        have.setdefault(str(dist), []).append(str(version))
    missing = []
    for step in method.steps:
        if step.kind not in (StepKind.PIP, StepKind.TORCH_WHEEL):
            continue
        requirements = (step.requirements if step.kind is StepKind.TORCH_WHEEL
                        else _pinned_by_torch(step.requirements, options)[0])
        for text in requirements:
            requirement = Requirement(text)
            versions = have.get(str(canonicalize_name(requirement.name)), [])
            if not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
                missing.append(text)
    return missing


def _ordered(chosen: dict[str, tuple[Recipe, Method, Fix]]) -> list[str]:
    """Recipe ids, each after the chosen recipes providing what it needs (stable otherwise)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(rid: str) -> None:
        if rid in order or rid in visiting:
            return
        visiting.add(rid)
        recipe = chosen[rid][0]
        for other, (candidate, _, _) in chosen.items():
            if other != rid and any(fnmatch.fnmatchcase(need, pattern)
                                    for need in recipe.needs
                                    for pattern in candidate.provides.sonames):
                visit(other)
        order.append(rid)

    for rid in chosen:
        visit(rid)
    return order


_UNREACHABLE = ("is on no search path, and without root no object that needs it can be "
                "patched to look there")


def missing_requirements(options: PlanOptions) -> tuple[str, ...]:
    """Torch's Requires-Dist lines (PEP 508) for the target whose distribution is not installed.

    Markers are evaluated in the target's environment (`options.markers`), extras not asked for
    are left out; a requirement whose name is installed counts as met (versions are pip's
    business when it installs).
    """
    if options.installed is None:
        return ()
    missing = []
    for line in options.torch_requires:
        try:
            requirement = Requirement(line)
        except ValueError:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(
                {**options.markers, "extra": ""}):
            continue
        if canonicalize_name(requirement.name) not in options.installed:
            missing.append(str(requirement).split(";", 1)[0].strip())
    return tuple(missing)


def _requirements_plan(fixes: Sequence[Fix], options: PlanOptions) -> Plan | None:
    """The plan that installs what torch declares it needs and the site lacks, first.

    pip's metadata is the torch build's own answer (its nvidia-* pins among it), so it goes
    before any recipe; what is still missing after it is found by the re-diagnosis.
    """
    missing = missing_requirements(options)
    if not missing:
        return None
    action = Action(
        recipe="torch-requires", method="pip", kind=StepKind.PIP,
        argv=(_pip_argv(options, missing, None),),
        effect=f"install the {len(missing)} distribution(s) torch requires and the site "
        f"lacks: {', '.join(missing[:4])}{' and more' if len(missing) > 4 else ''}",
        needs_root=_system_site(options), fixes=("torch",), merge_into=_merge_into(options))
    action = dataclasses.replace(action, undo_effect=(
        "remove what it installed and put back, byte for byte, what it replaced "
        "(kept before it ran)"))
    return Plan(actions=(action,), unfixable=(),
                deferred=tuple(dict.fromkeys(f.wanted for f in fixes)))


def _torch_replacement(fixes: Sequence[Fix], options: PlanOptions) -> Plan | None:
    """The plan that replaces a torch that cannot run here, when a recipe can."""
    for fix in fixes:
        if fix.wanted != "torch":
            continue
        replacement: dict[str, tuple[Recipe, Method, Fix]] = {}
        rid, _ = _choose(fix, options, replacement)
        if rid is not None:
            recipe, method, _ = replacement[rid]
            actions = [_step_action(recipe, method, step, options, fix) for step in method.steps]
            others = tuple(dict.fromkeys(f.wanted for f in fixes if f.wanted != "torch"))
            return Plan(actions=tuple(actions), unfixable=(), deferred=others)
    return None


def _found_activation(fix: Fix, options: PlanOptions) -> Action | str:
    """The activation of the folder a missing soname sits in, or why there can be none."""
    folder = fix.activate or ""
    argv, effect, writes, root = _activation(
        folder, re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-"), options,
        getattr(fix.finding, "requested_by", ()))
    if not argv and not writes:
        return f"{folder} holds it but {_UNREACHABLE}"
    found = Action(recipe="activate", method="activate", kind=StepKind.ACTIVATE, argv=argv,
                   effect=effect, writes=writes, directory=folder, needs_root=root,
                   fixes=(fix.wanted,), touches=LDCONFIG_CACHES if writes else ())
    return _undo(found, _ACTIVATE, options)


def _recipe_actions(recipe: Recipe, method: Method, fix: Fix, options: PlanOptions,
                    fixes: tuple[str, ...]) -> tuple[list[Action], list[tuple[str, str]]]:
    """A chosen recipe's actions, and what its activations cannot reach."""
    actions, unfixable = [], []
    for step in method.steps:
        action = _step_action(recipe, method, step, options, fix)
        if action.kind is StepKind.ACTIVATE and action.directory is not None:
            if _searched(action.directory, fix, options):
                continue  # the loader already looks there (torch's DT_RPATH)
            if not action.argv and not action.writes:
                unfixable.append((fix.wanted, f"{action.directory} {_UNREACHABLE}"))
                continue
        actions.append(dataclasses.replace(action, fixes=fixes or action.fixes))
    return actions, unfixable


def make_plan(fixes: Sequence[Fix], options: PlanOptions) -> Plan:
    """The plan that applies the fixes (see the module docstring).

    When torch itself cannot run here and a recipe replaces it, the plan is that replacement
    alone: what the old torch needed no longer matters, and what the new one needs is found by
    the re-diagnosis that follows it.
    """
    replacement = _torch_replacement(fixes, options) or _requirements_plan(fixes, options)
    if replacement is not None:
        return replacement
    chosen: dict[str, tuple[Recipe, Method, Fix]] = {}
    wanted_by: dict[str, list[str]] = {}
    actions: list[Action] = []
    unfixable: list[tuple[str, str]] = []
    for fix in fixes:
        if fix.activate is not None:
            found = _found_activation(fix, options)
            if isinstance(found, str):
                unfixable.append((fix.wanted, found))
            else:
                actions.append(found)
            continue
        rid, reason = _choose(fix, options, chosen)
        if rid is None:
            unfixable.append((fix.wanted, reason))
        else:
            wanted_by.setdefault(rid, []).append(fix.wanted)
    for rid in _ordered(chosen):
        recipe, method, fix = chosen[rid]
        more, lost = _recipe_actions(recipe, method, fix, options, tuple(wanted_by.get(rid, ())))
        actions += more
        unfixable += lost
    return Plan(actions=tuple(_dedup(actions)), unfixable=tuple(unfixable))


# Commands that set up a package source: once is enough for the whole plan.
_SETUP = (("apt-get", "update"),)


def _dedup(actions: Sequence[Action]) -> list[Action]:
    """The actions without repeats.

    An action an earlier one already is goes; a package source is set up once; ld.so.cache is
    rebuilt once, after the last file.
    """
    seen: set[tuple[object, ...]] = set()
    ran: set[tuple[str, ...]] = set()
    out: list[Action] = []
    for action in actions:
        key = (action.kind, action.argv, action.writes, action.effect)
        if key in seen:
            continue
        seen.add(key)
        setup = [a for a in action.argv if a in _SETUP or a[:2] == ("dpkg", "-i")]
        argv = tuple(a for a in action.argv if a not in ran or a not in setup)
        ran.update(setup)
        out.append(dataclasses.replace(action, argv=argv) if argv != action.argv else action)
    conf_writers = [n for n, a in enumerate(out) if a.writes and a.argv]
    for n in conf_writers[:-1]:
        out[n] = dataclasses.replace(out[n], argv=(), effect=out[n].effect.replace(
            ", then rebuild ld.so.cache", " (ld.so.cache is rebuilt after the last one)"))
    return out


def _choose(fix: Fix, options: PlanOptions, chosen: dict[str, tuple[Recipe, Method, Fix]]
            ) -> tuple[str | None, str]:
    """Pick the recipe and method for `fix` into `chosen`: (its id, "") or (None, why not)."""
    reasons = []
    # --prefer reorders across recipes too: a recipe is usually one method (nccl-cu13-pip,
    # nccl-cu13-apt); the stable sort keeps `prefer` order within each group.
    offered = sorted(fix.recipes, key=lambda r: options.prefer is not None and not any(
        s.kind is options.prefer for m in r.methods for s in m.steps))
    for recipe in offered:
        if recipe.id in chosen:
            return recipe.id, ""
        if any(s.kind is StepKind.SOURCE_BUILD for m in recipe.methods for s in m.steps) and (
                not options.source_build):
            reasons.append(f"{recipe.id} builds torch from source (--source-build allows it)")
            continue
        method = _method(recipe, options)
        if method is not None and options.no_root and _system_site(options) and any(
                s.kind in (StepKind.PIP, StepKind.TORCH_WHEEL) for s in method.steps):
            reasons.append(f"{recipe.id}: {options.site} belongs to the system, and without "
                           "root pip cannot install there (a virtual environment can)")
            continue
        if method is None:
            why = ("needs the network (--offline)" if options.wheelhouse
                   else "needs root (--no-root)")
            reasons.append(f"{recipe.id} {why}")
            continue
        if any(s.kind is StepKind.DRIVER for s in method.steps):
            driver = next(s for s in method.steps if s.kind is StepKind.DRIVER)
            return None, (f"the NVIDIA driver is not installable by a recipe: "
                          f"{driver.component} (driver {driver.min_branch} or newer) provides "
                          f"it at {driver.where}")
        lacking = _missing_wheels(method, options)
        if lacking:
            reasons.append(f"{recipe.id}: the wheelhouse lacks {', '.join(lacking)}")
            continue
        chosen[recipe.id] = (recipe, method, fix)
        return recipe.id, ""
    if reasons:
        return None, "; ".join(reasons)
    if fix.excluded:
        recipe, why = fix.excluded[0]
        return None, f"no recipe fits this target ({recipe.id} {why})"
    present = f" (present: {', '.join(fix.family)})" if fix.family else ""
    return None, f"no recipe provides {fix.wanted}{present}"

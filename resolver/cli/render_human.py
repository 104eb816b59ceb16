"""Rendering for people: the report a user reads first, on stdout.

The default view is the answer: the target and the torch in two lines, the verdict, then one
line per finding, root causes first, each saying who needs what and where the file actually is.
`-v` adds, under each finding the loader searched for, each search list once by directory
(deduplicated across the objects that share it, `torch/lib/../../nvidia` shown as `nvidia`);
`-vv` every candidate path in the loader's order.

Lines are never wrapped: a terminal folds long lines itself, and a file gets whole paths. On a
terminal the lines are coloured through rich; otherwise they are written as plain text, which
also spares a piped run rich's import.
"""

from __future__ import annotations

import posixpath
import sys
from typing import TYPE_CHECKING

from resolver.cli.sentences import describe, name_list
from resolver.findings.model import LibraryFinding, Severity, UndefinedSymbols
from resolver.loader.search import Via
from resolver.loader.walk import Outcome

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resolver.diagnose import Diagnosis
    from resolver.findings.model import Finding
    from resolver.loader.walk import Candidate
    from resolver.plan import Plan
    from resolver.recipes.match import Fix
    from resolver.recipes.schema import Recipe, Step
    from resolver.target.rootfs import RootFS

__all__ = [
    "Line",
    "diagnosis_lines",
    "emit",
    "plan_lines",
    "recipe_lines",
    "recipe_list_lines",
    "render_check",
    "render_diagnosis",
]

# A line is a sequence of (text, rich style or "") segments.
Line = tuple[tuple[str, str], ...]

_MARKS = {
    Severity.BLOCKS_IMPORT: ("✗", "bold red"),
    Severity.CUDA_UNUSABLE: ("✗", "bold magenta"),
    Severity.BREAKS_FEATURE: ("!", "bold yellow"),
    Severity.INFO: ("·", "blue"),
}



def _line(*segments: tuple[str, str] | str) -> Line:
    return tuple(s if isinstance(s, tuple) else (s, "") for s in segments)


def emit(lines: Sequence[Line]) -> None:
    """Write lines to stdout: styled through rich on a terminal, plain text otherwise.

    Every segment is shown with `printable`: names from files never break a line or reach
    the terminal as control characters.
    """
    from resolver.cli.text import printable  # noqa: PLC0415

    if not sys.stdout.isatty():
        sys.stdout.write("".join("".join(printable(text) for text, _ in line) + "\n"
                                 for line in lines))
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console(highlight=False, soft_wrap=True)
    for line in lines:
        console.print(Text.assemble(*((printable(text), style) for text, style in line)))


def _target_lines(result: Diagnosis, rootfs: RootFS, labels: tuple[str | None, str | None]
                  ) -> list[Line]:
    p = result.platform
    os_name = " ".join(x for x in (p.os_id, p.os_version) if x) or "unknown OS"
    parts = [p.arch, os_name]
    if p.l4t is not None:
        jetpack = f"JetPack {p.jetpack_label or '?'} " if p.jetpack_label else ""
        parts.append(f"{jetpack}(L4T {p.l4t})")
    flavour = f" {p.cuda_flavour}" if p.cuda_flavour else ""
    parts.append(f"CUDA {p.cuda}{flavour}" if p.cuda else "no CUDA toolkit")
    if p.cudnn:
        parts.append(f"cuDNN {p.cudnn}")
    parts.append(f"GPU sm_{p.gpu_arch}" if p.gpu_arch else "GPU unknown")
    if p.driver:
        parts.append(f"driver {p.driver}")
    parts += [f"glibc {p.glibc or '?'}", f"Python {p.python or '?'}"]
    target = f"fixture {labels[0]}" if labels[0] else rootfs.root
    lines = [_line(("target  ", "bold"), f"{target}: {', '.join(parts)}")]
    torch = result.torch
    if torch is not None:
        where = rootfs.host_label(torch.site)
        if labels[1]:
            where = f"{torch.site} (fixture {labels[1]})"
        cuda = f"CUDA {torch.cuda}" if torch.cuda else "CPU build"
        lines.append(_line(("torch   ", "bold"), f"{torch.version or '?'} ({cuda}) in {where}"))
    entries = len(result.sys_path)
    path_text = f"{entries} site {'folder' if entries == 1 else 'folders'} on sys.path"
    if result.interpreter is not None:
        lines.append(_line(("python  ", "bold"), f"{result.interpreter} ({path_text})"))
    else:
        lines.append(_line(("python  ", "bold"),
                           f"no interpreter found, its C API taken as defined ({path_text})"))
    return lines


def _count(number: int, one: str, many: str) -> str:
    """`1 problem blocks`, `4 problems block`."""
    return f"{number} problem {one}" if number == 1 else f"{number} problems {many}"


def _verdict(result: Diagnosis) -> Line:
    blocking = [f for f in result.findings if f.severity is Severity.BLOCKS_IMPORT]
    no_cuda = [f for f in result.findings if f.severity is Severity.CUDA_UNUSABLE]
    later = [f for f in result.findings if f.severity is Severity.BREAKS_FEATURE]
    tail = f"; {_count(len(later), 'breaks', 'break')} a feature later" if later else ""
    if no_cuda:
        tail = f"; {_count(len(no_cuda), 'makes', 'make')} CUDA unusable{tail}"
    if blocking:
        return _line(("✗ import torch will fail", "bold red"),
                     f": {_count(len(blocking), 'blocks', 'block')} it{tail}")
    if no_cuda:
        return _line(("✗ import torch will load, but CUDA is unusable", "bold magenta"),
                     tail.replace(";", ":", 1))
    if later:
        return _line(("! import torch will load", "bold yellow"), tail.replace(";", ",", 1))
    return _line(("✓ import torch will load", "bold green"), ", and nothing breaks later")


def _finding_line(finding: Finding) -> Line:
    mark, style = _MARKS[finding.severity]
    phases = ", ".join(finding.phases) or finding.severity.value
    return _line((f"{mark} ", style), (f"[{phases}] ", "dim"), describe(finding))


def _shown_dir(directory: str, site: str | None) -> str:
    """A search directory as people read it: normalised, relative to the torch's site."""
    normal = posixpath.normpath(directory)
    if site and normal.startswith(site.rstrip("/") + "/"):
        return normal[len(site.rstrip("/")) + 1:]
    return normal


def _search_lists(trail: Sequence[Candidate], site: str | None) -> list[Line]:
    """`-v`: each search list once, by directory, owners merged, unusual outcomes named."""
    groups: dict[Via, tuple[list[str], dict[str, list[str]]]] = {}
    for step in trail:
        owners, dirs = groups.setdefault(step.via, ([], {}))
        if step.owner and posixpath.basename(step.owner) not in owners:
            owners.append(posixpath.basename(step.owner))
        if step.via is Via.LD_SO_CACHE:
            key = step.path if step.outcome is Outcome.FOUND else "no entry"
        else:
            key = _shown_dir(posixpath.dirname(step.path), site)
        notes = dirs.setdefault(key, [])
        if step.outcome not in (Outcome.ABSENT, Outcome.FOUND) or step.via is Via.PATH:
            notes.append(f"{posixpath.basename(step.path)}: {step.detail or step.outcome.value}")
    lines = []
    for via, (owners, dirs) in groups.items():
        who = f" of {', '.join(owners)}" if owners else ""
        if via is Via.LD_SO_CACHE:
            lines.append(_line("    ", (f"{via.value}: ", "bold"), ", ".join(dirs)))
            continue
        lines.append(_line("    ", (f"{via.value}{who}", "bold")))
        lines += [_line(f"      {d}", (f"  ({'; '.join(n)})" if n else "", "yellow"))
                  for d, n in dirs.items()]
    return lines


def _places(trail: Sequence[Candidate], site: str | None) -> tuple[tuple[str, str], ...]:
    """The directories a trail went through, without file names or owners."""
    return tuple(dict.fromkeys(
        (c.via.value, _shown_dir(posixpath.dirname(c.path), site))
        for c in trail if c.via is not Via.LD_SO_CACHE))


def _candidates(trail: Sequence[Candidate]) -> list[Line]:
    """`-vv`: every candidate path, in the loader's order, grouped by search list."""
    lines: list[Line] = []
    key: tuple[object, ...] | None = None
    for step in trail:
        if (step.via, step.owner) != key:
            key = (step.via, step.owner)
            owner = f" of {posixpath.basename(step.owner)}" if step.owner else ""
            lines.append(_line("    ", (f"{step.via.value}{owner}", "bold")))
        detail = f" ({step.detail})" if step.detail else ""
        lines.append(_line(f"      {step.path}  ", (f"{step.outcome.value}{detail}", "dim")))
    return lines


def _fix_line(fix: Fix) -> Line:
    """Under a finding: the fix `plan` would pick, or why there is none."""
    if fix.activate is not None:
        return _line(("    fix: ", "green"), f"make {fix.activate} findable by the loader "
                     "(the file is there)")
    chosen = fix.chosen
    if chosen is not None:
        return _line(("    fix: ", "green"), (chosen.id, "bold"), f"  {chosen.summary}")
    if fix.excluded:
        recipe, why = fix.excluded[0]
        more = f" (and {len(fix.excluded) - 1} more)" if len(fix.excluded) > 1 else ""
        return _line(("    no recipe fits this target: ", "yellow"), f"{recipe.id} {why}{more}")
    present = f" (present: {', '.join(fix.family)})" if fix.family else ""
    return _line(("    no recipe provides ", "yellow"), f"{fix.wanted}{present}")


def _symbol_lines(finding: UndefinedSymbols, verbosity: int) -> list[Line]:
    """The undefined symbols, one a line: 20 with -v, all with -vv."""
    limit = 20 if verbosity == 1 else len(finding.symbols)
    lines = [_line(("    ", "dim"), (symbol, "dim")) for symbol in finding.symbols[:limit]]
    if len(finding.symbols) > limit:
        lines.append(_line((f"    and {len(finding.symbols) - limit} more (-vv)", "dim")))
    return lines


def diagnosis_lines(  # noqa: PLR0913 - the result, then keyword-only display options
    result: Diagnosis, rootfs: RootFS, exit_code: int, *, verbosity: int,
    labels: tuple[str | None, str | None] = (None, None), fixes: Sequence[Fix] = (),
) -> list[Line]:
    """The report as lines: target, torch, verdict, findings with their fixes, a closing hint."""
    fix_of = {id(fix.finding): fix for fix in fixes}
    lines = _target_lines(result, rootfs, labels)
    lines += [(), _verdict(result)]
    if result.findings:
        lines.append(())
    site = result.torch.site if result.torch else None
    if verbosity == 1 and site and any(isinstance(f, LibraryFinding) for f in result.findings):
        lines.append(_line((f"(folders in {site} are shown relative to it)", "dim")))
    shown: dict[tuple[tuple[str, str], ...], str] = {}
    for finding in result.findings:
        lines.append(_finding_line(finding))
        if id(finding) in fix_of:
            lines.append(_fix_line(fix_of[id(finding)]))
        if verbosity and isinstance(finding, UndefinedSymbols):
            lines += _symbol_lines(finding, verbosity)
        if verbosity == 0 or not isinstance(finding, LibraryFinding):
            continue
        # Sonames searched in the same directories differ only in the file name: say it once.
        signature = _places(finding.searched, site)
        if verbosity == 1 and signature in shown:
            lines.append(_line(("    searched the same directories as ", "dim"),
                               shown[signature]))
            continue
        shown.setdefault(signature, finding.soname)
        lines += (_search_lists(finding.searched, site) if verbosity == 1
                  else _candidates(finding.searched))
    lines += _note_lines(result)
    lines.append(())
    hints = []
    if verbosity == 0 and any(isinstance(f, LibraryFinding) for f in result.findings):
        hints.append("-v shows where the loader looked, -vv every path it tried")
    hints.append("--json gives all of it as data")
    loaded = len(result.objects) - len(result.unloaded)
    lines.append(_line((f"{loaded} objects loaded (exit {exit_code}); {'; '.join(hints)}.",
                        "dim")))
    return lines


def _note_lines(result: Diagnosis) -> list[Line]:
    """What was not judged (symbols of fixtures) and what could not be read, dimmed."""
    lines: list[Line] = []
    unjudged = dict.fromkeys(why for _, why in result.symbols_unjudged)
    if unjudged:
        lines += [(), _line((f"symbols not checked: {next(iter(unjudged))}", "dim"))]
    if result.unreadable:
        path, why = result.unreadable[0]
        more = f" and {len(result.unreadable) - 1} more" if len(result.unreadable) > 1 else ""
        lines += [(), _line((f"passed over, as the loader does: {path} ({why}){more}", "dim"))]
    return lines


def render_diagnosis(  # noqa: PLR0913 - three inputs, then keyword-only display options
    result: Diagnosis, rootfs: RootFS, exit_code: int, *, verbosity: int,
    fixture: str | None = None, torch_fixture: str | None = None, fixes: Sequence[Fix] = (),
) -> None:
    """Print a diagnosis (see the module's docstring for the views)."""
    emit(diagnosis_lines(result, rootfs, exit_code, verbosity=verbosity,
                         labels=(fixture, torch_fixture), fixes=fixes))


def render_check(results: list[tuple[str, Diagnosis, float]], input_name: str,
                 require: str | None = None) -> None:
    """One line per fixture: whether it passes what is required, and what stops it."""
    from resolver.cli.commands.check import required_of  # noqa: PLC0415

    lines: list[Line] = [_line(("jetson-resolve check: ", "bold"), input_name), ()]
    width = max((len(name) for name, _, _ in results), default=0)
    for name, result, _ in results:
        blocking = [f.subject for f in result.findings if f.severity is Severity.BLOCKS_IMPORT]
        no_cuda = [f.subject for f in result.findings if f.severity is Severity.CUDA_UNUSABLE]
        later = [f.subject for f in result.findings if f.severity is Severity.BREAKS_FEATURE]
        required = required_of(result, require)
        if blocking:
            verdict = ("✗ fails", "bold red")
        elif no_cuda:
            verdict = (("✗ no CUDA", "bold red") if required == "cuda"
                       else ("✓ loads (no CUDA)", "bold green"))
        else:
            verdict = ("✓ loads", "bold green")
        lines.append(_line(f"{name:<{width}}  ", verdict, (f"  [requires {required}]", "dim"),
                           f"  blocked by: {name_list(blocking, 6)}" if blocking else "",
                           f"  CUDA unusable: {name_list(no_cuda, 6)}" if no_cuda else "",
                           f"  breaks later: {name_list(later, 6)}" if later else ""))
    emit(lines)


def _where(recipe: Recipe) -> str:
    """The recipe's `applies`, as `arch aarch64; flavour sbsa; cuda >=13,<14`."""
    applies = recipe.applies
    parts = [f"{name} {', '.join(sorted(value))}" for name, value in (
        ("arch", applies.arch), ("flavour", applies.flavour), ("distro", applies.distro))
        if value]
    parts += [f"{name} {value}" for name, value in (
        ("cuda", applies.cuda), ("l4t", applies.l4t), ("jetpack", applies.jetpack),
        ("distro version", applies.distro_version), ("python", applies.python),
        ("glibc", applies.glibc)) if value is not None]
    return "; ".join(parts) or "anywhere"


def recipe_list_lines(recipes: Sequence[Recipe]) -> list[Line]:
    """One line per recipe: id, methods, what it provides, where it applies."""
    width = max((len(r.id) for r in recipes), default=0)
    lines = [_line((f"{r.id:<{width}}  ", "bold"),
                   (f"[{', '.join(m.id for m in r.methods)}] ", "dim"),
                   f"{', '.join(r.provides.sonames)}  ", (f"({_where(r)})", "dim"))
             for r in recipes]
    lines.append(_line((f"{len(recipes)} recipe{'' if len(recipes) == 1 else 's'}", "dim")))
    return lines


def _step_text(step: Step) -> str:  # noqa: PLR0911 - one sentence per kind of step
    """A step as one line, in the words of its kind."""
    index = f" --index-url {step.index_url}" if step.index_url else ""
    match step.kind.value:
        case "pip":
            return f"pip install {' '.join(step.requirements)}{index}"
        case "torch-wheel":
            return f"replace torch: pip install {' '.join(step.requirements)}{index}"
        case "apt":
            source = f" (from {step.repository})" if step.repository else ""
            return f"apt-get install {' '.join(step.packages)}{source}"
        case "redist":
            variant = f", {step.cuda_variant}" if step.cuda_variant else ""
            return (f"unpack {step.component} {step.version} ({step.platform}{variant}) from "
                    f"{step.manifest_url} into {step.prefix}; sha256 {step.sha256}, "
                    f"{step.size} bytes")
        case "activate":
            return f"make {step.directory} findable by the loader"
        case "source-build":
            env = " ".join(f"{k}={v}" for k, v in step.env)
            return (f"build {step.repository} at {step.version} with {len(step.commits)} "
                    f"upstream commit(s); {env}")
        case _:
            return (f"not installable here: {step.component} (driver {step.min_branch} or "
                    f"newer) provides it at {step.where}")


def recipe_lines(recipe: Recipe) -> list[Line]:
    """Everything a recipe says, one fact a line."""
    lines = [_line((recipe.id, "bold"), f"  {recipe.summary}"),
             _line(("provides  ", "bold"), ", ".join(recipe.provides.sonames)
                   + (f" ({recipe.provides.version})" if recipe.provides.version else ""))]
    if recipe.provides.opens:
        lines.append(_line(("opens     ", "bold"), ", ".join(recipe.provides.opens)))
    lines.append(_line(("applies   ", "bold"), _where(recipe)))
    for number, method in enumerate(recipe.methods, 1):
        root = " (needs root)" if method.needs_root else ""
        lines.append(_line((f"method {number}  ", "bold"), f"{method.id}{root}"))
        lines += [_line(f"  {index}. {_step_text(step)}")
                  for index, step in enumerate(method.steps, 1)]
    lines.append(_line(("check     ", "bold"), ", ".join(recipe.check.sonames) or "-"))
    if recipe.check.python:
        lines.append(_line("          ", ("python -c " + repr(recipe.check.python), "dim")))
    if recipe.prefer:
        lines.append(_line(("prefer    ", "bold"), str(recipe.prefer)))
    lines += [_line(("source    ", "bold"), source) for source in recipe.sources]
    return lines


def plan_lines(plan: Plan) -> list[Line]:
    """Each action numbered, with what it does and its exact commands; then what is left."""
    import shlex  # noqa: PLC0415

    lines: list[Line] = []
    for number, action in enumerate(plan.actions, 1):
        root = "  (root)" if action.needs_root else ""
        lines.append(_line((f"{number}. ", "bold"), (action.recipe, "bold"),
                           (f" [{action.kind.value}] ", "dim"), action.effect,
                           (f"  for {', '.join(action.fixes)}{root}", "dim")))
        lines += [_line(f"     > {path}: ", (action.directory or "", "cyan"))
                  for path in action.writes]
        lines += [_line("     $ ", (shlex.join(argv), "cyan")) for argv in action.argv]
        lines.append(_line(("     undo: ", "dim"), (action.undo_effect, "dim")))
    if not plan.actions:
        lines.append(_line(("nothing to do", "bold")))
    if plan.deferred:
        lines.append(_line(("then: ", "bold"), "re-diagnose after it; left for then: "
                           f"{name_list(plan.deferred, 4)}"))
    for wanted, why in plan.unfixable:
        lines.append(_line(("✗ not fixed: ", "bold red"), f"{wanted}: {why}"))
    return lines

"""Rendering for people: rich tables and trees on stdout. The only module that imports rich."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from resolver.findings import Severity

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.findings import Finding
    from resolver.rootfs import RootFS

__all__ = ["console", "render_diagnosis"]

_TITLES = {
    Severity.BLOCKS_IMPORT: ("[bold red]Blocks `import torch`[/]", "red"),
    Severity.BREAKS_FEATURE: ("[bold yellow]Breaks a feature later[/]", "yellow"),
    Severity.INFO: ("[bold]Notes[/]", "blue"),
}
_MARKS = {Severity.BLOCKS_IMPORT: "✗", Severity.BREAKS_FEATURE: "✗", Severity.INFO: "•"}


def console() -> Console:
    """The stdout console (soft-wrapped, no markup surprises)."""
    return Console(highlight=False, soft_wrap=False)


def _target_table(result: Diagnosis, rootfs: RootFS, labels: tuple[str | None, str | None]
                  ) -> Table:
    platform = result.platform
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    os_name = " ".join(p for p in (platform.os_id, platform.os_version) if p) or "unknown"
    jetson = (f"L4T {platform.l4t} (JetPack {platform.jetpack or '?'})"
              if platform.l4t else "not a Jetson")
    target = f"fixture {labels[0]}" if labels[0] else rootfs.root
    table.add_row("target", escape(f"{target}  {platform.arch}, "
                                   f"glibc {platform.glibc or '?'}, {os_name}, {jetson}"))
    flavour = f" ({platform.cuda_flavour})" if platform.cuda_flavour else ""
    cuda = f"CUDA {platform.cuda}{flavour}"
    gpu = f"sm_{platform.gpu_arch}" if platform.gpu_arch else "unknown"
    table.add_row("", escape(f"{cuda if platform.cuda else 'no CUDA toolkit'}, "
                             f"cuDNN {platform.cudnn or '-'}, Python {platform.python or '?'}, "
                             f"GPU {gpu}"))
    table.add_row("loader", escape(f"{result.loader.cache_source}; default dirs "
                                   f"{':'.join(platform.system_dirs)}"))
    torch = result.torch
    if torch is not None:
        where = (f"fixture {labels[1]} at {torch.site}" if labels[1]
                 else rootfs.host_label(torch.site))
        table.add_row("torch", escape(f"{torch.version or '?'} (CUDA {torch.cuda or 'none'}) "
                                      f"in {where}"))
    return table


def _finding_tree(finding: Finding, colour: str, verbose: bool) -> Tree:
    tree = Tree(f"[{colour}]{_MARKS[finding.severity]}[/] [bold]{escape(finding.subject)}[/]  "
                f"{escape(finding.message.removeprefix(finding.subject + ': '))}")
    if finding.requested_by:
        shown = ", ".join(posixpath.basename(r) for r in finding.requested_by[:4])
        more = len(finding.requested_by) - 4
        tree.add(escape(f"needed by {shown}" + (f" and {more} more" if more > 0 else "")))
    phases = [p for p in finding.phases if p != "import"]
    if phases:
        tree.add(escape(f"used by: {'; '.join(phases)}"))
    if finding.searched:
        trail = tree.add("paths considered in this order:")
        steps = finding.searched if verbose else finding.searched[:24]
        # One branch per search list (a DT_RPATH of one object, LD_LIBRARY_PATH, the defaults),
        # its paths under it, so each path gets a line of its own.
        group: Tree | None = None
        key: tuple[object, ...] = ()
        for step in steps:
            if group is None or (step.via, step.owner) != key:
                key = (step.via, step.owner)
                owner = f" of {posixpath.basename(step.owner)}" if step.owner else ""
                group = trail.add(escape(f"{step.via.value}{owner}"))
            detail = f" ({step.detail})" if step.detail else ""
            group.add(escape(f"{step.path}  {step.outcome.value}{detail}"))
        if len(steps) < len(finding.searched):
            trail.add(f"… {len(finding.searched) - len(steps)} more (--verbose)")
    for place in finding.found_elsewhere[1:3]:
        tree.add(escape(f"also at {place}"))
    return tree


def render_diagnosis(  # noqa: PLR0913 - three inputs, then keyword-only display options
    result: Diagnosis, rootfs: RootFS, exit_code: int, *, verbose: bool,
    fixture: str | None = None, torch_fixture: str | None = None,
) -> None:
    """Print a diagnosis: the target, then findings grouped by severity, then a verdict."""
    out = console()
    out.print(_target_table(result, rootfs, (fixture, torch_fixture)))
    live = sum(1 for o in result.objects)
    out.print()
    for severity, (title, colour) in _TITLES.items():
        group = [f for f in result.findings if f.severity is severity]
        if not group:
            continue
        out.print(title)
        for finding in group:
            out.print(_finding_tree(finding, colour, verbose))
        out.print()
    blocking = sum(1 for f in result.findings if f.severity is Severity.BLOCKS_IMPORT)
    later = sum(1 for f in result.findings if f.severity is Severity.BREAKS_FEATURE)
    verdict = ("[bold red]import torch will fail[/]" if blocking
               else "[bold green]import torch will load[/]")
    out.print(f"{verdict}: {blocking} blocking, {later} feature-level finding(s); "
              f"{live} objects walked (exit {exit_code})")


def render_check(results: list[tuple[str, Diagnosis, float]], input_name: str) -> None:
    """A table: one row per fixture, whether `import torch` loads, and what blocks it."""
    table = Table(title=escape(f"jetson-resolve check: {input_name}"), title_justify="left")
    table.add_column("fixture", style="bold")
    table.add_column("import torch")
    table.add_column("blocking")
    table.add_column("breaks a feature")
    for name, result, _ in results:
        blocking = [f.subject for f in result.findings if f.severity is Severity.BLOCKS_IMPORT]
        later = [f.subject for f in result.findings if f.severity is Severity.BREAKS_FEATURE]
        table.add_row(escape(name), "[red]fails[/]" if blocking else "[green]loads[/]",
                      escape(", ".join(blocking) or "-"), escape(", ".join(later) or "-"))
    console().print(table)

"""The options every command that reads a torch on a target shares, declared once.

`diagnose` and `plan` (and later `apply`) take the same inputs: which torch, on which target,
with which loader path and GPU, fixed from which recipes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "Debug",
    "Fixture",
    "GpuArch",
    "Json",
    "LdLibraryPath",
    "LdPreload",
    "NoCache",
    "NoRoot",
    "Offline",
    "Prefer",
    "Preloaded",
    "Python",
    "Recipes",
    "Root",
    "SitePackages",
    "SourceBuild",
    "SysPath",
    "TorchFixture",
    "Wheel",
    "Wheelhouse",
]

Python = Annotated[str | None, typer.Option(
    "--python", help="The torch of this interpreter (default: the current one); for --root, "
    "a path in the root: read as the process's main program, run (under qemu-user for "
    "another architecture) to ask where torch is when it can be.")]
SitePackages = Annotated[Path | None, typer.Option(
    "--site-packages", help="The torch installed in this directory.")]
Wheel = Annotated[Path | None, typer.Option(
    "--wheel", help="A torch wheel, read from the zip without extracting it.")]
Root = Annotated[Path | None, typer.Option(
    "--root", help="The target's root filesystem (default: this machine's /).")]
Fixture = Annotated[str | None, typer.Option(
    "--fixture", help="A recorded target instead of --root: a bundled name (thor-jp7.0, "
    "orin-jp6.2) or a fixture directory.")]
TorchFixture = Annotated[str | None, typer.Option(
    "--torch-fixture", help="A recorded torch install (a bundled name such as "
    "torch-2.11.0-aarch64, or a fixture directory).")]
LdLibraryPath = Annotated[str | None, typer.Option(
    "--ld-library-path", help="The target's LD_LIBRARY_PATH (default: this shell's for /, empty "
    "for another root).")]
SysPath = Annotated[str | None, typer.Option(
    "--sys-path", help="The target interpreter's sys.path, colon-separated, as the target "
    "names it (default: asked of --python, else what site.py computes for torch's prefix).")]
LdPreload = Annotated[str | None, typer.Option(
    "--ld-preload", help="The target's LD_PRELOAD (default: this shell's for /, empty for "
    "another root).")]
Preloaded = Annotated[str | None, typer.Option(
    "--preloaded", help="Libraries the process loaded before import torch, colon-separated "
    "(default: what the live --python has mapped at start).")]
GpuArch = Annotated[str | None, typer.Option(
    "--gpu-arch", help="The target GPU (sm_110, 87, ...); default: from the L4T release.")]
NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Neither read nor keep ELF facts or whole results (fixtures are still "
    "materialised under the cache folder).")]
Recipes = Annotated[Path | None, typer.Option(
    "--recipes", help="The recipe folder fixes come from (default: the shipped one).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Prefer = Annotated[str | None, typer.Option(
    "--prefer", help="Use pip, apt or redist first where a recipe offers it.")]
Offline = Annotated[bool, typer.Option("--offline", help="pip resolves against --wheelhouse only.")]
Wheelhouse = Annotated[Path | None, typer.Option(
    "--wheelhouse", help="With --offline: the folder of wheels pip may use.")]
NoRoot = Annotated[bool, typer.Option(
    "--no-root", help="Only steps an unprivileged user can take in the environment.")]
SourceBuild = Annotated[bool, typer.Option(
    "--source-build", help="Allow building torch from source.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]

"""The pipeline's shape, checked: only the CLI prints or imports rich and typer (STYLE.md 7),
and only the apply stage's executors run commands."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "resolver"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(*, outside: str) -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if outside not in p.relative_to(PACKAGE).parts]


def test_only_the_cli_imports_rich_and_typer() -> None:
    offenders = {str(p.relative_to(PACKAGE)): sorted(_imports(p) & {"rich", "typer"})
                 for p in _modules(outside="cli") if _imports(p) & {"rich", "typer"}}
    assert offenders == {}


def test_only_the_cli_and_the_executors_run_commands() -> None:
    # The CLI asks a live interpreter where its torch is; executors change the target (and ask
    # pip what it would change); verification runs the target's interpreter, changing nothing.
    allowed = {"cli/commands/diagnose.py", "cli/commands/record.py", "cli/commands/apply.py",
               "apply/executor.py", "apply/verify.py"}
    runners = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if "subprocess" in _imports(p)}
    assert runners <= allowed, runners - allowed

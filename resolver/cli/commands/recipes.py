"""`jetson-resolve recipes list|show ID|lint`: the recipe database, read and checked.

`lint` reads every file and reports every problem (file and dotted field, one per line) before
exiting 1; `list` and `show` refuse a database with a broken recipe (exit 2), as every command
that uses recipes does.
"""

from __future__ import annotations

import sys
from pathlib import Path  # noqa: TC003 - typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli.errors import ExitCode, fail
from resolver.cli.text import write_lines

if TYPE_CHECKING:
    from resolver.recipes.schema import Recipe

__all__ = ["register"]

_FOLDER_HELP = "The recipe folder (default: the recipes shipped with jetson-resolve)."


def _folder(given: Path | None) -> Path:
    from resolver.shipped_data import recipes_root  # noqa: PLC0415

    folder = given or recipes_root()
    if not folder.is_dir():
        raise fail(f"--recipes {folder}: not a directory")
    return folder


def _loaded(given: Path | None) -> tuple[Recipe, ...]:
    """The recipes of --recipes (or the shipped ones), every one valid, or exit 2."""
    from resolver.recipes.database import load_database  # noqa: PLC0415

    return load_database(_folder(given))


def register(app: typer.Typer) -> None:
    """Add the `recipes` command group to the app."""
    group = typer.Typer(help="The recipe database: list, show, lint.", no_args_is_help=True)
    app.add_typer(group, name="recipes")

    @group.command("list")
    def list_command(
        recipes: Annotated[Path | None, typer.Option("--recipes", help=_FOLDER_HELP)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """One line per recipe: its id, what it provides, how."""
        loaded = _loaded(recipes)
        if as_json:
            from resolver.cli.render_json import dump, recipe_json  # noqa: PLC0415

            sys.stdout.write(dump({"schema": 2, "command": "recipes list",
                                   "recipes": [recipe_json(r) for r in loaded]}))
            return
        from resolver.cli.render_human import emit, recipe_list_lines  # noqa: PLC0415

        emit(recipe_list_lines(loaded))

    @group.command("show")
    def show_command(
        recipe_id: Annotated[str, typer.Argument(metavar="ID", help="The recipe's id.")],
        recipes: Annotated[Path | None, typer.Option("--recipes", help=_FOLDER_HELP)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """Everything one recipe says."""
        loaded = {r.id: r for r in _loaded(recipes)}
        recipe = loaded.get(recipe_id)
        if recipe is None:
            raise fail(f"{recipe_id}: no such recipe ({len(loaded)} recipes; "
                       "`jetson-resolve recipes list` names them)")
        if as_json:
            from resolver.cli.render_json import dump, recipe_json  # noqa: PLC0415

            sys.stdout.write(dump({"schema": 2, "command": "recipes show",
                                   "recipe": recipe_json(recipe)}))
            return
        from resolver.cli.render_human import emit, recipe_lines  # noqa: PLC0415

        emit(recipe_lines(recipe))

    @group.command("lint")
    def lint_command(
        recipes: Annotated[Path | None, typer.Option("--recipes", help=_FOLDER_HELP)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Check every recipe; print every problem with its file and field; exit 1 on any."""
        from resolver.recipes.database import lint_database  # noqa: PLC0415

        folder = _folder(recipes)
        loaded, problems = lint_database(folder)
        code = ExitCode.FINDINGS if problems else ExitCode.OK
        if as_json:
            from resolver.cli.render_json import dump  # noqa: PLC0415

            sys.stdout.write(dump({
                "schema": 2, "command": "recipes lint", "folder": str(folder),
                "exit_code": int(code), "recipes": len(loaded),
                "problems": [{"file": p.file, "field": p.field, "message": p.message}
                             for p in problems]}))
        else:
            write_lines([*map(str, problems), (f"{len(loaded)} valid recipe(s), "
                         f"{len(problems)} problem(s) in {folder}")])
        raise typer.Exit(int(code))

"""Where the data shipped with the package lives: the bundled fixtures and the recipes.

Both are top-level folders of the repository (`fixtures/`, `recipes/`). A wheel carries them as
`resolver/_shipped/<folder>/` (pyproject's package-dir); an editable install or a plain checkout
reads them where they are, beside the `resolver/` folder. The installed place is tried first, so
an installed package never picks up an unrelated `site-packages/fixtures`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["fixtures_root", "recipes_root"]

_PACKAGE = Path(__file__).resolve().parent


def _shipped(folder: str) -> Path:
    installed = _PACKAGE / "_shipped" / folder
    return installed if installed.is_dir() else _PACKAGE.parent / folder


def fixtures_root() -> Path:
    """The folder of bundled fixtures: one `<name>/` with `manifest.toml` and `files.json` each."""
    return _shipped("fixtures")


def recipes_root() -> Path:
    """The folder of recipes: one `<id>.toml` each."""
    return _shipped("recipes")

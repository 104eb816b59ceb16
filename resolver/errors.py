"""The exception tree: one root, a leaf per stage.

Exceptions mean "could not answer" (an unreadable file, a bad recipe, a failed step). A library
that cannot be found is not an exception but a finding (`resolver.findings`).
"""

from __future__ import annotations

__all__ = [
    "ApplyError",
    "InvalidElf",
    "InvalidFixture",
    "InvalidLdCache",
    "InvalidRecipe",
    "InvalidWheel",
    "RecipeError",
    "ResolveError",
    "RollbackIncomplete",
    "RootFsError",
    "UnusableFile",
]


class ResolveError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidElf(ResolveError, ValueError):
    """A file is not an ELF object we can read (truncated, corrupted, or another format)."""


class InvalidLdCache(ResolveError, ValueError):
    """An `ld.so.cache` is of an unknown format or cut short."""


class InvalidWheel(ResolveError, ValueError):
    """A wheel is not a zip, or a member escapes its folder."""


class InvalidFixture(ResolveError, ValueError):
    """A recorded fixture is malformed; the message names the file and the field."""


class UnusableFile(ResolveError):
    """A file the tool reads or writes is not a regular file, is too big, or is not text."""


class RootFsError(ResolveError):
    """The target root filesystem cannot be read as asked."""


class RecipeError(ResolveError):
    """A recipe file is malformed; carries the file and a dotted field path."""

    def __init__(self, message: str, *, file: str = "", field: str = "") -> None:
        self.message = message
        self.file = file
        self.field = field
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InvalidRecipe(RecipeError):
    """A recipe file with one or more problems; `problems` holds each, with file and field."""

    def __init__(self, problems: tuple[RecipeError, ...]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = problems[0] if problems else RecipeError("invalid recipe")
        ResolveError.__init__(self, f"{first}{more}")
        self.message, self.file, self.field = first.message, first.file, first.field


class ApplyError(ResolveError):
    """A fix step failed."""


class RollbackIncomplete(ApplyError):
    """Rolling back after a failed step did not complete; the journal says what is left."""

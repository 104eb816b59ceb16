"""Exit codes of every command (DESIGN.md), and the one place exceptions become codes."""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    FINDINGS = 1  # findings at error level (something blocks import)
    BAD_INPUT = 2  # bad usage or unreadable input
    ROLLED_BACK = 3  # apply failed and was rolled back
    ROLLBACK_INCOMPLETE = 4  # apply failed and rollback did not complete

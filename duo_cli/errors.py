"""duo's user errors: one base class, one formatter. Imports nothing of duo's.

Every error a user can cause (a bad value, a bad file, a bad request) is a
:class:`DuoError`; the CLI catches that one class and prints :func:`one_line` of
it with exit code 2, so no command shows a traceback for bad input.
"""

from __future__ import annotations


class DuoError(ValueError):
    """Bad user input: the message names the bad value and what is valid."""


class ConfigError(DuoError):
    """A bad setting (a composed config, an override, a checkpoint's stored setting)."""


class CheckpointError(DuoError):
    """A checkpoint that is missing, malformed, unsafe or does not fit the run."""


class UnknownTargetError(ConfigError):
    """A ``_target_`` outside the closed set, of the wrong kind, or with undeclared arguments."""


def one_line(error: BaseException | str, max_lines: int = 3) -> str:
    """The message of ``error`` on one line.

    The first ``max_lines`` non-empty lines are joined with ``"; "`` (torch's messages
    span many lines).  An empty message gives the error type's name.
    """
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return "; ".join(lines[:max_lines])


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when the message is empty)."""
    return one_line(error, max_lines=1)

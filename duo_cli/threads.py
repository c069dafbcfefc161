"""torch's intra-op threads: ``torch_threads`` when set, else the cores shared out among the
jobs that run at once (one rule, :func:`resolve_torch_threads`, called by every command)."""

from __future__ import annotations

import os

from duo_cli.errors import ConfigError

#: what ``torch_threads`` accepts, for error messages and docs
VALID = "an integer >= 1, or null (auto: the cores / the jobs run at once)"


def available_cores() -> int:
    """The CPUs this process may run on: its affinity set where the OS has one, else
    ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_torch_threads(value: object) -> int | None:
    """``value`` as ``torch_threads``: ``None`` (auto) or an int >= 1.

    :raises ConfigError: one line naming the bad value and what is valid.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"bad value for torch_threads: {value!r}; expected {VALID}")
    return value


def resolve_torch_threads(value: object, parallel_jobs: int = 1, cores: int | None = None) -> int:
    """The threads one job uses: ``value`` when set, else ``max(1, cores // parallel_jobs)``.

    :param value: the config's ``torch_threads`` (``None`` = auto).
    :param parallel_jobs: jobs running at once on these cores (1 outside a sweep).
    :param cores: the CPUs the jobs share (default: :func:`available_cores`).
    :raises ConfigError: for a bad ``value``.
    """
    explicit = check_torch_threads(value)
    if explicit is not None:
        return explicit
    if parallel_jobs < 1:
        raise ValueError(f"parallel_jobs must be >= 1, got {parallel_jobs}")
    return max(1, (available_cores() if cores is None else cores) // parallel_jobs)

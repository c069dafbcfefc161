"""Read the results of a sweep's jobs: one :class:`Point` per (task, method, alpha, seed).

A job's ``summary.json`` holds one result (``alpha``, ``beta``, ``test``, ...) or,
when one job scored several alphas, ``per_alpha``: a list of entries
``{"alpha", "beta", "test", ...}`` read exactly as if they came from separate jobs.
An entry may also carry ``validators``: ``{"val_sim": {"test": ...}, "val_true":
{"test": ...}}``, the test result of each validator's choice (YRC-0 and the oracle);
``test`` stays "the" result (the entry's own ``selection_split`` choice).  A validator
without a result falls back to ``test`` (recorded in :attr:`Point.fallback`).
A summary with a missing key or a non-numeric value is refused with a one-line
:class:`SummaryError` naming the key; it is never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: the two validators of the benchmark: simulated (YRC-0) and oracle
VALIDATORS = ("val_sim", "val_true")


class SummaryError(ValueError):
    """A job summary that cannot be read (one line: what is wrong)."""


@dataclass(frozen=True)
class Point:
    """One method's test result on one task at one alpha and seed."""

    task: str
    method: str
    alpha: float
    beta: float
    seed: int
    test: Mapping[str, Any]
    learned: bool = False  # the method trained a network (PPO), not a parameter search
    #: per validator the test result of its choice (``test`` where the job had none)
    validators: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the validators that fell back to ``test``
    fallback: frozenset[str] = frozenset()


def _text(data: Mapping[str, Any], key: str) -> str:
    if key not in data:
        raise SummaryError(f"missing key {key!r}")
    value = data[key]
    if not isinstance(value, str) or not value:
        raise SummaryError(f"{key} {value!r} is not a name")
    return value


def _number(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    if key not in data:
        if default is not None:
            return default
        raise SummaryError(f"missing key {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SummaryError(f"{key} {value!r} is not a number")
    if not math.isfinite(value):
        raise SummaryError(f"{key} {value!r} is not finite")
    return float(value)


def _test(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    test = entry.get("test")
    if not isinstance(test, Mapping):
        raise SummaryError("missing key 'test'")
    _number(test, "reward_mean")
    rewards = test.get("rewards")
    if rewards is not None and (not isinstance(rewards, list) or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r)
            for r in rewards)):
        raise SummaryError("test.rewards is not a list of finite numbers")
    return test


def _validators(entry: Mapping[str, Any], test: Mapping[str, Any]
                ) -> tuple[dict[str, Mapping[str, Any]], frozenset[str]]:
    given = entry.get("validators")
    if given is not None and not isinstance(given, Mapping):
        raise SummaryError("validators is not a JSON object")
    out, missing = {}, set()
    for v in VALIDATORS:
        result = (given or {}).get(v)
        if result is not None and not isinstance(result, Mapping):
            raise SummaryError(f"validators.{v} is not a JSON object")
        if result is None or result.get("test") is None:
            out[v] = test
            missing.add(v)
            continue
        try:
            out[v] = _test(result)
        except SummaryError as exc:
            raise SummaryError(f"validators.{v}: {exc}") from None
    return out, frozenset(missing)


def _learned(data: Any) -> bool:
    train = data.get("train") if isinstance(data, Mapping) else None
    return isinstance(train, Mapping) and "global_step" in train


def read_points(summary: Any) -> list[Point]:
    """The points of one job summary.

    :raises SummaryError: one line naming the missing or bad key.
    """
    if not isinstance(summary, Mapping):
        raise SummaryError("summary is not a JSON object")
    task, method = _text(summary, "task"), _text(summary, "method")
    seed = _number(summary, "seed")
    if seed != int(seed):
        raise SummaryError(f"seed {summary['seed']!r} is not an integer")
    learned = _learned(summary)
    if "per_alpha" in summary:
        entries = summary["per_alpha"]
        if not isinstance(entries, list) or not entries:
            raise SummaryError("per_alpha is not a non-empty list")
        where = "per_alpha[{}]."
        learned = learned or any(_learned(e) for e in entries)  # a learned grid's sub-runs
    else:
        entries, where = [summary], ""
    points = []
    for i, entry in enumerate(entries):
        prefix = where.format(i)
        if not isinstance(entry, Mapping):
            raise SummaryError(f"{prefix or 'entry '}is not a JSON object")
        try:
            alpha = _number(entry, "alpha")
            beta = _number(summary if prefix and "beta" not in entry else entry, "beta")
            test = _test(entry)
            validators, fallback = _validators(entry, test)
        except SummaryError as exc:
            raise SummaryError(f"{prefix}{exc}") from None
        points.append(Point(task, method, alpha, beta, int(seed), test, learned, validators,
                            fallback))
    return points

"""Read the results of a sweep's jobs: one :class:`Point` per (task, method, alpha, seed).

A job's ``summary.json`` (:class:`duo_cli.summaries.JobSummary`) holds one result or,
when one job scored several alphas, ``per_alpha``: entries read exactly as if they came
from separate jobs.  An entry may carry ``validators``, the test result of each
validator's choice (YRC-0 and the oracle); ``test`` stays "the" result (the entry's own
``selection_split`` choice).  A validator without a result falls back to ``test``
(recorded in :attr:`Point.fallback`).  What the method is (learned, the skyline) comes
from the summary's declared ``traits``, never from its name; whether the task's test levels
are one layout from its declared ``test_single_layout``.  A summary with a missing
key or a non-numeric value is refused with a one-line :class:`SummaryError` naming the
key; it is never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from duo_cli.summaries import VALIDATORS, AlphaResult, JobSummary, SummaryError, Traits

__all__ = ["VALIDATORS", "Point", "SummaryError", "read_points"]


@dataclass(frozen=True)
class Point:
    """One method's test result on one task at one alpha and seed."""

    task: str
    method: str
    alpha: float
    beta: float
    seed: int
    test: Mapping[str, Any]
    #: what the method is, as its job declared it (learns, role, ...)
    traits: Traits
    #: per validator the test result of its choice (``test`` where the job had none)
    validators: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the validators that fell back to ``test``
    fallback: frozenset[str] = frozenset()
    #: every test level is the same layout, as the job's env declared (``None``: not recorded)
    single_layout: bool | None = None

    @property
    def learned(self) -> bool:
        """The method trained a network (PPO), not a parameter search."""
        return self.traits.learns

    @property
    def skyline(self) -> bool:
        """The job's coordinator was trained on the test distribution."""
        return self.traits.skyline


def _validators(r: AlphaResult) -> tuple[dict[str, Mapping[str, Any]], frozenset[str]]:
    out, missing = {}, set()
    for v in VALIDATORS:
        choice = r.validators.get(v)
        if choice is None or choice.test is None:
            out[v] = r.test
            missing.add(v)
        else:
            out[v] = choice.test
    return out, frozenset(missing)


def job_points(job: JobSummary) -> list[Point]:
    """The points of one parsed job summary."""
    return [Point(job.task, job.method, r.alpha, r.beta, job.seed, r.test, job.traits,
                  *_validators(r), single_layout=job.test_single_layout) for r in job.results]


def read_points(summary: Any) -> list[Point]:
    """The points of one job summary (its JSON data).

    :raises SummaryError: one line naming the missing or bad key.
    """
    return job_points(JobSummary.from_json(summary))

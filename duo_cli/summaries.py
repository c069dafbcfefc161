"""The ``summary.json`` of a coordination job, as types shared by its writers
(``duo train --type coord``, the alpha grid) and its readers (the sweep, the report).

A single-alpha job's summary is one flat object::

    {"method", "task", "seed", "traits", "alpha", "beta", "bp", "selection_split",
     "selected", "<selection split>": its validation result, "test", "validators",
     "checkpoint", "wall_time_s", "eval_num_envs", "train"}

an alpha-grid job's (``coordination.alphas=[...]``) holds one entry per alpha::

    {"method", "task", "seed", "traits", "alphas", "beta", "bp", "selection_split",
     "wall_time_s", "per_alpha": [{"alpha", "beta", "test", "validators", ...}, ...],
     "candidates", ...}

``test`` is "the" result (the choice of ``selection_split``); ``validators`` holds each
validator's choice and its test result (``val_sim``: YRC-0, ``val_true``: the oracle).
``traits`` says what the method is, declared by its algorithm class and the config
(:func:`job_traits`), never guessed from its name or keys.  :meth:`JobSummary.from_json`
refuses a summary that does not match with a one-line :class:`SummaryError` naming the
key.  Keys the types do not name are kept verbatim (``extra``).

Imports nothing of duo's but the bottom layer (:mod:`duo_cli.errors`, :mod:`duo_cli.settings`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duo_cli.errors import DuoError
from duo_cli.settings import VALIDATION_SPLITS

#: the benchmark's validators: simulated (YRC-0) and oracle
VALIDATORS = VALIDATION_SPLITS
#: a job's role in the benchmark: the skyline (its coordinator trained on the test
#: distribution, an upper bound and never a contender) or a method
SKYLINE, METHOD = "skyline", "method"
ROLES = (METHOD, SKYLINE)


class SummaryError(DuoError):
    """A job summary that cannot be read (one line: what is wrong); a ``ValueError``."""


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


def _optional_number(data: Mapping[str, Any], key: str) -> float | None:
    """``data[key]`` as a float, ``None`` when absent or null (a NaN is written as null)."""
    if data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SummaryError(f"{key} {value!r} is not a number")
    return float(value)


def _object(data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``data[key]`` as a dict, ``None`` when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SummaryError(f"{key} is not a JSON object")
    return dict(value)


def _flag(data: Mapping[str, Any], key: str) -> bool:
    if key not in data:
        raise SummaryError(f"missing key {key!r}")
    if not isinstance(data[key], bool):
        raise SummaryError(f"{key} {data[key]!r} is not true or false")
    return data[key]


def _result(data: Mapping[str, Any], key: str = "test") -> dict[str, Any]:
    """A test result: a ``reward_mean`` and optionally the per-episode ``rewards``."""
    test = data.get(key)
    if not isinstance(test, Mapping):
        raise SummaryError(f"missing key {key!r}")
    _number(test, "reward_mean")
    rewards = test.get("rewards")
    if rewards is not None and (not isinstance(rewards, list) or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r)
            for r in rewards)):
        raise SummaryError(f"{key}.rewards is not a list of finite numbers")
    return dict(test)


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class Traits:
    """What a job's method is, declared by its algorithm class and the config.

    :param learns: it trains a network (PPO): never among the non-RL methods.
    :param shares_rollouts: it plays its candidates once and rescores them for every
        alpha of a grid (a candidate search) instead of training once per alpha.
    :param role: ``"skyline"`` (the coordinator trained on the test distribution: the
        upper bound, never a contender) or ``"method"``.
    """

    learns: bool
    shares_rollouts: bool
    role: str = METHOD

    @property
    def skyline(self) -> bool:
        return self.role == SKYLINE

    def to_json(self) -> dict[str, Any]:
        return {"learns": self.learns, "shares_rollouts": self.shares_rollouts, "role": self.role}

    @classmethod
    def from_json(cls, data: Any) -> Traits:
        if not isinstance(data, Mapping):
            raise SummaryError("traits is not a JSON object")
        try:
            learns, shares = _flag(data, "learns"), _flag(data, "shares_rollouts")
            role = _text(data, "role")
        except SummaryError as exc:
            raise SummaryError(f"traits.{exc}") from None
        if role not in ROLES:
            raise SummaryError(f"traits.role {role!r} is not one of {', '.join(ROLES)}")
        return cls(learns, shares, role)


def job_traits(algorithm: type, cfg: Any) -> Traits:
    """The traits of a coordination job: ``algorithm`` is its algorithm class (whose
    ``learns`` and ``shares_rollouts`` it declares), ``cfg`` the composed config.  The job
    is the skyline when its coordinator trains on the test distribution
    (``coordination.train_setting: test``)."""
    setting = cfg.coordination.get("train_setting")
    return Traits(learns=bool(algorithm.learns), shares_rollouts=bool(algorithm.shares_rollouts),
                  role=SKYLINE if setting == "test" else METHOD)


@dataclass
class Choice:
    """One validator's choice at one alpha and that choice's test result.

    :param test: the choice played on test (``None``: not recorded).
    :param selected: what it selected (a candidate's parameters, a global step).
    :param result: its result on the validator's own split (single-alpha job).
    :param index: its index in the job's ``candidates`` (alpha grid of a candidate search).
    """

    test: dict[str, Any] | None = None
    selected: Any = None
    result: dict[str, Any] | None = None
    index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"index": self.index, "selected": self.selected, "result": self.result,
                           "test": self.test})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Choice:
        index = data.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise SummaryError(f"index {index!r} is not an integer")
        return cls(test=None if data.get("test") is None else _result(data),
                   selected=data.get("selected"), result=_object(data, "result"),
                   index=index)


@dataclass
class AlphaResult:
    """A method's result at one alpha (a single-alpha job, or one entry of ``per_alpha``).

    :param test: "the" test result: the choice of ``selection_split``.
    :param validation: per validation split the chosen policy's result on it (written
        under the split's name).
    :param validators: per validator its choice and that choice's test result.
    :param extra: further keys, written and read verbatim (``train``, ``checkpoint``, ...).
    """

    alpha: float
    beta: float
    test: dict[str, Any]
    selection_split: str | None = None
    selected: Any = None
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    validators: dict[str, Choice] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    #: the keys this type reads (every other one goes to ``extra``)
    KEYS = ("alpha", "beta", "test", "selection_split", "selected", "validators", *VALIDATORS)

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "beta": self.beta,
            **_drop_none({"selection_split": self.selection_split, "selected": self.selected}),
            **self.validation, "test": self.test,
            **({"validators": {v: c.to_json() for v, c in self.validators.items()}}
               if self.validators else {}),
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], beta: float | None = None,
                  keep_extra: bool = True) -> AlphaResult:
        """:param beta: the job's beta, for an entry without its own."""
        alpha = _number(data, "alpha")
        beta = _number(data, "beta", beta)
        test = _result(data)
        validators = {}
        given = data.get("validators")
        if given is not None and not isinstance(given, Mapping):
            raise SummaryError("validators is not a JSON object")
        for v, choice in (given or {}).items():
            if choice is None:
                continue
            if not isinstance(choice, Mapping):
                raise SummaryError(f"validators.{v} is not a JSON object")
            try:
                validators[v] = Choice.from_json(choice)
            except SummaryError as exc:
                raise SummaryError(f"validators.{v}: {exc}") from None
        split = data.get("selection_split")
        if split is not None and not isinstance(split, str):
            raise SummaryError(f"selection_split {split!r} is not a name")
        validation = {s: r for s in VALIDATORS if (r := _object(data, s)) is not None}
        extra = {k: v for k, v in data.items() if k not in cls.KEYS} if keep_extra else {}
        return cls(alpha, beta, test, split, data.get("selected"), validation, validators,
                   extra)


@dataclass
class JobSummary:
    """The ``summary.json`` of one coordination job.

    :param results: one per alpha (exactly one for a single-alpha job).
    :param grid: an alpha-grid job (written with ``alphas`` and ``per_alpha``).
    :param beta: the job's beta (a single-alpha job: its result's).
    :param test_single_layout: every test level is the same layout (declared by the env,
        :func:`duo_cli.envs.single_layout`): the CIs then cover only the agents' own
        randomness; ``None``: not recorded.
    :param extra: further job keys, written and read verbatim (``train``, ``checkpoint``,
        ``candidates``, ...).
    """

    method: str
    task: str
    seed: int
    traits: Traits
    results: list[AlphaResult]
    grid: bool = False
    beta: float | None = None
    bp: float | None = None
    selection_split: str | None = None
    wall_time_s: float | None = None
    test_single_layout: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    #: the job keys this type reads (a single-alpha job also has :attr:`AlphaResult.KEYS`)
    KEYS = ("method", "task", "seed", "traits", "alphas", "beta", "bp", "selection_split",
            "wall_time_s", "test_single_layout", "per_alpha")

    def to_json(self) -> dict[str, Any]:
        head = {"method": self.method, "task": self.task, "seed": self.seed,
                "traits": self.traits.to_json()}
        job = _drop_none({"bp": self.bp, "selection_split": self.selection_split,
                          "wall_time_s": self.wall_time_s,
                          "test_single_layout": self.test_single_layout})
        if self.grid:
            return {**head, "alphas": [r.alpha for r in self.results],
                    **_drop_none({"beta": self.beta}), **job,
                    "per_alpha": [r.to_json() for r in self.results], **self.extra}
        (one,) = self.results
        return {**head, **one.to_json(), **job, **self.extra}

    @classmethod
    def from_json(cls, data: Any) -> JobSummary:
        """:raises SummaryError: one line naming the missing or bad key."""
        if not isinstance(data, Mapping):
            raise SummaryError("summary is not a JSON object")
        task, method = _text(data, "task"), _text(data, "method")
        seed = _number(data, "seed")
        if seed != int(seed):
            raise SummaryError(f"seed {data['seed']!r} is not an integer")
        if "traits" not in data:
            raise SummaryError("missing key 'traits' (a summary written before duo recorded "
                               "a method's traits: re-run the job)")
        traits = Traits.from_json(data["traits"])
        bp, wall = _optional_number(data, "bp"), _optional_number(data, "wall_time_s")
        single = None if data.get("test_single_layout") is None else _flag(
            data, "test_single_layout")
        split = data.get("selection_split")
        if split is not None and not isinstance(split, str):
            raise SummaryError(f"selection_split {split!r} is not a name")
        grid = "per_alpha" in data
        if grid:
            entries = data["per_alpha"]
            if not isinstance(entries, list) or not entries:
                raise SummaryError("per_alpha is not a non-empty list")
            beta = _optional_number(data, "beta")
            results = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, Mapping):
                    raise SummaryError(f"per_alpha[{i}].is not a JSON object")
                try:
                    results.append(AlphaResult.from_json(entry, beta))
                except SummaryError as exc:
                    raise SummaryError(f"per_alpha[{i}].{exc}") from None
            keys = cls.KEYS
        else:
            results = [AlphaResult.from_json(data, keep_extra=False)]
            beta = results[0].beta
            keys = (*cls.KEYS, *AlphaResult.KEYS)
        extra = {k: v for k, v in data.items() if k not in keys}
        return cls(method, task, int(seed), traits, results, grid, beta, bp, split, wall,
                   single, extra)


def read_summary(path: Path) -> JobSummary:
    """The job summary in ``path``.

    :raises SummaryError: one line, for a file that is not JSON or not a job summary.
    """
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise SummaryError(f"not valid JSON ({exc})") from None
    return JobSummary.from_json(data)

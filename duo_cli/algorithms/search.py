"""Coordination methods that select one parameter from a list of candidates.

Each candidate plays the validation splits the runner passes in once (the
selection split, never test; the alpha grid passes both validators); the best
one per split is kept (``best_<split>.pt``) and handed back in the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from duo_cli.algorithms.base import Algorithm, AlgorithmResult, BestKeeper
from duo_cli.evaluation.statistics import without_episodes
from duo_cli.settings import setting
from duo_cli.tables import fmt, fmt_ci

logger = logging.getLogger(__name__)


def collect_novice_obs(env: Any, key: str, num_steps: int, seed: int) -> np.ndarray:
    """Let the novice alone play ``env`` for ``num_steps`` steps; stack ``obs[key]``."""
    obs, _ = env.reset(seed=seed)
    novice = np.full(env.num_envs, env.NOVICE)
    out = [np.array(obs[key], copy=True)]
    for _ in range(num_steps - 1):
        obs, *_ = env.step(novice)
        out.append(np.array(obs[key], copy=True))
    return np.concatenate(out, axis=0)


@dataclass
class Played:
    """One candidate after it played the validation splits once.

    :param params: what ``policy.set_params`` takes to restore it.
    :param plain: its parameters for tables (fitted arrays left out).
    :param results: split -> its full evaluation (per-episode lists kept).
    """

    params: dict[str, Any]
    plain: dict[str, Any]
    results: dict[str, dict[str, Any]]


class CandidateSearch(Algorithm):
    """Play every candidate once on each validation split; keep the best per split."""

    learns = False
    shares_rollouts = True

    def candidates(self, policy: Any, env: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def play(self, policy: Any, env: Any, evaluators: Mapping[str, Any],
             show_results: bool = True) -> list[Played]:
        """Each candidate plays each split of ``evaluators`` once (the one home of this)."""
        candidates = self.candidates(policy, env)
        self.ctx.console.print(f"[bold]{len(candidates)} candidate(s)[/] for {self.name}")
        played = []
        for i, params in enumerate(candidates):
            policy.set_params(params)
            results = {split: ev.evaluate(policy) for split, ev in evaluators.items()}
            played.append(Played(params, plain_params(policy.get_params()), results))
            line = "  ".join(
                f"{s}: {fmt_ci(r['reward_mean'], r['reward_ci95'])} "
                f"(expert {fmt(r.get('expert_frac'))})" for s, r in results.items()
            ) if show_results else ""
            self.ctx.console.print(f"  [{i + 1}/{len(candidates)}] {policy.describe()}  {line}")
        return played

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> AlgorithmResult:
        ctx = self.ctx
        played = self.play(policy, env, evaluators)
        keeper = BestKeeper(ctx.run_dir, ctx.metadata)
        index: dict[str, int] = {}
        for i, cand in enumerate(played):
            policy.set_params(cand.params)
            for split, res in cand.results.items():
                if keeper.offer(split, res, policy, cand.plain):
                    index[split] = i
            ctx.log_metrics(i, {"candidate": i, **{f"{s}/reward_mean": r["reward_mean"]
                                                   for s, r in cand.results.items()}})
        rows = [{"params": c.plain, "results": {s: without_episodes(r) for s, r in c.results.items()}}
                for c in played]
        self._print_table(rows, index)
        return AlgorithmResult(best=keeper.best, summary={
            "candidates": rows,
            "best": {s: {"params": b.selected, "index": index[s], "result": b.result}
                     for s, b in keeper.best.items()},
        })

    def _print_table(self, rows: list[dict[str, Any]], index: Mapping[str, int]) -> None:
        splits = list(rows[0]["results"]) if rows else []
        table = Table(title=f"{self.name}: candidates")
        table.add_column("#", justify="right")
        table.add_column("parameters")
        for s in splits:
            table.add_column(f"{s} reward ± CI", justify="right")
            table.add_column(f"{s} expert frac", justify="right")
        for i, row in enumerate(rows):
            chosen = [s for s in splits if index[s] == i]
            cells = []
            for s in splits:
                r = row["results"][s]
                cells += [fmt_ci(r["reward_mean"], r["reward_ci95"]), fmt(r.get("expert_frac"))]
            label = ", ".join(f"{k}={fmt(v, 4)}" for k, v in row["params"].items())
            table.add_row(str(i + 1) + (" *" if chosen else ""), label, *cells)
        self.ctx.console.print(table)


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar parameters for tables and summaries (fitted arrays left out)."""
    out = {}
    for k, v in params.items():
        if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
            continue  # fitted arrays are not "parameters" for tables
        out[k] = v.item() if hasattr(v, "item") else v
    return out


class Always(CandidateSearch):
    """No search: the policy's single setting (always novice / always expert)."""

    def candidates(self, policy, env):
        return [policy.get_params()]


class RandomSearch(CandidateSearch):
    """Query the expert with probability p, for each p in ``probs``."""

    @dataclass(frozen=True)
    class Settings:
        probs: list[float] = setting(low=0, high=1, doc="the candidate probabilities")

    def candidates(self, policy, env):
        return [{"p": p} for p in self.settings.probs]


class AskEveryKSearch(CandidateSearch):
    """Query the expert every k steps, for each k in ``candidates``."""

    @dataclass(frozen=True)
    class Settings:
        candidates: list[int] = setting(low=1, doc="the candidate k's")

    def candidates(self, policy, env):
        return [{"k": k} for k in self.settings.candidates]


@dataclass(frozen=True)
class PercentileSettings:
    """Thresholds at percentiles of scores met while the novice alone plays train."""

    percentiles: list[float] = setting(low=0, high=100, doc="the candidate percentiles")
    fit_steps: int = setting(low=1, doc="steps of novice-only play on train (x env.num_envs)")


class _PercentileSearch(CandidateSearch):
    Settings = PercentileSettings

    def _thresholds(self, scores: np.ndarray) -> list[float]:
        return [float(t) for t in np.percentile(scores, list(self.settings.percentiles))]


class LogitSearch(_PercentileSearch):
    """Thresholds = percentiles of the novice's confidence scores on the train split."""

    def candidates(self, policy, env):
        logits = collect_novice_obs(env, "novice_logits", self.settings.fit_steps, self.ctx.seed)
        scores = policy.score({"novice_logits": logits})
        self.ctx.console.print(
            f"{policy.metric} scores of the novice alone on train: {len(scores):,} states, "
            f"min {scores.min():.4g}, median {np.median(scores):.4g}, max {scores.max():.4g}"
        )
        return [{"metric": policy.metric, "threshold": t} for t in self._thresholds(scores)]


class OODSearch(_PercentileSearch):
    """Fit the detector on novice features from the train split; percentile thresholds."""

    @dataclass(frozen=True)
    class Settings(PercentileSettings):
        max_fit_samples: int | None = setting(low=1, doc="fit on at most this many states "
                                                         "(a random subset; null: all)")

    def candidates(self, policy, env):
        feats = policy.fit_features(env, self.settings.fit_steps, self.ctx.seed)
        max_fit = self.settings.max_fit_samples or len(feats)
        if len(feats) > max_fit:
            rng = np.random.default_rng(self.ctx.seed)
            feats = feats[rng.choice(len(feats), max_fit, replace=False)]
        self.ctx.console.print(f"fitting OOD detector on {len(feats):,} novice states ...")
        scores = policy.fit(feats)
        return [{"threshold": t} for t in self._thresholds(scores)]

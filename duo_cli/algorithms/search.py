"""Coordination methods that select one parameter from a list of candidates.

Each candidate is scored on the validation splits the runner passes in (the
selection split, never test); the best one per split is saved as
``best_<split>.pt``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.table import Table

from duo_cli.algorithms.base import Algorithm
from duo_cli.checkpoint import save_policy
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


def _summary(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not isinstance(v, list)}


class CandidateSearch(Algorithm):
    """Evaluate every candidate parameter set; keep the best per validation split."""

    def candidates(self, policy: Any, env: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> dict[str, Any]:
        ctx = self.ctx
        candidates = self.candidates(policy, env)
        best: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        ctx.console.print(f"[bold]{len(candidates)} candidate(s)[/] for {self.cfg['name']}")
        for i, params in enumerate(candidates):
            policy.set_params(params)
            results = {split: ev.evaluate(policy) for split, ev in evaluators.items()}
            row = {"params": _plain_params(policy.get_params()),
                   "results": {s: _summary(r) for s, r in results.items()}}
            rows.append(row)
            line = "  ".join(
                f"{s}: {fmt_ci(r['reward_mean'], r['reward_ci95'])} "
                f"(expert {fmt(r.get('expert_frac'))})" for s, r in results.items()
            )
            ctx.console.print(f"  [{i + 1}/{len(candidates)}] {policy.describe()}  {line}")
            for split, res in results.items():
                if split not in best or res["reward_mean"] > best[split]["result"]["reward_mean"]:
                    best[split] = {"params": row["params"], "result": res, "index": i}
                    save_policy(
                        ctx.run_dir / f"best_{split}.pt", policy,
                        {**ctx.metadata, "selected": row["params"], "selected_on": split,
                         "eval": {split: _summary(res)}},
                    )
            ctx.log_metrics(i, {"candidate": i, **{f"{s}/reward_mean": r["reward_mean"]
                                                   for s, r in results.items()}})
        self._print_table(rows, best)
        return {
            "candidates": rows,
            "best": {s: {"params": b["params"], "index": b["index"],
                         "result": _summary(b["result"])} for s, b in best.items()},
        }

    def _print_table(self, rows: list[dict[str, Any]], best: Mapping[str, Any]) -> None:
        splits = list(rows[0]["results"]) if rows else []
        table = Table(title=f"{self.cfg['name']}: candidates")
        table.add_column("#", justify="right")
        table.add_column("parameters")
        for s in splits:
            table.add_column(f"{s} reward ± CI", justify="right")
            table.add_column(f"{s} expert frac", justify="right")
        for i, row in enumerate(rows):
            chosen = [s for s in splits if best[s]["index"] == i]
            cells = []
            for s in splits:
                r = row["results"][s]
                cells += [fmt_ci(r["reward_mean"], r["reward_ci95"]), fmt(r.get("expert_frac"))]
            label = ", ".join(f"{k}={fmt(v, 4)}" for k, v in row["params"].items())
            table.add_row(str(i + 1) + (" *" if chosen else ""), label, *cells)
        self.ctx.console.print(table)


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
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

    def candidates(self, policy, env):
        return [{"p": float(p)} for p in self.cfg["probs"]]


class AskEveryKSearch(CandidateSearch):
    """Query the expert every k steps, for each k in ``candidates``."""

    def candidates(self, policy, env):
        return [{"k": int(k)} for k in self.cfg["candidates"]]


class _PercentileSearch(CandidateSearch):
    def _thresholds(self, scores: np.ndarray) -> list[float]:
        return [float(t) for t in np.percentile(scores, list(self.cfg["percentiles"]))]


class LogitSearch(_PercentileSearch):
    """Thresholds = percentiles of the novice's confidence scores on the train split."""

    def candidates(self, policy, env):
        logits = collect_novice_obs(env, "novice_logits", int(self.cfg["fit_steps"]), self.ctx.seed)
        scores = policy.score({"novice_logits": logits})
        self.ctx.console.print(
            f"{policy.metric} scores of the novice alone on train: {len(scores):,} states, "
            f"min {scores.min():.4g}, median {np.median(scores):.4g}, max {scores.max():.4g}"
        )
        return [{"metric": policy.metric, "threshold": t} for t in self._thresholds(scores)]


class OODSearch(_PercentileSearch):
    """Fit the detector on novice features from the train split; percentile thresholds."""

    def candidates(self, policy, env):
        feats = policy.fit_features(env, int(self.cfg["fit_steps"]), self.ctx.seed)
        max_fit = int(self.cfg.get("max_fit_samples") or len(feats))
        if len(feats) > max_fit:
            rng = np.random.default_rng(self.ctx.seed)
            feats = feats[rng.choice(len(feats), max_fit, replace=False)]
        self.ctx.console.print(f"fitting OOD detector on {len(feats):,} novice states ...")
        scores = policy.fit(feats)
        return [{"threshold": t} for t in self._thresholds(scores)]

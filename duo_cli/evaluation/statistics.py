"""Statistics of evaluation results: means, confidence intervals, per-episode lists."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), 0.0
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def summarize_episodes(
    records: list[tuple[int, int, float, float, int, int, int]],
    num_episodes: int,
    total_steps: int,
    coordinating: bool = True,
) -> dict[str, Any]:
    """Summarise episode records ``(k, slot, reward, base, length, expert, switches)``.

    The first ``num_episodes`` records in (k, slot) order are kept, so every
    slot contributes its k-th episode before any slot contributes its (k+1)-th.
    """
    kept = sorted(records)[:num_episodes]
    arr = np.array([r[2:] for r in kept], dtype=np.float64).reshape(-1, 5)
    rewards, base, lengths, expert, switches = arr.T
    if not coordinating:
        expert = switches = None
    return summarize_outcomes(rewards, base, lengths, expert, switches, total_steps)


def summarize_outcomes(
    rewards: np.ndarray,
    base: np.ndarray,
    lengths: np.ndarray,
    expert: np.ndarray | None,
    switches: np.ndarray | None,
    steps: int,
) -> dict[str, Any]:
    """Means, CIs and per-episode lists of episodes already in (k, slot) order.

    ``expert`` (expert steps per episode) and ``switches`` are ``None`` for an agent
    alone; a coordination result also carries ``expert_frac`` and ``switches_mean``.
    """
    n = len(rewards)
    lengths = np.asarray(lengths, dtype=np.float64)
    reward_mean, reward_ci = mean_ci95(rewards)
    base_mean, base_ci = mean_ci95(base)
    total = float(lengths.sum())
    result: dict[str, Any] = {
        "reward_mean": reward_mean,
        "reward_ci95": reward_ci,
        "base_reward_mean": base_mean,
        "base_reward_ci95": base_ci,
        "episode_length_mean": float(lengths.mean()) if n else float("nan"),
        "episode_length_min": int(lengths.min()) if n else 0,
        "episode_length_max": int(lengths.max()) if n else 0,
        "episodes": n,
        "steps": int(steps),
        "rewards": np.asarray(rewards, dtype=np.float64).tolist(),
        "base_rewards": np.asarray(base, dtype=np.float64).tolist(),
        "lengths": lengths.astype(np.int64).tolist(),
    }
    if expert is not None:
        expert = np.asarray(expert, dtype=np.float64)
        result["expert_frac"] = float(expert.sum() / total) if total else 0.0
        result["switches_mean"] = float(np.mean(switches)) if n else 0.0
        result["expert_steps"] = expert.astype(np.int64).tolist()
        result["switches"] = np.asarray(switches).astype(np.int64).tolist()
    return result


def without_episodes(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without its per-episode lists (what summaries and checkpoints keep)."""
    return {k: v for k, v in result.items() if not isinstance(v, list)}

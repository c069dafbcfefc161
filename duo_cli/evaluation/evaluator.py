"""Evaluator: measures a policy on one split, with confidence intervals.

Every evaluation resets the split's env with the same seed, so every policy
meets the same levels in the same env slots (paired comparison).  Each env
slot contributes a fixed quota of episodes, so short episodes are not
over-represented, and no step cap is imposed beyond the game's own limit.

A slot that has played its quota is idle until the slowest slot is done: the base env
still steps it (vector envs step every row) with a fixed action, which changes no other
slot's levels, but it costs no forward: the policy acts on the other rows only (unless it
is stateful), and a CoordEnv runs its agents on them only (unless they are recurrent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from duo_cli.evaluation.statistics import summarize_episodes
from duo_cli.models.base import weights_fixed
from duo_cli.policies.base import act_rows

logger = logging.getLogger(__name__)


class Evaluator:
    """Run ``num_episodes`` episodes of a policy on ``env`` and summarise them.

    :param env: a vector env: a base env for agents, whose rewards and lengths the
        Evaluator sums; or an env declaring ``reports_coordination = True`` (a CoordEnv),
        whose ``info["episode"]`` sums of every ended episode (``r``, ``base_r``, ``l``,
        ``expert_steps``, ``switches``) are taken as they are.
    :param num_episodes: episodes to collect; each of the ``env.num_envs`` slots
        contributes ``ceil(num_episodes / num_envs)`` at most, earliest first.
    :param seed: reset seed: the same seed gives the same levels.
    :param temperature: sampling temperature passed to the policy.
    :param skip_finished: idle the slots that have played their quota (no forward on them);
        ``False`` keeps them acting as before (the benchmark's side-by-side only).
    """

    def __init__(
        self, env: Any, num_episodes: int, seed: int, temperature: float = 1.0, split: str = "",
        skip_finished: bool = True,
    ):
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        self.env = env
        self.num_episodes = int(num_episodes)
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.split = split
        self.skip_finished = bool(skip_finished)

    @torch.no_grad()
    def evaluate(self, policy: Any) -> dict[str, Any]:
        """Score ``policy``; the agents' sampling is seeded too, so re-runs are identical.
        The weights stay fixed meanwhile: a bf16 trunk casts them once (:func:`weights_fixed`)."""
        with torch.random.fork_rng(), weights_fixed(getattr(policy, "device", "cpu")):
            torch.manual_seed(self.seed)
            return self._evaluate(policy)

    def _evaluate(self, policy: Any) -> dict[str, Any]:
        env = self.env
        quota = math.ceil(self.num_episodes / env.num_envs)
        # declared by the env (CoordEnv): it idles the rows that have played their quota
        limits = self.skip_finished and bool(getattr(env, "limits_episodes", False))
        if limits:
            env.limit_episodes(quota)
        try:
            return self._run(policy, quota)
        finally:
            if limits:
                env.limit_episodes(None)

    def _run(self, policy: Any, quota: int) -> dict[str, Any]:
        env = self.env
        n = env.num_envs
        # declared by the env (CoordEnv): it reports each ended episode's sums itself
        coordinating = bool(getattr(env, "reports_coordination", False))

        policy.eval()
        obs, _ = env.reset(seed=self.seed)
        policy.reset(np.ones(n, dtype=bool))
        counts = np.zeros(n, dtype=np.int64)
        active = counts < quota
        ep_reward = np.zeros(n)
        ep_len = np.zeros(n, dtype=np.int64)
        records: list[tuple[int, int, float, float, int, int, int]] = []
        total_steps = 0
        temperature = self.temperature
        while active.any():
            a = act_rows(policy, obs, active if self.skip_finished else None, temperature)
            obs, reward, terminated, truncated, info = env.step(a)
            done = np.logical_or(terminated, truncated)
            total_steps += n
            if not coordinating:
                ep_reward += reward
                ep_len += 1
            if done.any():
                if coordinating:
                    ep = info["episode"]
                for i in np.flatnonzero(done & active):
                    if coordinating:
                        record = (float(ep["r"][i]), float(ep["base_r"][i]), int(ep["l"][i]),
                                  int(ep["expert_steps"][i]), int(ep["switches"][i]))
                    else:
                        record = (float(ep_reward[i]), float(ep_reward[i]), int(ep_len[i]), 0, 0)
                    records.append((int(counts[i]), int(i), *record))
                    counts[i] += 1
                ep_reward[done] = 0.0
                ep_len[done] = 0
                policy.reset(done)
                active = counts < quota
        return summarize_episodes(records, self.num_episodes, total_steps, coordinating)


def make_evaluators(cfg: Any, splits: Iterable[str], num_episodes: int,
                    env_factory: Callable[[str, int], Any]) -> dict[str, Evaluator]:
    """split -> Evaluator over ``env_factory(split, num_envs)``, seeded by the split's seed
    (``cfg.env.<split>.seed``) with ``cfg.evaluation``'s env count and temperature."""
    ev = cfg.evaluation
    num_envs = min(int(ev.num_envs), int(num_episodes))
    return {
        split: Evaluator(
            env_factory(split, num_envs), num_episodes=int(num_episodes),
            seed=int(cfg.env[split].seed), temperature=float(ev.temperature), split=split,
        )
        for split in splits
    }


def close_evaluators(evaluators: Mapping[str, Evaluator]) -> None:
    for evaluator in evaluators.values():
        evaluator.env.close()

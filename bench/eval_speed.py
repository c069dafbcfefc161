"""Evaluator speed: slots that have played their quota idle, against the loop that kept them acting.

The "before" loop is ``Evaluator(skip_finished=False)``: every slot acts (policy, novice and
expert forwards) until the slowest slot has played its quota.  Both loops play the very same
episodes (same seed, greedy agents, deterministic coordinator: checked), so their times differ
only by the forwards skipped.  Blocks alternate (after, before, after, ...) so the ratios share
the machine's state; one torch thread.

* MiniGrid (the suite's env): LavaGap's test split (``hard``), the shipped novice and expert,
  a CoordEnv with a logit coordinator (the expert when the novice's max probability is below
  0.9), 64 slots, 256 episodes (4 per slot; 10 to 196 steps each).  Prints
  ``eval_episodes_per_s``, ``eval_episodes_per_s_before``, ``eval_speedup`` (median over
  blocks of the before/after time ratio) and ``eval_active_row_frac`` (row-steps of slots
  still playing their quota over all row-steps: its inverse bounds the speed-up when forwards
  cost per row and the env's steps nothing; the grid nets' forwards cost mostly per call and
  the env steps every row, so the gain here is small).
* Procgen (``duo eval`` of an agent): coinrun's test split, the shipped expert alone in fp32
  (the forward's cost grows with its rows), 16 slots, 16 episodes.  Prints
  ``eval_procgen_agent_episodes_per_s``, ``..._before``, ``eval_procgen_agent_speedup`` and
  ``eval_procgen_agent_active_row_frac``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duo_cli.agents import load_agent  # noqa: E402
from duo_cli.coordination.env import CoordEnv  # noqa: E402
from duo_cli.envs.minigrid import MiniGridVecEnv  # noqa: E402
from duo_cli.envs.procgen import ProcgenVecEnv  # noqa: E402
from duo_cli.evaluation.evaluator import Evaluator  # noqa: E402
from duo_cli.policies.logit import LogitPolicy  # noqa: E402


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def paired(prefix: str, env: Any, policy: Any, num_episodes: int, seed: int,
           blocks: int) -> dict[str, float]:
    """Time the Evaluator with and without idle slots, interleaved; prints the figures."""
    times: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for _ in range(blocks):
        for skip in (True, False):
            ev = Evaluator(env, num_episodes, seed=seed, temperature=0.0, skip_finished=skip)
            t = time.perf_counter()
            results[skip] = ev.evaluate(policy)
            times[skip].append(time.perf_counter() - t)
    if results[True] != results[False]:
        raise RuntimeError(f"{prefix}: the two evaluation loops played different episodes")
    res = results[True]
    figures = {
        f"{prefix}_episodes_per_s": blocks * num_episodes / sum(times[True]),
        f"{prefix}_episodes_per_s_before": blocks * num_episodes / sum(times[False]),
        f"{prefix}_speedup": float(np.median(np.array(times[False]) / np.array(times[True]))),
        f"{prefix}_active_row_frac": sum(res["lengths"]) / res["steps"],
    }
    for name, value in figures.items():
        emit(name, value)
    return figures


def bench_minigrid(task: str = "LavaGap", num_envs: int = 64, num_episodes: int = 256,
                   blocks: int = 3) -> dict[str, float]:
    ckpt = ROOT / "checkpoints" / "minigrid" / task
    novice, expert = (load_agent(ckpt / f"{role}.pt")[0] for role in ("novice", "expert"))
    base = MiniGridVecEnv(task, num_envs, "hard", start_level=0, num_levels=100000, seed=303)
    env = CoordEnv(base, novice, expert, expert_query_cost_weight=0.4, temperature=0.0)
    env.set_costs(0.1)
    coordinator = LogitPolicy({"metric": "max_prob", "threshold": 0.9}, env)
    try:
        return paired("eval", env, coordinator, num_episodes, 303, blocks)
    finally:
        env.close()


def bench_procgen(num_envs: int = 16, num_episodes: int = 16, blocks: int = 2) -> dict[str, float]:
    path = ROOT / "checkpoints" / "procgen" / "coinrun" / "expert.pt"
    if not path.exists():
        print(f"# {path} missing: no procgen figure", file=sys.stderr)
        return {}
    expert = load_agent(path, bf16=False)[0]
    env = ProcgenVecEnv("coinrun", num_envs, "hard", 3000000, 100000, 303)
    try:
        return paired("eval_procgen_agent", env, expert, num_episodes, 303, blocks)
    finally:
        env.close()


def bench_eval_speed(threads: int = 1) -> dict[str, float]:
    """Both setups; prints and returns the figures."""
    torch.set_num_threads(threads)
    return {**bench_minigrid(), **bench_procgen()}


if __name__ == "__main__":
    bench_eval_speed()

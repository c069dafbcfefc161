"""Evaluator speed: slots that have played their quota idle, against the loop that kept them acting.

MiniGrid LavaGap's test split (``hard``), the shipped novice and expert, a CoordEnv with a
random (p = 0.5) coordinator, 64 slots, 256 episodes (4 per slot; episodes last 10 to 196
steps, so slots finish at different times), one torch thread.  Blocks alternate (after,
before, after, before, ...) so the ratio shares the machine's state; every block meets the
same levels (same seed).

Prints ``eval_episodes_per_s`` (finished slots cost no forward), ``eval_episodes_per_s_before``
(``Evaluator(skip_finished=False)``: every slot acts until the slowest is done),
``eval_speedup`` (their ratio) and ``eval_active_row_frac`` (row-steps of slots still playing
their quota over all row-steps: its inverse bounds the speed-up when forwards cost per row and
the env's steps nothing).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duo_cli.agents import load_agent  # noqa: E402
from duo_cli.coordination.env import CoordEnv  # noqa: E402
from duo_cli.envs.minigrid import MiniGridVecEnv  # noqa: E402
from duo_cli.evaluation.evaluator import Evaluator  # noqa: E402
from duo_cli.policies.random import RandomPolicy  # noqa: E402


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def bench_eval_speed(task: str = "LavaGap", num_envs: int = 64, num_episodes: int = 256,
                     blocks: int = 2, threads: int = 1) -> dict[str, float]:
    """Time both evaluation loops, interleaved; prints and returns the figures."""
    torch.set_num_threads(threads)
    ckpt = ROOT / "checkpoints" / "minigrid" / task
    novice, expert = (load_agent(ckpt / f"{role}.pt")[0] for role in ("novice", "expert"))
    base = MiniGridVecEnv(task, num_envs, "hard", start_level=0, num_levels=100000, seed=303)
    env = CoordEnv(base, novice, expert, expert_query_cost_weight=0.4)
    env.set_costs(0.1)
    coordinator = RandomPolicy({"p": 0.5}, env, seed=0)
    times: dict[bool, float] = {True: 0.0, False: 0.0}
    fracs = []
    for _ in range(blocks):
        for skip in (True, False):
            ev = Evaluator(env, num_episodes, seed=303, skip_finished=skip)
            t = time.perf_counter()
            res = ev.evaluate(coordinator)
            times[skip] += time.perf_counter() - t
            fracs.append(sum(res["lengths"]) / res["steps"])
    env.close()
    episodes = blocks * num_episodes
    figures = {
        "eval_episodes_per_s": episodes / times[True],
        "eval_episodes_per_s_before": episodes / times[False],
        "eval_speedup": times[False] / times[True],
        "eval_active_row_frac": sum(fracs) / len(fracs),
    }
    for name, value in figures.items():
        emit(name, value)
    return figures


if __name__ == "__main__":
    bench_eval_speed()

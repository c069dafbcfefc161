"""Drive real Procgen episodes through a running ``duo serve`` (the application owns the loop).

    duo serve runs/coord/.../best_val_sim.pt serve.port=8000 &
    python examples/serve_procgen.py --url http://127.0.0.1:8000 --task coinrun --episodes 16

Each of ``--num-envs`` games is one served episode at a time: every step the client sends
all games' observations concurrently (the server answers them with one forward), steps the
games with the returned actions, reports the rewards, and ends finished episodes. Episodes
are counted as ``duo eval`` counts them (each game contributes an equal quota, earliest
first), so with temperature 0 the table matches ``duo eval CHECKPOINT split=test``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duo_cli.client import AsyncDuoClient  # noqa: E402
from duo_cli.envs.procgen import ProcgenVecEnv  # noqa: E402

Record = tuple[int, int, float, float, int, int, int]


async def play(url: str, task: str, pool: dict[str, Any], num_episodes: int, num_envs: int,
               token: str | None = None) -> list[Record]:
    """Play ``num_episodes`` episodes; returns ``(k, slot, return, base, length, expert, switches)``.

    :param pool: the split's ``distribution_mode``, ``start_level``, ``num_levels`` and ``seed``.
    """
    env = ProcgenVecEnv(task, num_envs, pool["distribution_mode"], int(pool["start_level"]),
                        int(pool["num_levels"]), int(pool["seed"]), num_threads=0)
    quota = math.ceil(num_episodes / num_envs)
    counts = np.zeros(num_envs, dtype=np.int64)
    records: list[Record] = []
    async with AsyncDuoClient(url, token=token) as duo:
        obs, _ = env.reset(seed=int(pool["seed"]))
        ids = list(await asyncio.gather(*(duo.start_episode() for _ in range(num_envs))))
        while (counts < quota).any():
            steps = await asyncio.gather(*(duo.act(e, o) for e, o in zip(ids, obs, strict=True)))
            obs, reward, terminated, truncated, _ = env.step(np.array([s["action"] for s in steps]))
            await asyncio.gather(*(duo.log_returns(e, float(r)) for e, r in zip(ids, reward,
                                                                                strict=True)))
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                res = await duo.end_episode(ids[i])
                if counts[i] < quota:
                    records.append((int(counts[i]), int(i), res["return"], res["base_return"],
                                    res["length"], res["expert_steps"], res["switches"]))
                    counts[i] += 1
                ids[i] = await duo.start_episode()
        await asyncio.gather(*(duo.end_episode(e) for e in ids))
    env.close()
    return records


def main() -> None:
    from rich.console import Console

    from duo_cli.config import compose
    from duo_cli.evaluation.statistics import summarize_episodes
    from duo_cli.tables import print_eval_table

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token", default=None)
    p.add_argument("--task", default="coinrun")
    p.add_argument("--split", default="test", help="whose level pool to play (duo's env config)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--num-envs", type=int, default=8)
    args = p.parse_args()
    pool = compose([f"env.task={args.task}"]).env[args.split]
    records = asyncio.run(play(args.url, args.task, dict(pool), args.episodes, args.num_envs,
                               args.token))
    for k, slot, ret, base, length, expert, switches in sorted(records):
        print(f"game {slot} episode {k}: return {ret:.3f} (base {base:.1f}), length {length}, "
              f"expert steps {expert}, switches {switches}")
    steps = sum(r[4] for r in records)
    result = summarize_episodes(records, args.episodes, steps)
    print_eval_table(Console(), {args.split: result}, title=f"served: {args.url}")


if __name__ == "__main__":
    main()

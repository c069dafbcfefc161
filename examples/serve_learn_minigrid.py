"""Train a coordinator in place: MiniGrid games driven through a learning ``duo serve``.

    duo serve runs/coord/.../last.pt serve.learn=true serve.port=8000 &
    python examples/serve_learn_minigrid.py --url http://127.0.0.1:8000 --task LavaGap \\
        --num-envs 16 --steps 40000

The application owns the loop: ``--num-envs`` games run at once, each one served episode
at a time. Every step the client sends all games' observations concurrently (the server
answers them with one forward and samples the coordinator's choice), steps the games with
the returned actions, reports the rewards and ends finished episodes. The server updates
the coordinator with PPO every ``serve.learn_steps`` complete steps; every answer carries
the weights' ``model_version`` and ``model_updates``. At the end the script prints the
return and the expert fraction of the episodes per number of updates (the learning curve
as the application saw it); ``duo serve --summarize RUN_DIR`` shows the server's view.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duo_cli.client import AsyncDuoClient  # noqa: E402
from duo_cli.envs.minigrid import MiniGridVecEnv  # noqa: E402

#: (updates of the weights that chose the episode's last step, return, length, expert steps)
Episode = tuple[int, float, int, int]


async def play(url: str, task: str, variant: str, pool: dict, num_envs: int, steps: int,
               token: str | None = None) -> list[Episode]:
    """Drive ``num_envs`` concurrent games for ``steps`` env steps in all; the episodes played."""
    env = MiniGridVecEnv(task, num_envs, variant, int(pool["start_level"]),
                         int(pool["num_levels"]), int(pool["seed"]))
    episodes: list[Episode] = []
    async with AsyncDuoClient(url, token=token) as duo:
        obs, _ = env.reset(seed=int(pool["seed"]))
        ids = list(await asyncio.gather(*(duo.start_episode() for _ in range(num_envs))))
        for _ in range(max(1, steps // num_envs)):
            answers = await asyncio.gather(*(duo.act(e, o) for e, o in zip(ids, obs, strict=True)))
            actions = np.array([a["action"] for a in answers])
            obs, reward, terminated, truncated, _ = env.step(actions)
            await asyncio.gather(*(duo.log_returns(e, float(r))
                                   for e, r in zip(ids, reward, strict=True)))
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                res = await duo.end_episode(ids[i], truncated=bool(truncated[i]))
                episodes.append((int(answers[i].get("model_updates", 0)), res["return"],
                                 res["length"], res["expert_steps"]))
                ids[i] = await duo.start_episode()
        await asyncio.gather(*(duo.end_episode(e, truncated=True) for e in ids))
    env.close()
    return episodes


def curve(episodes: list[Episode]) -> list[tuple[int, int, float, float]]:
    """Per number of updates: episodes, mean return, expert fraction of their steps."""
    groups: dict[int, list[Episode]] = defaultdict(list)
    for ep in episodes:
        groups[ep[0]].append(ep)
    rows = []
    for updates in sorted(groups):
        eps = groups[updates]
        length = sum(e[2] for e in eps)
        rows.append((updates, len(eps), float(np.mean([e[1] for e in eps])),
                     sum(e[3] for e in eps) / max(length, 1)))
    return rows


def main() -> None:
    from duo_cli.config import compose

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token", default=None)
    p.add_argument("--task", default="LavaGap", help="DistShift, DoorKey or LavaGap")
    p.add_argument("--split", default="train",
                   help="whose level pool to play (duo's env config); the difficulty is the "
                        "test split's, where the shipped novice needs help")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=20000)
    args = p.parse_args()
    env_cfg = compose(["env=minigrid", f"env.task={args.task}"]).env
    pool, variant = dict(env_cfg[args.split]), str(env_cfg.test.variant)
    episodes = asyncio.run(play(args.url, args.task, variant, pool, args.num_envs, args.steps,
                                args.token))
    print(f"{'updates':>8} {'episodes':>8} {'return':>8} {'expert':>7}")
    for updates, n, ret, expert in curve(episodes):
        print(f"{updates:>8} {n:>8} {ret:>8.3f} {expert:>7.1%}")


if __name__ == "__main__":
    main()

"""Train a coordinator in place: MiniGrid games driven through a learning ``duo serve``.

    duo serve runs/coord/.../last.pt serve.learn=true serve.port=8000 &
    python examples/serve_learn_minigrid.py --url http://127.0.0.1:8000 --task LavaGap \\
        --num-envs 16 --steps 40000

The application owns the loop: ``--num-envs`` games run at once, each one served episode
at a time. Every round the client sends one ``POST /v1/step`` with every game's reward
since its last act, the ends of finished episodes, the starts of new ones and all
observations (the server answers the acts with one forward and samples the coordinator's
choices), then steps the games with the returned actions. The server updates
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
               token: str | None = None, prefix: str = "game") -> list[Episode]:
    """Drive ``num_envs`` concurrent games for ``steps`` env steps in all; the episodes played
    (episode ids ``<prefix><game>-<k>``)."""
    env = MiniGridVecEnv(task, num_envs, variant, int(pool["start_level"]),
                         int(pool["num_levels"]), int(pool["seed"]))
    episodes: list[Episode] = []
    updates: dict[str, int] = {}  # the updates of the weights that chose each episode's last step
    obs, _ = env.reset(seed=int(pool["seed"]))
    count = [0] * num_envs
    ids = [f"{prefix}{i}-0" for i in range(num_envs)]
    items = [{"episode_id": e, "start": True, "observation": o}
             for e, o in zip(ids, obs, strict=True)]
    async with AsyncDuoClient(url, token=token) as duo:
        for _ in range(max(1, steps // num_envs)):
            # one request per round: every game's reward, end, start and act (one forward)
            answers = await duo.step(items)
            for a in answers:
                if "return" in a:  # an end's answer: the finished episode
                    episodes.append((updates.get(a["episode_id"], 0), a["return"], a["length"],
                                     a["expert_steps"]))
            acts = [a for a in answers if "action" in a]
            for a in acts:
                updates[a["episode_id"]] = int(a["model_updates"])
            obs, reward, terminated, truncated, _ = env.step(np.array([a["action"] for a in acts]))
            items = []
            for i in range(num_envs):
                item = {"episode_id": ids[i], "reward": float(reward[i])}
                if terminated[i] or truncated[i]:
                    items.append({**item, "end": "truncated" if truncated[i] else "ended"})
                    count[i] += 1
                    ids[i] = f"{prefix}{i}-{count[i]}"
                    item = {"episode_id": ids[i], "start": True}
                items.append({**item, "observation": obs[i]})
        await duo.step([{"episode_id": e, "end": "truncated"} for e in ids])
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

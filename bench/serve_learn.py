"""Learning through the server against learning in process, on the same task and settings.

The task is MiniGrid LavaGap with the shipped agents and a PPO coordinator (``algorithm=ppo``,
features obs + novice_hidden + novice_dist), 16 envs x ``NUM_STEPS`` steps per update, one
torch thread on each side:

* in process: ``PPO.train`` (``duo train --type coord``), steps/s over whole iterations
  (collection and update);
* through the server: a real ``duo serve CKPT serve.learn=true`` process; this process is
  the application, stepping 16 concurrent LavaGap games with the async client, one
  ``POST /v1/step`` per round (each game's reward, end, start and act), while the server
  updates every 16 x ``NUM_STEPS`` complete steps.

Prints ``serve_learn_sps``, ``coord_ppo_inprocess_sps`` and ``serve_learn_ratio`` (target
>= 0.5), blocks interleaved.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NUM_ENVS, NUM_STEPS = 16, 64
JOB = ["env=minigrid", "env.task=LavaGap", "algorithm=ppo", f"env.num_envs={NUM_ENVS}",
       f"algorithm.num_steps={NUM_STEPS}", "algorithm.eval_every=0", "torch_threads=1",
       "progress=false", "evaluation.num_episodes=2", "evaluation.num_envs=2"]


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def coordinator(directory: Path) -> Path:
    """A PPO coordinator checkpoint of the job (one iteration)."""
    from rich.console import Console

    from duo_cli.commands.train_coord import train_coord
    from duo_cli.config import compose

    cfg = compose([*JOB, f"algorithm.total_timesteps={NUM_ENVS * NUM_STEPS}",
                   f"run_dir={directory / 'coord'}"], "coord")
    return train_coord(cfg, Console(file=io.StringIO())) / "last.pt"


def inprocess_sps(iterations: int = 4) -> float:
    """``PPO.train`` of the job: median steps/s of the iterations after the first."""
    import torch
    from rich.console import Console

    from duo_cli.config import compose
    from duo_cli.coordination.problem import CoordProblem
    from duo_cli.rundir import RunContext

    torch.set_num_threads(1)
    cfg = compose(JOB)
    problem = CoordProblem(cfg, torch.device("cpu"))
    env = problem.env("train")
    policy = problem.policy(env)
    algo = dict(cfg.algorithm)
    algo.update(total_timesteps=NUM_ENVS * NUM_STEPS * iterations, save_every=10**6)
    with tempfile.TemporaryDirectory() as d:
        ctx = RunContext(Path(d), progress=False, console=Console(file=io.StringIO()))
        problem.algorithm_class(algo, ctx).train(policy, env, {})
        rows = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
    env.close()
    sps = sorted(r["sps"] for r in rows[1:])
    return sps[len(sps) // 2]


def serve(ckpt: Path, run_dir: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "duo_cli.cli", "serve", str(ckpt), "serve.learn=true",
         "serve.port=0", f"run_dir={run_dir}", "torch_threads=1", "serve.episode_timeout_s=600"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1]
    raise RuntimeError("duo serve did not start")


async def drive(url: str, rounds: int, tag: str = "b") -> tuple[float, int]:
    """16 concurrent LavaGap games for ``rounds`` steps each, one request per round (every
    game's reward, end, start and act): ``(seconds, updates seen)``."""
    from duo_cli.client import AsyncDuoClient
    from duo_cli.envs.minigrid import MiniGridVecEnv

    env = MiniGridVecEnv("LavaGap", NUM_ENVS, "hard", 0, 100000, 1)
    obs, _ = env.reset(seed=1)
    episodes = [0] * NUM_ENVS
    ids = [f"{tag}-{i}-0" for i in range(NUM_ENVS)]
    items = [{"episode_id": e, "start": True, "observation": o} for e, o in zip(ids, obs,
                                                                              strict=True)]
    async with AsyncDuoClient(url, timeout=600) as duo:
        t0, answers = time.perf_counter(), []
        for _ in range(rounds):
            answers = [a for a in await duo.step(items) if "action" in a]
            obs, reward, term, trunc, _ = env.step(np.array([a["action"] for a in answers]))
            items = []
            for i in range(NUM_ENVS):
                item = {"episode_id": ids[i], "reward": float(reward[i])}
                if term[i] or trunc[i]:
                    items.append({**item, "end": "truncated" if trunc[i] else "ended"})
                    episodes[i] += 1
                    ids[i] = f"{tag}-{i}-{episodes[i]}"
                    item = {"episode_id": ids[i], "start": True}
                items.append({**item, "observation": obs[i]})
        seconds = time.perf_counter() - t0
        await duo.step([{"episode_id": e, "end": "truncated"} for e in ids])
    env.close()
    return seconds, answers[-1]["model_updates"]


def served_sps(ckpt: Path, run_dir: Path, updates: int = 3) -> float:
    """Steps/s through a learning server over ``updates`` updates' worth of steps."""
    proc, url = serve(ckpt, run_dir)
    try:
        asyncio.run(drive(url, NUM_STEPS, "warm"))  # warm-up: one update's worth
        rounds = NUM_STEPS * updates
        seconds, seen = asyncio.run(drive(url, rounds, "run"))
        if seen < updates:
            print(f"# only {seen} updates during the measurement", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return NUM_ENVS * rounds / seconds


def main(blocks: int = 2) -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        ckpt = coordinator(Path(d))
        local, served = [], []
        for b in range(blocks):
            local.append(inprocess_sps())
            served.append(served_sps(ckpt, Path(d) / f"serve{b}"))
    emit("serve_learn_sps", max(served), "{:.0f}")
    emit("coord_ppo_inprocess_sps", max(local), "{:.0f}")
    emit("serve_learn_ratio", max(served) / max(local))


if __name__ == "__main__":
    main()

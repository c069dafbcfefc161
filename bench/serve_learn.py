"""Learning through the server against learning in process, on the same task and settings.

The task is MiniGrid LavaGap with the shipped agents and a PPO coordinator (``algorithm=ppo``,
features obs + novice_hidden + novice_dist), 16 envs x ``NUM_STEPS`` steps per update, one
torch thread on each side:

* in process: ``PPO.train`` (``duo train --type coord``) on the hard variant the served
  games play, steps/s over whole iterations (collection and update);
* through the server: a real ``duo serve CKPT serve.learn=true`` process; this process is
  the application, stepping 16 concurrent LavaGap games with the async client, one
  ``POST /v1/step`` per round (each game's reward, end, start and act), while the server
  updates every 16 x ``NUM_STEPS`` complete steps.

Prints ``serve_learn_sps``, ``coord_ppo_inprocess_sps`` and ``serve_learn_ratio`` (target
>= 0.5), blocks interleaved.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# bench/coord_ppo.py: the same in-process measurement, after as many warm-up iterations
from coord_ppo import WARMUP, train_sps  # noqa: E402

NUM_ENVS, NUM_STEPS = 16, 64
#: ``coordination.train_setting=test``: in process, the coordinator learns on the hard variant
#: the served games play (the test split's difficulty; the default ``sim`` setting trains
#: on the easy variant, whose few views make each step 2.2x cheaper than the served work)
JOB = ["env=minigrid", "env.task=LavaGap", "algorithm=ppo", "coordination.train_setting=test",
       f"env.num_envs={NUM_ENVS}",
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


def inprocess_sps(iterations: int = 3) -> float:
    """``PPO.train`` of the job: median steps/s of the iterations after the first ``WARMUP``."""
    return train_sps(REPO, JOB, iterations)


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


def _example():
    spec = importlib.util.spec_from_file_location(
        "serve_learn_minigrid", REPO / "examples" / "serve_learn_minigrid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def drive(url: str, rounds: int, tag: str) -> tuple[float, int]:
    """The example's 16 concurrent LavaGap games (one ``/v1/step`` per round) for ``rounds``
    rounds: ``(seconds, updates after them)``."""
    from duo_cli.client import DuoClient

    pool = {"start_level": 0, "num_levels": 100000, "seed": 1}
    t0 = time.perf_counter()
    asyncio.run(_example().play(url, "LavaGap", "hard", pool, NUM_ENVS, NUM_ENVS * rounds,
                                prefix=tag))
    seconds = time.perf_counter() - t0
    with DuoClient(url) as duo:
        return seconds, int(duo.health()["model_updates"])


def served_sps(ckpt: Path, run_dir: Path, updates: int = 3) -> float:
    """Steps/s through a learning server over ``updates`` updates' worth of steps."""
    proc, url = serve(ckpt, run_dir)
    try:
        # as many updates' worth of warm-up as the in-process side's iterations (coord_ppo.py)
        drive(url, NUM_STEPS * WARMUP, "warm")
        rounds = NUM_STEPS * updates
        seconds, seen = drive(url, rounds, "run")
        print(f"# {seen} updates by the end of the measurement", file=sys.stderr)
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

"""MiniGrid speed: duo's vector env and PPO agent training against the bare env.

The bare env is one ``gym.make`` MiniGrid env (with the image-observation wrapper)
stepped in a Python loop with random actions, observing by minigrid's own
``gen_obs``.  duo's envs observe by ``FastView`` (bit-identical, faster), so the
ratios to the bare env can exceed 1.  Blocks are interleaved so the ratios share
the machine's state; one thread.

Prints ``minigrid_raw_sps``, ``minigrid_raw_fast_obs_sps`` (the bare env with
``FastView``), ``minigrid_env_sps`` (64 envs, random actions),
``minigrid_env_ratio_to_raw``, ``minigrid_env_minigrid_obs_sps`` (the same vector
env observing by minigrid's ``gen_obs``), ``minigrid_fast_obs_speedup`` (median
over blocks of the vector env's steps/s with ``FastView`` / with minigrid's
``gen_obs``, measured side by side), ``minigrid_ppo_agent_sps`` (DoorKey-5x5,
grid_cnn, the ``ppo_agent_minigrid`` settings) and ``minigrid_ppo_ratio_to_raw``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def _raw_block(steps: int, fast_obs: bool = False) -> float:
    import gymnasium as gym
    import minigrid  # noqa: F401
    from minigrid.wrappers import ImgObsWrapper

    from duo_cli.envs.minigrid import install_fast_view

    env = gym.make("MiniGrid-DoorKey-5x5-v0")
    if fast_obs:
        assert install_fast_view(env)
    env = ImgObsWrapper(env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.integers(7)))
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t
    env.close()
    return steps / dt


def _vec_block(num_envs: int, steps: int, fast_obs: bool = True) -> float:
    from duo_cli.envs.minigrid import MiniGridVecEnv

    env = MiniGridVecEnv("DoorKey", num_envs, "easy", seed=0, fast_obs=fast_obs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, 7, num_envs))
    dt = time.perf_counter() - t
    env.close()
    return num_envs * steps / dt


def _ppo_block(iterations: int) -> float:
    from rich.console import Console

    from duo_cli.agents import agent_spec, build_agent
    from duo_cli.algorithms.ppo import AgentPPO
    from duo_cli.config import compose
    from duo_cli.envs import make_env

    cfg = compose(["env=minigrid", "env.task=DoorKey", "algorithm=ppo_agent_minigrid"])
    env = make_env(cfg.env, "train", int(cfg.env.num_envs))
    policy = build_agent(agent_spec(cfg, 7), "cpu")
    algo_cfg = dict(cfg.algorithm)
    algo_cfg.update(total_timesteps=env.num_envs * int(algo_cfg["num_steps"]) * (iterations + 1),
                    save_every=1000, eval_every=0)
    from duo_cli.rundir import RunContext

    with tempfile.TemporaryDirectory() as d:
        ctx = RunContext(Path(d), progress=False, console=Console(file=open(os.devnull, "w")))
        AgentPPO(algo_cfg, ctx).train(policy, env, {})
        rows = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
    env.close()
    return float(np.median([r["sps"] for r in rows[1:]]))  # the first iteration warms up


def main(blocks: int = 3) -> None:
    torch.set_num_threads(1)
    raw, raw_fast, vec, slow, ppo = [], [], [], [], []
    for block in range(blocks):
        raw.append(_raw_block(20000))
        raw_fast.append(_raw_block(20000, fast_obs=True))
        pair = [(vec, True), (slow, False)]
        for out, fast in pair if block % 2 == 0 else pair[::-1]:  # alternate who goes first
            out.append(_vec_block(64, 300, fast_obs=fast))
        ppo.append(_ppo_block(3))
    r, rf, v, s, p = (float(np.median(x)) for x in (raw, raw_fast, vec, slow, ppo))
    emit("minigrid_raw_sps", r, "{:.0f}")
    emit("minigrid_raw_fast_obs_sps", rf, "{:.0f}")
    emit("minigrid_env_sps", v, "{:.0f}")
    emit("minigrid_env_ratio_to_raw", v / r)
    emit("minigrid_env_minigrid_obs_sps", s, "{:.0f}")
    emit("minigrid_fast_obs_speedup", float(np.median(np.array(vec) / np.array(slow))))
    emit("minigrid_ppo_agent_sps", p, "{:.0f}")
    emit("minigrid_ppo_ratio_to_raw", p / r)


if __name__ == "__main__":
    main()

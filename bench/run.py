"""duo's speed benchmarks: prints one ``name: value`` line per figure.

Ratios are measured within one run (interleaved where possible), since the
machines are shared and absolute timings are noisy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duo_cli.agents import agent_spec, build_agent, load_agent  # noqa: E402
from duo_cli.config import compose  # noqa: E402


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def agents(task: str = "coinrun"):
    """The shipped novice and expert, or fresh models of the same kinds if not shipped yet."""
    cfg = compose([])
    ckpt = ROOT / "checkpoints/procgen" / task
    out = []
    for role, model in (("novice", "small_cnn"), ("expert", "impala")):
        path = ckpt / f"{role}.pt"
        if path.exists():
            out.append(load_agent(path)[0])
        else:
            print(f"# {path} missing: using an untrained {model}", file=sys.stderr)
            out.append(build_agent(agent_spec(compose([f"model={model}"]), 15), "cpu"))
    del cfg
    return out


def bench_coord_env(steps: int = 60, blocks: int = 4, num_envs: int = 64) -> None:
    """CoordEnv with a random (p=0.5) coordinator vs the bare limit, interleaved."""
    from duo_cli.coordination.env import CoordEnv
    from duo_cli.envs.procgen import ProcgenVecEnv
    from duo_cli.policies.base import sample_actions

    novice, expert = agents()
    base = ProcgenVecEnv("coinrun", num_envs, "hard", 0, 100000, 0)
    env = CoordEnv(base, novice, expert, 0.4, 0.1)
    env.set_costs(0.1)
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def run_coord() -> float:
        t = time.perf_counter()
        for _ in range(steps):
            env.step(rng.random(num_envs) < 0.5)
        return time.perf_counter() - t

    lim_env = ProcgenVecEnv("coinrun", num_envs, "hard", 0, 100000, 0)
    obs, _ = lim_env.reset(seed=0)

    @torch.no_grad()
    def run_limit() -> float:
        nonlocal obs
        t = time.perf_counter()
        for _ in range(steps):
            obs_t = torch.from_numpy(obs)
            out = novice.model(obs_t)
            act = sample_actions(out.logits, 1.0)
            rows = torch.from_numpy(np.flatnonzero(rng.random(num_envs) < 0.5))
            if len(rows):
                act[rows] = sample_actions(expert.model(obs_t[rows]).logits, 1.0)
            obs, *_ = lim_env.step(act.numpy())
        return time.perf_counter() - t

    run_coord(), run_limit()  # warm-up
    t_coord = t_limit = 0.0
    for _ in range(blocks):
        t_coord += run_coord()
        t_limit += run_limit()
    n = steps * blocks * num_envs
    emit("coord_env_sps", n / t_coord, "{:.0f}")
    emit("coord_env_limit_sps", n / t_limit, "{:.0f}")
    emit("coord_env_ratio_to_limit", t_limit / t_coord)
    env.close()
    lim_env.close()


def bench_ppo(iterations: int = 3) -> None:
    """PPO agent training SPS: small CNN, coinrun, 64 envs, 2 threads."""
    from rich.console import Console

    from duo_cli.algorithms.ppo import AgentPPO
    from duo_cli.envs import make_env
    from duo_cli.rundir import RunContext

    cfg = compose(["model=small_cnn", "algorithm.eval_every=0"])
    env = make_env(cfg.env, "train", 64)
    policy = build_agent(agent_spec(cfg, 15), "cpu")
    with tempfile.TemporaryDirectory() as d:
        ctx = RunContext(Path(d), progress=False, console=Console(file=open(os.devnull, "w")))
        algo_cfg = dict(cfg.algorithm)
        algo_cfg["total_timesteps"] = 64 * 256 * (iterations + 1)
        algo_cfg["save_every"] = 1000
        AgentPPO(algo_cfg, ctx).train(policy, env, {})
        import json

        rows = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
    sps = [r["sps"] for r in rows[1:]]  # the first iteration warms up
    emit("ppo_agent_sps", float(np.median(sps)), "{:.0f}")
    env.close()


def bench_eval() -> None:
    """Evaluator throughput: always-expert on coinrun (test split) with the shipped agents."""
    from duo_cli.coordination.env import CoordEnv
    from duo_cli.envs.procgen import ProcgenVecEnv
    from duo_cli.evaluation.evaluator import Evaluator

    novice, expert = agents()
    env = CoordEnv(ProcgenVecEnv("coinrun", 64, "hard", 3000000, 100000, 303), novice, expert)
    env.set_costs(0.1)

    class AlwaysExpert:
        def act(self, obs, temperature=1.0):
            return torch.ones(len(obs["base_obs"]), dtype=torch.long)

        def reset(self, done):
            pass

        def eval(self):
            pass

    t = time.perf_counter()
    res = Evaluator(env, 128, seed=303).evaluate(AlwaysExpert())
    dt = time.perf_counter() - t
    emit("eval_coinrun_episodes_per_s", res["episodes"] / dt)
    env.close()


def bench_minigrid() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "minigrid_speed.py")], check=False)


def bench_alpha_grid() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "alpha_grid_speedup.py")], check=False)


def bench_sweep() -> None:
    script = ROOT / "bench" / "sweep_speedup.py"
    if script.exists():
        subprocess.run([sys.executable, str(script)], check=False)


def bench_coord_ppo() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "coord_ppo.py")], check=False)


def bench_precision() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "precision.py")], check=False)


def bench_eval_speed() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "eval_speed.py")], check=False)


def bench_serve_learn() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "serve_learn.py")], check=False)


def bench_serve() -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "serve.py")], check=False)


if __name__ == "__main__":
    torch.set_num_threads(2)
    which = sys.argv[1:] or ["coord_env", "coord_ppo", "ppo", "eval", "eval_speed", "minigrid",
                             "alpha_grid", "sweep", "serve", "serve_learn", "precision"]
    for name in which:
        globals()[f"bench_{name}"]()

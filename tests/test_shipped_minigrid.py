"""The shipped MiniGrid agents: plain data, picked up from env.task, and at their bars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duo_cli.agents import load_agent
from duo_cli.checkpoint import load_checkpoint
from duo_cli.config import PROJECT_DIR, compose, resolve_path
from duo_cli.envs import make_env
from duo_cli.envs.minigrid import TASKS
from duo_cli.evaluation.evaluator import Evaluator

SHIPPED = PROJECT_DIR / "checkpoints" / "minigrid"
ROLES = ("novice", "expert", "sim_novice")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_agents_follow_the_task(task):
    cfg = compose(["env=minigrid", f"env.task={task}"], "coord")
    for role in ROLES:
        path = resolve_path(cfg.agents[role])
        assert path.resolve() == (SHIPPED / task / f"{role}.pt").resolve()
        ckpt = load_checkpoint(path)
        assert ckpt["kind"] == "agent"
        assert ckpt["config"]["env"] == {"name": "minigrid", "task": task}
    meta = load_checkpoint(SHIPPED / task / "expert.pt")["metadata"]
    assert meta["bp"] > 0 and "test split" in meta["bp_source"]


def _score(task: str, role: str, split: str, episodes: int = 256) -> float:
    cfg = compose(["env=minigrid", f"env.task={task}"])
    policy, _ = load_agent(SHIPPED / task / f"{role}.pt")
    env = make_env(cfg.env, split, 32)
    try:
        return Evaluator(env, episodes, seed=int(cfg.env[split].seed)).evaluate(policy)["reward_mean"]
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_shipped_agents_meet_their_bars(task):
    expert = _score(task, "expert", "test")
    novice = _score(task, "novice", "test")
    assert expert >= 0.9, f"{task} expert {expert:.3f} on test"
    assert novice <= expert - 0.3, f"{task} novice {novice:.3f} vs expert {expert:.3f}"
    sim = _score(task, "sim_novice", "train", 128)
    trained = _score(task, "novice", "train", 128)
    assert sim < trained - 0.1, f"{task} sim_novice {sim:.3f} vs novice {trained:.3f} on train"


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_coordination_run_per_task_with_shipped_agents(task, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "duo_cli.cli", "train", "--type", "coord", "env=minigrid",
         f"env.task={task}", "algorithm=logit", "algorithm.percentiles=[0,50,100]",
         "evaluation.num_episodes=16", "evaluation.num_envs=8", "env.num_envs=8",
         "torch_threads=1", "progress=false", f"run_dir={run_dir}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(Path(run_dir / "summary.json").read_text())
    assert summary["task"] == task and summary["test"]["episodes"] == 16
    assert 0.0 <= summary["test"]["expert_frac"] <= 1.0


@pytest.mark.parametrize("env_args", [[], ["env=minigrid", "env.task=DoorKey"]])
def test_eval_reads_the_env_from_the_checkpoint(env_args, tmp_path):
    run_dir = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "duo_cli.cli", "eval", str(SHIPPED / "DoorKey" / "expert.pt"),
         *env_args, "split=test", "evaluation.num_episodes=8", "evaluation.num_envs=8",
         "torch_threads=1", "progress=false", f"run_dir={run_dir}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["episodes"] == 8 and summary["test"]["reward_mean"] > 0.5

"""The shipped coinrun agents load as plain data and work end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duo_cli.checkpoint import load_checkpoint
from duo_cli.config import PROJECT_DIR, compose, resolve_path

SHIPPED = PROJECT_DIR / "checkpoints" / "procgen" / "coinrun"


@pytest.mark.parametrize("role", ["novice", "expert", "sim_novice"])
def test_shipped_agent_is_plain_data(role):
    ckpt = load_checkpoint(SHIPPED / f"{role}.pt")
    assert ckpt["kind"] == "agent"
    assert ckpt["config"]["env"]["task"] == "coinrun"
    assert ckpt["metadata"]["global_step"] > 0


def test_expert_carries_a_measured_bp():
    meta = load_checkpoint(SHIPPED / "expert.pt")["metadata"]
    assert meta["bp"] > 0
    assert "test split" in meta["bp_source"]


def test_default_config_points_at_the_shipped_agents():
    cfg = compose([], "coord")
    for role in ("novice", "expert", "sim_novice"):
        assert resolve_path(cfg.agents[role]).resolve() == (SHIPPED / f"{role}.pt").resolve()


@pytest.mark.slow
def test_coordination_run_on_shipped_agents(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "duo_cli.cli", "train", "--type", "coord", "algorithm=random",
         "algorithm.probs=[0.0,1.0]", "evaluation.num_episodes=8", "evaluation.num_envs=8",
         "env.num_envs=8", "torch_threads=1", "progress=false", f"run_dir={run_dir}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"run dir: {run_dir}"
    summary = json.loads(Path(run_dir / "summary.json").read_text())
    assert summary["selected"]["p"] in (0.0, 1.0)
    assert summary["test"]["episodes"] == 8

"""Smoke tests of the ``duo`` command line, run as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import assert_one_line_error
from omegaconf import OmegaConf

from duo_cli.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _duo_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("duo")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("duo")
    if found:
        return [found]
    return [sys.executable, "-m", "duo_cli.cli"]


def duo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("DUO_CONF_DIR", None)
    return subprocess.run(
        [*_duo_cmd(), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def test_help_lists_commands():
    proc = duo("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "eval", "sweep", "config"):
        assert command in proc.stdout


def test_config_prints_yaml():
    proc = duo("config", "seed=3", "coordination.expert_query_cost_weight=0.7")
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.seed == 3
    assert cfg.coordination.expert_query_cost_weight == 0.7
    assert "switch_agent_cost_weight" in cfg.coordination
    assert "temperature" in cfg.coordination
    assert cfg.env.task == "coinrun"


def test_config_unknown_group_option():
    line = assert_one_line_error(duo("config", "algorithm=no_such_thing"), "no_such_thing")
    assert "ppo" in line  # the valid choices are listed


def test_config_unknown_key():
    line = assert_one_line_error(duo("config", "no_such_key=1"), "no_such_key")
    assert "seed" in line


def test_config_unknown_nested_key():
    assert_one_line_error(duo("config", "env.train.no_such_key=1"), "env.train.no_such_key",
                          "start_level")


def test_config_bad_type():
    assert_one_line_error(duo("config", "seed=abc"), "seed", "abc", "int")


def test_train_unknown_type():
    assert_one_line_error(duo("train", "--type", "robot"), "robot", "agent", "coord")


TINY_TRAIN = [
    "algorithm.total_timesteps=2048",
    "env.num_envs=4",
    "algorithm.num_steps=64",
    "algorithm.num_minibatches=2",
    "algorithm.eval_every=1",
    "evaluation.train_num_episodes=2",
    "evaluation.num_envs=2",
    "evaluation.train_splits=[val_sim]",
    "progress=false",
    "torch_threads=1",
]


@pytest.mark.slow
def test_train_agent_tiny_run_and_refuse_to_clobber(tmp_path):
    run_dir = tmp_path / "run"
    proc = duo("train", "--type", "agent", *TINY_TRAIN, f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last_line = proc.stdout.strip().splitlines()[-1]
    assert last_line == f"run dir: {run_dir}"
    for name in ("last.pt", "best_val_sim.pt", "config.yaml", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.algorithm.total_timesteps == 2048
    rows = (run_dir / "metrics.jsonl").read_text().strip().splitlines()
    assert len(rows) == 2048 // (4 * 64)
    last = load_checkpoint(run_dir / "last.pt")
    assert last["kind"] == "agent"
    assert last["metadata"]["global_step"] == 2048
    assert last["train_state"]["global_step"] == 2048
    best = load_checkpoint(run_dir / "best_val_sim.pt")
    assert "val_sim" in best["metadata"]["eval"]

    # a second run into the same non-empty run dir is refused and changes nothing
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.iterdir()}
    proc = duo("train", "--type", "agent", *TINY_TRAIN, f"run_dir={run_dir}")
    assert_one_line_error(proc, str(run_dir), "resume", "overwrite")
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.iterdir()}
    assert after == before


def test_train_unknown_env_task_is_one_line_error(tmp_path):
    proc = duo("train", "--type", "agent", "env.task=no_such_game", *TINY_TRAIN,
               f"run_dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "no_such_game", "coinrun")


def test_train_agent_init_from_checkpoint(tmp_path):
    """``algorithm.init_from`` starts a run from another agent's weights (fine-tuning)."""
    import torch

    first = tmp_path / "first"
    proc = duo("train", "--type", "agent", *TINY_TRAIN, f"run_dir={first}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    src = load_checkpoint(first / "last.pt")

    # learning rate 0: the new run's weights stay exactly the source's
    second = tmp_path / "second"
    proc = duo("train", "--type", "agent", *TINY_TRAIN, "algorithm.learning_rate=0",
               "evaluation.train_splits=[]", f"algorithm.init_from={first / 'last.pt'}",
               f"run_dir={second}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights initialised from" in proc.stdout
    new = load_checkpoint(second / "last.pt")
    assert new["metadata"]["init_from"]["global_step"] == 2048
    for key, value in src["state_dict"].items():
        assert torch.equal(value, new["state_dict"][key]), key


def test_train_agent_init_from_other_model_is_one_line_error(tmp_path):
    ckpt = Path(__file__).resolve().parents[1] / "checkpoints/procgen/coinrun/novice.pt"
    run_dir = tmp_path / "run"
    proc = duo("train", "--type", "agent", *TINY_TRAIN, "model=impala",
               f"algorithm.init_from={ckpt}", f"run_dir={run_dir}")
    assert_one_line_error(proc, "init_from", "small_cnn", "impala")
    assert not run_dir.exists()

"""Real files tests build without training: untrained agent checkpoints, sweep dirs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from duo_cli.agents import agent_spec, build_agent
from duo_cli.checkpoint import save_policy


def make_untrained_agents(directory, task: str, hidden_dim: int = 32, bp: float = 0.1) -> dict:
    """Save randomly initialised small-CNN agents (sim_novice, novice, expert) with a BP.

    Real checkpoints for tests and benchmarks that need the coordination pipeline
    end to end without trained agents.
    """
    cfg = OmegaConf.create({
        "policy": {"_target_": "duo_cli.policies.agent.AgentPolicy", "name": "agent"},
        "model": {"_target_": "duo_cli.models.cnn.SmallCNN", "name": "small_cnn",
                  "hidden_dim": hidden_dim, "bf16": False},
        "env": {"name": "procgen", "task": task},
    })
    paths = {}
    with torch.random.fork_rng():
        for i, role in enumerate(("sim_novice", "novice", "expert")):
            torch.manual_seed(100 + i)
            policy = build_agent(agent_spec(cfg, 15), "cpu")
            paths[role] = Path(save_policy(Path(directory) / f"{role}.pt", policy,
                                           {"bp": bp, "role": role}))
    return paths


def write_sweep_dir(root, summaries: list[dict]):
    """A sweep dir as Hydra and run_job leave it: ``root/<n>/`` with the job's overrides
    (``env.task``, ``algorithm``) and its ``summary.json``; returns ``root``."""
    root = Path(root)
    for num, s in enumerate(summaries):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- env.task={s['task']}\n- algorithm={s['method']}\n")
        (job / "summary.json").write_text(json.dumps(s))
    return root

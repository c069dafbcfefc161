"""``duo train --type agent``: PPO on the train split, periodic held-out evaluation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from duo_cli.agents import agent_from_checkpoint, agent_spec, build_agent, require_agent
from duo_cli.checkpoint import PolicyCheckpoint, load_policy_checkpoint
from duo_cli.checks import check_agent, same_model
from duo_cli.commands.common import (
    build_algorithm,
    check_resume,
    make_base_env,
    run_context,
    setup_torch,
)
from duo_cli.coordination.problem import POOL_KEYS
from duo_cli.evaluation.evaluator import close_evaluators, make_evaluators
from duo_cli.paths import resolve_path
from duo_cli.rundir import make_run_dir, owns_run_dir, write_json, write_text


@owns_run_dir
def train_agent(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """Train an agent; writes ``config.yaml``, checkpoints and ``train_result.json``."""
    device = setup_torch(cfg)
    init = _init_checkpoint(cfg)  # checked before anything is written
    check_resume(cfg, "agent")
    run_dir = make_run_dir(cfg, "agent", claim)
    console.print(f"[bold]training agent[/] on {cfg.env.task} "
                  f"({_difficulty(cfg.env.train)}) with {cfg.model.name}; run dir {run_dir}")
    env = make_base_env(cfg, "train")
    evaluators = make_evaluators(
        cfg, cfg.evaluation.train_splits, cfg.evaluation.train_num_episodes,
        lambda split, n: make_base_env(cfg, split, n),
    )
    policy = build_agent(agent_spec(cfg, int(env.single_action_space.n)), device)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    metadata = {
        "env": {"name": cfg.env.name, "task": cfg.env.task,
                "train": OmegaConf.to_container(cfg.env.train)},
        "model": cfg.model.name,
        "command": "duo train --type agent",
    }
    if init is not None:
        path, ckpt = init
        metadata["init_from"] = {
            "path": str(path), "global_step": ckpt.metadata.global_step,
        }
    ctx = run_context(cfg, run_dir, console, device, metadata)
    if init is not None and ctx.resume_checkpoint is None:  # on resume, last.pt's weights win
        policy.set_params(init[1].state_dict)
        console.print(f"weights initialised from {init[0]}")
    algorithm = build_algorithm(cfg, ctx)
    t0 = time.time()
    try:
        result = algorithm.train(policy, env, evaluators).summary
    finally:
        env.close()
        close_evaluators(evaluators)
        ctx.close()
    result["wall_time_s"] = time.time() - t0
    write_json(run_dir / "train_result.json", result)
    return run_dir


def _difficulty(split_cfg: DictConfig) -> str:
    """The split's difficulty settings (e.g. Procgen's distribution_mode, MiniGrid's variant)."""
    return ", ".join(str(v) for k, v in split_cfg.items() if k not in POOL_KEYS)


def _init_checkpoint(cfg: DictConfig) -> tuple[Path, PolicyCheckpoint] | None:
    """Load ``algorithm.init_from`` (an agent checkpoint to fine-tune), checking its model."""
    init_from = cfg.algorithm.get("init_from")
    if not init_from:
        return None
    path = resolve_path(init_from)
    ckpt = load_policy_checkpoint(path)
    name = f"algorithm.init_from={init_from}"
    require_agent(ckpt, name)
    same_model(cfg, ckpt, name)
    agent = agent_from_checkpoint(ckpt, "cpu", name=name)  # the weights fit the model
    check_agent(agent, ckpt.agent.num_actions, cfg, name)
    return path, ckpt

"""What the commands do, given a composed config (the CLI only parses argv)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from duo_cli.config import ConfigError, resolve_path

logger = logging.getLogger(__name__)


def setup_torch(cfg: DictConfig):
    import torch

    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.manual_seed(int(cfg.seed))
    return torch.device(cfg.device)


def make_run_dir(cfg: DictConfig, command: str) -> Path:
    """The run dir: ``cfg.run_dir`` or a fresh timestamped one; refuses to clobber."""
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
        if run_dir.exists() and any(run_dir.iterdir()) and not (cfg.resume or cfg.overwrite):
            raise ConfigError(
                f"run dir {run_dir} exists and is not empty; pass resume=true or overwrite=true"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{cfg.env.task}-{cfg.algorithm.name}"
        run_dir = Path("runs") / command / name
        i = 1
        while run_dir.exists():
            run_dir = Path("runs") / command / f"{name}-{i}"
            i += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def make_base_env(cfg: DictConfig, split: str, num_envs: int | None = None):
    """The base vector env of one split."""
    from duo_cli.envs import make_env

    return make_env(cfg.env, split, num_envs or cfg.env.num_envs)


def _context(cfg: DictConfig, run_dir: Path, console: Console, device, metadata=None):
    from duo_cli.run import RunContext

    return RunContext(
        run_dir=run_dir, device=device, seed=int(cfg.seed), console=console,
        resume=bool(cfg.resume), tensorboard=bool(cfg.tensorboard), progress=bool(cfg.progress),
        metadata=metadata or {},
    )


def build_agent(cfg: DictConfig, num_actions: int, device) -> Any:
    """A fresh agent policy with the configured model."""
    from duo_cli.models import build_model
    from duo_cli.registry import resolve

    model = build_model(cfg.model, num_actions=num_actions).to(device)
    policy = resolve(cfg.policy._target_)(model, device=device)
    policy.kind = "agent"
    policy.config = {
        "policy": OmegaConf.to_container(cfg.policy, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "num_actions": num_actions,
        "env": {"name": cfg.env.name, "task": cfg.env.task},
    }
    return policy


def load_agent(path: str | Path, device="cpu", bf16: bool | None = None) -> tuple[Any, dict]:
    """Rebuild an agent policy from a checkpoint; returns ``(policy, checkpoint)``."""
    from duo_cli.checkpoint import CheckpointError, load_checkpoint
    from duo_cli.models import build_model
    from duo_cli.registry import resolve

    ckpt = load_checkpoint(resolve_path(path), map_location=device)
    if ckpt.get("kind") != "agent":
        raise CheckpointError(f"{path} is a {ckpt.get('kind')!r} checkpoint, not an agent")
    conf = ckpt["config"]
    model_cfg = dict(conf["model"])
    if bf16 is not None:
        model_cfg["bf16"] = bf16
    model = build_model(model_cfg, num_actions=conf["num_actions"]).to(device)
    policy = resolve(conf["policy"]["_target_"])(model, device=device)
    policy.set_params(ckpt["state_dict"])
    policy.eval()
    policy.kind = "agent"
    policy.config = conf
    return policy, ckpt


def make_evaluators(cfg: DictConfig, splits, num_episodes: int, env_factory) -> dict:
    from duo_cli.evaluator import Evaluator

    ev = cfg.evaluation
    num_envs = min(int(ev.num_envs), int(num_episodes))
    return {
        split: Evaluator(
            env_factory(split, num_envs), num_episodes=int(num_episodes),
            seed=int(cfg.env[split].seed), temperature=float(ev.temperature), split=split,
        )
        for split in splits
    }


def train_agent(cfg: DictConfig, console: Console) -> Path:
    """``duo train --type agent``: PPO on the train split, periodic held-out evaluation."""
    from duo_cli.registry import resolve
    from duo_cli.run import write_json

    device = setup_torch(cfg)
    run_dir = make_run_dir(cfg, "agent")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    console.print(f"[bold]training agent[/] on {cfg.env.task} "
                  f"({cfg.env.train.distribution_mode}) with {cfg.model.name}; run dir {run_dir}")
    env = make_base_env(cfg, "train")
    evaluators = make_evaluators(
        cfg, cfg.evaluation.train_splits, cfg.evaluation.train_num_episodes,
        lambda split, n: make_base_env(cfg, split, n),
    )
    policy = build_agent(cfg, env.single_action_space.n, device)
    metadata = {
        "env": {"name": cfg.env.name, "task": cfg.env.task,
                "train": OmegaConf.to_container(cfg.env.train)},
        "model": cfg.model.name,
        "command": "duo train --type agent",
    }
    ctx = _context(cfg, run_dir, console, device, metadata)
    algorithm = resolve(cfg.algorithm._target_)(cfg.algorithm, ctx)
    t0 = time.time()
    try:
        result = algorithm.train(policy, env, evaluators)
    finally:
        env.close()
        for ev in evaluators.values():
            ev.env.close()
        ctx.close()
    result["wall_time_s"] = time.time() - t0
    write_json(run_dir / "train_result.json", result)
    return run_dir

"""What every command sets up: torch, base envs, evaluators, the run context, resume checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from duo_cli.agents import agent_from_checkpoint
from duo_cli.checkpoint import load_policy_checkpoint
from duo_cli.checks import check_agent, same_model
from duo_cli.envs import make_env
from duo_cli.errors import CheckpointError, ConfigError
from duo_cli.registry import resolve
from duo_cli.rundir import RunContext
from duo_cli.threads import resolve_torch_threads

logger = logging.getLogger(__name__)


def setup_torch(cfg: DictConfig) -> torch.device:
    """Threads and seed from the config; the device, refused if it is not available here.

    ``torch_threads`` is resolved by :func:`~duo_cli.threads.resolve_torch_threads` (null:
    all cores; ``duo sweep`` sets each job's share before its command runs).
    """
    threads = resolve_torch_threads(cfg.get("torch_threads"))
    torch.set_num_threads(threads)
    logger.debug("torch: %d intra-op thread(s) (torch_threads=%s)", threads,
                 cfg.get("torch_threads"))
    torch.manual_seed(int(cfg.seed))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r} is not available here (no CUDA); use device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {cfg.device!r} is not available here; use device=cpu")
    return device


def make_base_env(cfg: DictConfig, split: str, num_envs: int | None = None):
    """The base vector env of one split."""
    return make_env(cfg.env, split, num_envs or cfg.env.num_envs)


def run_context(cfg: DictConfig, run_dir: Path, console: Console, device: Any,
                metadata: dict | None = None) -> RunContext:
    """The :class:`~duo_cli.rundir.RunContext` an algorithm gets."""
    return RunContext(
        run_dir=run_dir, device=device, seed=int(cfg.seed), console=console,
        resume=bool(cfg.resume), tensorboard=bool(cfg.tensorboard), progress=bool(cfg.progress),
        metadata=metadata or {},
    )


def algorithm_class(cfg: DictConfig) -> type:
    """The algorithm class ``cfg.algorithm`` names (from the closed set of classes)."""
    return resolve(cfg.algorithm._target_, "algorithm", "algorithm._target_")


def build_algorithm(cfg: DictConfig, ctx: Any) -> Any:
    """The algorithm ``cfg.algorithm`` names, with its settings and the run's context."""
    return algorithm_class(cfg)(cfg.algorithm, ctx)


def check_resume(cfg: DictConfig, kind: str) -> None:
    """``resume=true``: the run dir's ``last.pt`` must fit this run, checked before any write."""
    if not (cfg.resume and cfg.run_dir):
        return
    last = Path(cfg.run_dir).expanduser() / "last.pt"
    if not last.is_file():
        return  # make_run_dir applies the rule for a dir without last.pt
    ckpt = load_policy_checkpoint(last)
    name = f"resume=true: {last}"
    if ckpt.kind != kind:
        raise ConfigError(f"{name} is a {ckpt.kind} run; this is duo train --type {kind}")
    if not isinstance(ckpt.train_state, dict):
        raise CheckpointError(f"{name} has no train_state to continue from")
    if kind == "agent":
        same_model(cfg, ckpt, name)
        agent = agent_from_checkpoint(ckpt, "cpu", name=str(last))
        check_agent(agent, ckpt.agent.num_actions, cfg, name)
        return
    theirs = ckpt.config.get("policy")
    ours = OmegaConf.to_container(cfg.policy, resolve=True)
    method = ckpt.metadata.method
    if theirs != ours or method != cfg.algorithm.name:
        raise ConfigError(
            f"{name} was trained by {method!r} with policy {theirs}; this run is "
            f"{cfg.algorithm.name!r} with policy {ours}"
        )

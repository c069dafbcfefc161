"""What every command sets up: torch, base envs, evaluators and the run context."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from duo_cli.config import ConfigError


def setup_torch(cfg: DictConfig):
    """Threads and seed from the config; the device, refused if it is not available here."""
    import torch

    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.manual_seed(int(cfg.seed))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r} is not available here (no CUDA); use device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {cfg.device!r} is not available here; use device=cpu")
    return device


def make_base_env(cfg: DictConfig, split: str, num_envs: int | None = None):
    """The base vector env of one split."""
    from duo_cli.envs import make_env

    return make_env(cfg.env, split, num_envs or cfg.env.num_envs)


def make_evaluators(cfg: DictConfig, splits: Iterable[str], num_episodes: int,
                    env_factory: Callable[[str, int], Any]) -> dict:
    """split -> Evaluator over ``env_factory(split, num_envs)``, seeded by the split."""
    from duo_cli.evaluation.evaluator import Evaluator

    ev = cfg.evaluation
    num_envs = min(int(ev.num_envs), int(num_episodes))
    return {
        split: Evaluator(
            env_factory(split, num_envs), num_episodes=int(num_episodes),
            seed=int(cfg.env[split].seed), temperature=float(ev.temperature), split=split,
        )
        for split in splits
    }


def close_evaluators(evaluators: dict) -> None:
    for evaluator in evaluators.values():
        evaluator.env.close()


def run_context(cfg: DictConfig, run_dir: Path, console: Console, device: Any,
                metadata: dict | None = None):
    """The :class:`~duo_cli.rundir.RunContext` an algorithm gets."""
    from duo_cli.rundir import RunContext

    return RunContext(
        run_dir=run_dir, device=device, seed=int(cfg.seed), console=console,
        resume=bool(cfg.resume), tensorboard=bool(cfg.tensorboard), progress=bool(cfg.progress),
        metadata=metadata or {},
    )


def build_algorithm(cfg: DictConfig, ctx: Any) -> Any:
    """The algorithm ``cfg.algorithm`` names (from the closed set of classes)."""
    from duo_cli.registry import resolve

    return resolve(cfg.algorithm._target_, "algorithm", "algorithm._target_")(cfg.algorithm, ctx)

"""Agents: the one way to build an agent policy, fresh from a config or from a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import duo_cli.catalog  # noqa: F401 - a checkpoint names classes from the filled registry
from duo_cli.checkpoint import PolicyCheckpoint, load_policy_checkpoint
from duo_cli.checks import load_params
from duo_cli.errors import CheckpointError
from duo_cli.models import build_model
from duo_cli.paths import resolve_path
from duo_cli.registry import resolve


def agent_spec(cfg: DictConfig, num_actions: int) -> dict[str, Any]:
    """What an agent checkpoint stores as ``config``: policy, model, actions, env."""
    return {
        "policy": OmegaConf.to_container(cfg.policy, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "num_actions": num_actions,
        "env": {"name": cfg.env.name, "task": cfg.env.task},
    }


def build_agent(spec: Mapping[str, Any], device: Any = "cpu", where: str | None = None) -> Any:
    """An agent policy with fresh weights, as ``spec`` (see :func:`agent_spec`) describes.

    Classes come from the closed set of :mod:`duo_cli.registry`, with only declared
    arguments; ``where`` names the spec's source in errors (a checkpoint path).
    """
    prefix = f"{where}: config." if where else ""
    model = build_model(spec["model"], where=f"{prefix}model",
                        num_actions=spec["num_actions"]).to(device)
    cls = resolve(spec["policy"]["_target_"], "policy", f"{prefix}policy._target_")
    policy = cls(model, device=device)
    policy.kind = "agent"
    policy.config = spec
    return policy


def agent_from_checkpoint(ckpt: PolicyCheckpoint, device: Any = "cpu", bf16: bool | None = None,
                          name: str = "checkpoint") -> Any:
    """The agent of an already loaded checkpoint, its weights loaded, in eval mode."""
    require_agent(ckpt, name)
    conf = ckpt.config
    spec = dict(conf)
    if bf16 is not None:
        spec["model"] = {**dict(conf["model"]), "bf16": bf16}
    policy = build_agent(spec, device, where=name)
    load_params(policy, ckpt.state_dict, name)
    policy.eval()
    policy.config = conf
    return policy


def load_agent(path: str | Path, device: Any = "cpu", bf16: bool | None = None
               ) -> tuple[Any, PolicyCheckpoint]:
    """Rebuild an agent policy from a checkpoint file; returns ``(policy, checkpoint)``."""
    ckpt = load_policy_checkpoint(resolve_path(path), map_location=device)
    return agent_from_checkpoint(ckpt, device, bf16, name=str(path)), ckpt


def require_agent(ckpt: PolicyCheckpoint, name: str) -> None:
    if ckpt.kind != "agent":
        raise CheckpointError(f"{name} is a {ckpt.kind!r} checkpoint, not an agent")

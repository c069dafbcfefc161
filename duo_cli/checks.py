"""Checks that a loaded agent or policy fits the run: env spec, weights (one-line errors)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from duo_cli.checkpoint import PolicyCheckpoint
from duo_cli.errors import CheckpointError, ConfigError, first_line, one_line
from duo_cli.registry import resolve


def load_params(policy: Any, params: dict, name: str) -> None:
    """``policy.set_params(params)``; weights that do not fit are a one-line ``CheckpointError``."""
    try:
        policy.set_params(params)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        reason = one_line(exc)
        raise CheckpointError(f"{name}: the weights do not fit the model it names ({reason})") \
            from None


def env_spec(cfg: DictConfig) -> tuple[int, tuple[int, ...]] | None:
    """``(actions, observation shape)`` from the env module's ``spec`` hook, if it has one."""
    factory = resolve(cfg.env._target_, "env", "env._target_")
    hook = getattr(inspect.getmodule(factory), "spec", None)
    return hook(cfg.env) if hook is not None else None


def check_agent(policy: Any, num_actions: int, cfg: DictConfig, name: str) -> None:
    """Refuse an agent whose action count or input does not fit the configured env."""
    spec = env_spec(cfg)
    if spec is None:
        return
    n, shape = spec
    where = f"{cfg.env.name} {cfg.env.task}"
    if int(num_actions) != n:
        raise ConfigError(f"{name} has {num_actions} actions; {where} has {n}")
    try:
        with torch.no_grad():
            out = policy.forward(torch.zeros((1, *shape), dtype=torch.uint8))
    except Exception as exc:  # noqa: BLE001 - any failure means the model cannot read the obs
        reason = first_line(exc)
        raise ConfigError(
            f"{name} cannot read {where} observations of shape {shape} ({reason})"
        ) from None
    if tuple(out.logits.shape) != (1, n):
        raise ConfigError(f"{name} outputs {tuple(out.logits.shape)[1:]} logits; {where} has {n}")


def same_model(cfg: DictConfig, ckpt: PolicyCheckpoint, name: str) -> None:
    """Refuse an agent checkpoint whose model is not the one ``cfg.model`` builds."""
    theirs = {k: v for k, v in ckpt.agent.model.items() if k != "bf16"}
    ours = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "bf16"}
    if theirs != ours:
        raise ConfigError(
            f"{name} holds model {theirs.get('name')!r} {theirs}; "
            f"this run builds {ours.get('name')!r} {ours} (choose model={theirs.get('name')})"
        )

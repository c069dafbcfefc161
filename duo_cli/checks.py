"""Checks that a loaded agent or policy fits the run: env spec, weights (one-line errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from duo_cli.config import ConfigError, first_line


def load_params(policy: Any, params: dict, name: str) -> None:
    """``policy.set_params(params)``; weights that do not fit are a one-line ``CheckpointError``."""
    from duo_cli.checkpoint import CheckpointError

    try:
        policy.set_params(params)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        reason = "; ".join(lines[:3]) if lines else repr(exc)
        raise CheckpointError(f"{name}: the weights do not fit the model it names ({reason})") \
            from None


def env_spec(cfg: DictConfig) -> tuple[int, tuple[int, ...]] | None:
    """``(actions, observation shape)`` from the env module's ``spec`` hook, if it has one."""
    import inspect

    from duo_cli.registry import resolve

    factory = resolve(cfg.env._target_, "env", "env._target_")
    hook = getattr(inspect.getmodule(factory), "spec", None)
    return hook(cfg.env) if hook is not None else None


def check_agent(policy: Any, num_actions: int, cfg: DictConfig, name: str) -> None:
    """Refuse an agent whose action count or input does not fit the configured env."""
    import torch

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


def same_model(cfg: DictConfig, ckpt: dict, name: str) -> None:
    theirs = {k: v for k, v in dict(ckpt["config"]["model"]).items() if k != "bf16"}
    ours = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "bf16"}
    if theirs != ours:
        raise ConfigError(
            f"{name} holds model {theirs.get('name')!r} {theirs}; "
            f"this run builds {ours.get('name')!r} {ours} (choose model={theirs.get('name')})"
        )


def check_resume(cfg: DictConfig, kind: str) -> None:
    """``resume=true``: the run dir's ``last.pt`` must fit this run, checked before any write."""
    from duo_cli.agents import agent_from_checkpoint
    from duo_cli.checkpoint import CheckpointError, load_policy_checkpoint

    if not (cfg.resume and cfg.run_dir):
        return
    last = Path(cfg.run_dir).expanduser() / "last.pt"
    if not last.is_file():
        return  # make_run_dir applies the rule for a dir without last.pt
    ckpt = load_policy_checkpoint(last)
    name = f"resume=true: {last}"
    if ckpt["kind"] != kind:
        raise ConfigError(f"{name} is a {ckpt['kind']} run; this is duo train --type {kind}")
    if not isinstance(ckpt.get("train_state"), dict):
        raise CheckpointError(f"{name} has no train_state to continue from")
    if kind == "agent":
        same_model(cfg, ckpt, name)
        agent = agent_from_checkpoint(ckpt, "cpu", name=str(last))
        check_agent(agent, ckpt["config"]["num_actions"], cfg, name)
        return
    theirs = ckpt["config"].get("policy")
    ours = OmegaConf.to_container(cfg.policy, resolve=True)
    method = ckpt["metadata"].get("method")
    if theirs != ours or method != cfg.algorithm.name:
        raise ConfigError(
            f"{name} was trained by {method!r} with policy {theirs}; this run is "
            f"{cfg.algorithm.name!r} with policy {ours}"
        )

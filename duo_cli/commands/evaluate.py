"""``duo eval CHECKPOINT``: score an agent or coordinator checkpoint on the splits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from duo_cli.agents import agent_from_checkpoint
from duo_cli.checkpoint import PolicyCheckpoint, load_policy_checkpoint, save_checkpoint
from duo_cli.checks import check_agent, load_params
from duo_cli.commands.common import make_base_env, setup_torch
from duo_cli.config import checkpoint_config, chosen_splits, compose
from duo_cli.coordination.problem import CoordProblem
from duo_cli.errors import ConfigError
from duo_cli.evaluation.evaluator import close_evaluators, make_evaluators
from duo_cli.paths import resolve_path
from duo_cli.rundir import make_run_dir, owns_run_dir, write_json
from duo_cli.tables import print_eval_table


@dataclass
class _Target:
    """What is scored: the policy, the evaluators of its splits, and the run's config."""

    cfg: DictConfig
    policy: Any
    evaluators: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


@owns_run_dir
def evaluate_checkpoint(cfg: DictConfig, checkpoint: str, console: Console,
                        overrides: list[str] | None = None, claim: Any = None) -> Path:
    """Score the checkpoint on the chosen splits; writes ``summary.json`` (and BP on request)."""
    path = resolve_path(checkpoint)
    ckpt = load_policy_checkpoint(path)
    kind = ckpt.kind
    prepare = {"agent": _agent_target, "coord": _coord_target}.get(kind)
    if prepare is None:
        raise ConfigError(f"{path}: unknown checkpoint kind {kind!r}; valid: agent, coord")
    target = prepare(cfg, ckpt, path, overrides)
    run_dir = make_run_dir(target.cfg, "eval", claim)  # everything checked: now write
    ev = target.cfg.evaluation
    console.print(f"[bold]evaluating[/] {path} ({kind}) on {', '.join(target.evaluators)}: "
                  f"{ev.num_episodes} episodes each")
    try:
        results = {split: e.evaluate(target.policy) for split, e in target.evaluators.items()}
    finally:
        close_evaluators(target.evaluators)
    print_eval_table(console, results, title=f"{path.name}")
    summary: dict[str, Any] = {"checkpoint": str(path), "kind": kind, **results}
    if kind == "agent" and "test" in results:
        summary["bp"] = _measured_bp(results["test"], ckpt, path, bool(ev.get("write_bp")),
                                     console)
    summary.update(target.summary)
    write_json(run_dir / "summary.json", summary)
    return run_dir


def _splits(cfg: DictConfig, default: list[str]) -> list[str]:
    splits = chosen_splits(cfg)
    return default if splits is None else splits


def _agent_target(cfg: DictConfig, ckpt: PolicyCheckpoint, path: Path, overrides) -> _Target:
    cfg = _env_of_checkpoint(cfg, ckpt, overrides)
    device = setup_torch(cfg)
    splits = _splits(cfg, list(cfg.evaluation.splits))
    policy = agent_from_checkpoint(ckpt, device, name=str(path))
    check_agent(policy, ckpt.agent.num_actions, cfg, str(path))
    evaluators = make_evaluators(cfg, splits, cfg.evaluation.num_episodes,
                                 lambda s, n: make_base_env(cfg, s, n))
    return _Target(cfg, policy, evaluators)


def _env_of_checkpoint(cfg: DictConfig, ckpt: PolicyCheckpoint, overrides) -> DictConfig:
    """Without ``env=`` / ``env.name`` / ``env.task`` on the command line, an agent is scored
    in the env its checkpoint names (e.g. a MiniGrid DoorKey agent on DoorKey)."""
    env = ckpt.agent.env or {}
    name, task = env.get("name"), env.get("task")
    given = any(o.lstrip("+~").split("=")[0] in ("env", "env.name", "env.task")
                for o in overrides or [])
    if given or not name or not task or (name, task) == (cfg.env.name, cfg.env.task):
        return cfg
    return compose([f"env={name}", f"env.task={task}", *(overrides or [])])


def _coord_target(cli_cfg: DictConfig, ckpt: PolicyCheckpoint, path: Path, overrides) -> _Target:
    cfg = checkpoint_config(cli_cfg, ckpt.metadata.run_config, str(path), overrides)
    device = setup_torch(cfg)
    splits = _splits(cfg, [s for s in cfg.evaluation.splits if s != "train"])
    problem = CoordProblem(cfg, device)
    evaluators = problem.evaluators(splits)
    policy = problem.policy(next(iter(evaluators.values())).env)
    load_params(policy, ckpt.state_dict, str(path))
    return _Target(cfg, policy, evaluators, {"selected": ckpt.metadata.selected or {}})


def _measured_bp(test: dict, ckpt: PolicyCheckpoint, path: Path, write: bool,
                 console: Console) -> float:
    """BP = test reward per step; with ``write``, stored in the checkpoint's metadata."""
    bp = test["reward_mean"] / test["episode_length_mean"]
    console.print(f"BP (test reward per step): {bp:.5f}")
    if not write:
        return bp
    if not bp > 0:
        raise ConfigError(
            f"measured BP {bp:.4g} is not positive (test reward "
            f"{test['reward_mean']:.3g}); not written into {path}"
        )
    ckpt.metadata = dataclasses.replace(ckpt.metadata, bp=bp, bp_source=(
        f"test split, {test['episodes']} episodes: reward {test['reward_mean']:.4f} / "
        f"length {test['episode_length_mean']:.2f}"))
    save_checkpoint(path, ckpt.payload())
    console.print(f"wrote BP into {path}")
    return bp

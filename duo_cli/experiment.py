"""What the commands do, given a composed config (the CLI only parses argv)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from duo_cli.checks import (  # noqa: F401 (re-exported)
    check_agent,
    check_resume,
    coord_eval_config,
    env_spec,
    load_params,
    same_model,
)
from duo_cli.config import ConfigError, chosen_splits, resolve_path
from duo_cli.run import make_run_dir, owns_run_dir

logger = logging.getLogger(__name__)


def setup_torch(cfg: DictConfig):
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
    policy = resolve(cfg.policy._target_, "policy", "policy._target_")(model, device=device)
    policy.kind = "agent"
    policy.config = {
        "policy": OmegaConf.to_container(cfg.policy, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "num_actions": num_actions,
        "env": {"name": cfg.env.name, "task": cfg.env.task},
    }
    return policy


def make_untrained_agents(directory: str | Path, task: str, hidden_dim: int = 32,
                          bp: float = 0.1) -> dict[str, Path]:
    """Save randomly initialised small-CNN agents (sim_novice, novice, expert) with a BP.

    Real checkpoints for tests and benchmarks that need the coordination pipeline
    end to end without trained agents.
    """
    import torch

    from duo_cli.checkpoint import save_policy

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
            policy = build_agent(cfg, 15, "cpu")
            paths[role] = Path(save_policy(Path(directory) / f"{role}.pt", policy,
                                           {"bp": bp, "role": role}))
    return paths


def load_agent(path: str | Path, device="cpu", bf16: bool | None = None) -> tuple[Any, dict]:
    """Rebuild an agent policy from a checkpoint file; returns ``(policy, checkpoint)``."""
    from duo_cli.checkpoint import load_policy_checkpoint

    ckpt = load_policy_checkpoint(resolve_path(path), map_location=device)
    return agent_from_checkpoint(ckpt, device, bf16, name=str(path)), ckpt


def agent_from_checkpoint(ckpt: dict, device="cpu", bf16: bool | None = None,
                          name: str = "checkpoint") -> Any:
    """Rebuild an agent policy from an already loaded checkpoint."""
    from duo_cli.models import build_model
    from duo_cli.registry import resolve

    _require_agent(ckpt, name)
    conf = ckpt["config"]
    model_cfg = dict(conf["model"])
    if bf16 is not None:
        model_cfg["bf16"] = bf16
    # classes named in the file come from the closed set, with only declared arguments
    model = build_model(model_cfg, where=f"{name}: config.model",
                        num_actions=conf["num_actions"]).to(device)
    cls = resolve(conf["policy"]["_target_"], "policy", f"{name}: config.policy._target_")
    policy = cls(model, device=device)
    load_params(policy, ckpt["state_dict"], name)
    policy.eval()
    policy.kind = "agent"
    policy.config = conf
    return policy


def _require_agent(ckpt: dict, name: str) -> None:
    from duo_cli.checkpoint import CheckpointError

    if ckpt.get("kind") != "agent":
        raise CheckpointError(f"{name} is a {ckpt.get('kind')!r} checkpoint, not an agent")


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


@owns_run_dir
def train_agent(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """``duo train --type agent``: PPO on the train split, periodic held-out evaluation."""
    from duo_cli.registry import resolve
    from duo_cli.run import write_json, write_text

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
    policy = build_agent(cfg, int(env.single_action_space.n), device)
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
            "path": str(path), "global_step": ckpt.get("metadata", {}).get("global_step"),
        }
    ctx = _context(cfg, run_dir, console, device, metadata)
    if init is not None and ctx.resume_checkpoint is None:  # on resume, last.pt's weights win
        policy.set_params(init[1]["state_dict"])
        console.print(f"weights initialised from {init[0]}")
    algorithm = resolve(cfg.algorithm._target_, "algorithm", "algorithm._target_")(cfg.algorithm, ctx)
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


_POOL_KEYS = ("start_level", "num_levels", "seed")


def _difficulty(split_cfg: DictConfig) -> str:
    """The split's difficulty settings (e.g. Procgen's distribution_mode, MiniGrid's variant)."""
    return ", ".join(str(v) for k, v in split_cfg.items() if k not in _POOL_KEYS)


def _init_checkpoint(cfg: DictConfig) -> tuple[Path, dict] | None:
    """Load ``algorithm.init_from`` (an agent checkpoint to fine-tune), checking its model."""
    from duo_cli.checkpoint import load_policy_checkpoint

    init_from = cfg.algorithm.get("init_from")
    if not init_from:
        return None
    path = resolve_path(init_from)
    ckpt = load_policy_checkpoint(path)
    name = f"algorithm.init_from={init_from}"
    _require_agent(ckpt, name)
    same_model(cfg, ckpt, name)
    agent = agent_from_checkpoint(ckpt, "cpu", name=name)  # the weights fit the model
    check_agent(agent, ckpt["config"]["num_actions"], cfg, name)
    return path, ckpt


# -- coordination ----------------------------------------------------------------------

#: which agents play novice and expert on each split (YRC-0 simulated validation)
ROLES = {
    "train": ("sim_novice", "novice"),
    "val_sim": ("sim_novice", "novice"),
    "val_true": ("novice", "expert"),
    "test": ("novice", "expert"),
}


def base_penalty(cfg: DictConfig, expert_ckpt: dict) -> float:
    """BP: ``coordination.base_penalty`` if set, else the expert checkpoint's measured value."""
    if cfg.coordination.base_penalty is not None:
        bp = float(cfg.coordination.base_penalty)
        if not math.isfinite(bp) or bp <= 0:
            raise ConfigError(f"coordination.base_penalty must be positive, got {bp}")
        return bp
    bp = expert_ckpt.get("metadata", {}).get("bp")
    if bp is None or not math.isfinite(float(bp)) or float(bp) <= 0:
        raise ConfigError(
            f"expert checkpoint {cfg.agents.expert} has no positive measured BP ({bp}); run "
            f"`duo eval {cfg.agents.expert} evaluation.write_bp=true` or set "
            "coordination.base_penalty=<value>"
        )
    return float(bp)


class CoordSetup:
    """Loads the agents once and builds CoordEnvs per split."""

    def __init__(self, cfg: DictConfig, device):
        self.cfg, self.device = cfg, device
        self.agents: dict[str, Any] = {}
        self.ckpts: dict[str, dict] = {}
        for role in ("sim_novice", "novice", "expert"):
            self.agents[role], self.ckpts[role] = load_agent(cfg.agents[role], device)
            check_agent(self.agents[role], self.ckpts[role]["config"]["num_actions"], cfg,
                        f"agents.{role}={cfg.agents[role]}")
        self.bp = base_penalty(cfg, self.ckpts["expert"])

    def env(self, split: str, num_envs: int, skyline: bool = False):
        """CoordEnv of ``split``; ``skyline`` trains on the test distribution with the real agents."""
        from duo_cli.coord_env import CoordEnv
        from duo_cli.envs import make_env

        cfg = self.cfg
        if skyline and split == "train":
            # the train pool's levels at the test split's difficulty (distribution_mode, variant)
            env_cfg = OmegaConf.merge(cfg.env, {"train": {
                k: v for k, v in cfg.env.test.items() if k not in _POOL_KEYS}})
            base = make_env(env_cfg, "train", num_envs)
            novice, expert = "novice", "expert"
        else:
            base = make_base_env(cfg, split, num_envs)
            novice, expert = ROLES[split]
        co = cfg.coordination
        env = CoordEnv(
            base, self.agents[novice], self.agents[expert],
            expert_query_cost_weight=co.expert_query_cost_weight,
            switch_agent_cost_weight=co.switch_agent_cost_weight,
            temperature=co.temperature, open_expert=co.open_expert,
            cost_decimals=co.get("cost_decimals"),
        )
        env.set_costs(self.bp)
        return env


def build_coord_policy(cfg: DictConfig, env, device):
    from duo_cli.registry import resolve

    cls = resolve(cfg.policy._target_, "policy", "policy._target_")
    return cls(cfg.policy, env, device=device, seed=int(cfg.seed))


def _coord_metadata(cfg: DictConfig, setup: CoordSetup) -> dict:
    return {
        "command": "duo train --type coord",
        "method": cfg.algorithm.name,
        "bp": setup.bp,
        "run_config": OmegaConf.to_container(cfg, resolve=True),
    }


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if not isinstance(v, list)}


@owns_run_dir
def train_coord(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """``duo train --type coord``: fit/select a coordinator, then score the selection on test."""
    if cfg.coordination.get("alphas") is not None:
        from duo_cli.alpha_grid import train_coord_grid

        return train_coord_grid(cfg, console, claim)
    from duo_cli.checkpoint import load_checkpoint
    from duo_cli.registry import resolve
    from duo_cli.run import write_json, write_text
    from duo_cli.tables import print_eval_table

    device = setup_torch(cfg)
    setup = CoordSetup(cfg, device)  # checks agents and BP before anything is written
    check_resume(cfg, "coord")
    run_dir = make_run_dir(cfg, "coord", claim)
    skyline = bool(cfg.algorithm.get("skyline", False))
    selection = "val_true" if skyline else cfg.coordination.selection_split
    console.print(
        f"[bold]coordination[/] {cfg.algorithm.name} on {cfg.env.task}: "
        f"alpha={cfg.coordination.expert_query_cost_weight} "
        f"beta={cfg.coordination.switch_agent_cost_weight} BP={setup.bp:.4g}; "
        f"selecting on {selection}; run dir {run_dir}"
    )
    ev_cfg = cfg.evaluation
    train_env = setup.env("train", int(cfg.env.num_envs), skyline=skyline)
    evaluators = make_evaluators(
        cfg, [selection], ev_cfg.num_episodes, lambda s, n: setup.env(s, n)
    )
    policy = build_coord_policy(cfg, train_env, device)
    if cfg.resume and (run_dir / "last.pt").is_file():  # its weights must fit, before any write
        load_params(policy, load_checkpoint(run_dir / "last.pt")["state_dict"],
                    str(run_dir / "last.pt"))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    ctx = _context(cfg, run_dir, console, device, _coord_metadata(cfg, setup))
    algorithm = resolve(cfg.algorithm._target_, "algorithm", "algorithm._target_")(cfg.algorithm, ctx)
    t0 = time.time()
    try:
        train_result = algorithm.train(policy, train_env, evaluators)
        train_env.close()
        best = load_checkpoint(run_dir / f"best_{selection}.pt", map_location=device)
        policy.set_params(best["state_dict"])
        test = make_evaluators(cfg, ["test"], ev_cfg.num_episodes, lambda s, n: setup.env(s, n))
        results = {selection: evaluators[selection].evaluate(policy)}
        results["test"] = test["test"].evaluate(policy)
        test["test"].env.close()
    finally:
        for ev in evaluators.values():
            ev.env.close()
        ctx.close()
    print_eval_table(console, results, title=f"{cfg.algorithm.name}: selected on {selection}")
    selected = best["metadata"].get("selected", {})
    summary = {
        "method": cfg.algorithm.name,
        "task": cfg.env.task,
        "alpha": float(cfg.coordination.expert_query_cost_weight),
        "beta": float(cfg.coordination.switch_agent_cost_weight),
        "bp": setup.bp,
        "seed": int(cfg.seed),
        "selection_split": selection,
        "selected": selected,
        "checkpoint": str(run_dir / f"best_{selection}.pt"),
        "wall_time_s": time.time() - t0,
        "eval_num_envs": evaluators[selection].env.num_envs,
        selection: _strip(results[selection]),
        "test": results["test"],
        "train": {k: v for k, v in train_result.items() if k != "candidates"},
    }
    write_json(run_dir / "summary.json", summary)
    return run_dir


# -- evaluation ------------------------------------------------------------------------


@owns_run_dir
def evaluate_checkpoint(cfg: DictConfig, checkpoint: str, console: Console,
                        overrides: list[str] | None = None, claim: Any = None) -> Path:
    """``duo eval CHECKPOINT``: score an agent or coordinator checkpoint on the splits."""
    from duo_cli.checkpoint import load_policy_checkpoint
    from duo_cli.run import write_json
    from duo_cli.tables import print_eval_table

    path = resolve_path(checkpoint)
    ckpt = load_policy_checkpoint(path)
    kind = ckpt.get("kind")
    if kind == "coord":
        cfg = coord_eval_config(cfg, ckpt, path, overrides)
    device = setup_torch(cfg)
    ev = cfg.evaluation
    splits = chosen_splits(cfg)
    if splits is None:
        splits = list(ev.splits) if kind == "agent" else [s for s in ev.splits if s != "train"]
    if kind == "agent":
        policy = agent_from_checkpoint(ckpt, device, name=str(path))
        check_agent(policy, ckpt["config"]["num_actions"], cfg, str(path))
        evaluators = make_evaluators(cfg, splits, ev.num_episodes,
                                     lambda s, n: make_base_env(cfg, s, n))
    elif kind == "coord":
        setup = CoordSetup(cfg, device)
        evaluators = make_evaluators(cfg, splits, ev.num_episodes, lambda s, n: setup.env(s, n))
        policy = build_coord_policy(cfg, next(iter(evaluators.values())).env, device)
        load_params(policy, ckpt["state_dict"], str(path))
    else:
        raise ConfigError(f"{path}: unknown checkpoint kind {kind!r}; valid: agent, coord")
    run_dir = make_run_dir(cfg, "eval", claim)  # everything checked: now write
    console.print(f"[bold]evaluating[/] {path} ({kind}) on {', '.join(splits)}: "
                  f"{ev.num_episodes} episodes each")
    results = {}
    try:
        for split, evaluator in evaluators.items():
            results[split] = evaluator.evaluate(policy)
    finally:
        for evaluator in evaluators.values():
            evaluator.env.close()
    print_eval_table(console, results, title=f"{path.name}")
    summary: dict[str, Any] = {"checkpoint": str(path), "kind": kind, **results}
    if kind == "agent" and "test" in results:
        t = results["test"]
        summary["bp"] = t["reward_mean"] / t["episode_length_mean"]
        console.print(f"BP (test reward per step): {summary['bp']:.5f}")
        if ev.get("write_bp"):
            from duo_cli.checkpoint import save_checkpoint

            if not summary["bp"] > 0:
                raise ConfigError(
                    f"measured BP {summary['bp']:.4g} is not positive (test reward "
                    f"{t['reward_mean']:.3g}); not written into {path}"
                )

            ckpt["metadata"]["bp"] = summary["bp"]
            ckpt["metadata"]["bp_source"] = (
                f"test split, {t['episodes']} episodes: reward {t['reward_mean']:.4f} / "
                f"length {t['episode_length_mean']:.2f}"
            )
            ckpt.pop("format", None)
            save_checkpoint(path, ckpt)
            console.print(f"wrote BP into {path}")
    if kind == "coord":
        summary["selected"] = ckpt["metadata"].get("selected", {})
    write_json(run_dir / "summary.json", summary)
    return run_dir

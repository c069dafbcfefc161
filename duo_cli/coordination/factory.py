"""The coordination setting: the YRC-0 roles, BP, and the factory of CoordEnvs per split."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from duo_cli.config import ConfigError

#: which agents play novice and expert on each split (YRC-0 simulated validation)
ROLES = {
    "train": ("sim_novice", "novice"),
    "val_sim": ("sim_novice", "novice"),
    "val_true": ("novice", "expert"),
    "test": ("novice", "expert"),
}
#: a split's level pool; its other keys set its difficulty (distribution_mode, variant)
POOL_KEYS = ("start_level", "num_levels", "seed")


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


class CoordEnvFactory:
    """Loads the three agents once (checked against the env) and builds CoordEnvs per split.

    ``coordination.train_setting`` chooses the train split's setting: ``sim`` (YRC-0:
    sim_novice and novice at the train difficulty) or ``test`` (the skyline: novice and
    expert on the train pool's levels at the test difficulty).
    """

    def __init__(self, cfg: DictConfig, device: Any):
        from duo_cli.agents import load_agent
        from duo_cli.checks import check_agent

        self.cfg, self.device = cfg, device
        self.agents: dict[str, Any] = {}
        self.ckpts: dict[str, dict] = {}
        for role in ("sim_novice", "novice", "expert"):
            self.agents[role], self.ckpts[role] = load_agent(cfg.agents[role], device)
            check_agent(self.agents[role], self.ckpts[role]["config"]["num_actions"], cfg,
                        f"agents.{role}={cfg.agents[role]}")
        self.bp = base_penalty(cfg, self.ckpts["expert"])

    def env(self, split: str, num_envs: int):
        """The CoordEnv of ``split`` with ``num_envs`` envs, its costs set from BP."""
        from duo_cli.coordination.env import CoordEnv
        from duo_cli.envs import make_env

        cfg, co = self.cfg, self.cfg.coordination
        env_cfg, (novice, expert) = cfg.env, ROLES[split]
        if split == "train" and co.get("train_setting") == "test":
            env_cfg = OmegaConf.merge(cfg.env, {"train": {
                k: v for k, v in cfg.env.test.items() if k not in POOL_KEYS}})
            novice, expert = ROLES["test"]
        env = CoordEnv(
            make_env(env_cfg, split, num_envs), self.agents[novice], self.agents[expert],
            expert_query_cost_weight=co.expert_query_cost_weight,
            switch_agent_cost_weight=co.switch_agent_cost_weight,
            temperature=co.temperature, open_expert=co.open_expert,
            cost_decimals=co.get("cost_decimals"),
        )
        env.set_costs(self.bp)
        return env


def build_coord_policy(cfg: DictConfig, env: Any, device: Any) -> Any:
    """The coordinator policy ``cfg.policy`` names, sized for ``env``'s observations."""
    from duo_cli.registry import resolve

    cls = resolve(cfg.policy._target_, "policy", "policy._target_")
    return cls(cfg.policy, env, device=device, seed=int(cfg.seed))

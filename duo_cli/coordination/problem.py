"""The coordination problem one config poses, built once: agents, BP, costs, envs, evaluators.

A command builds one :class:`CoordProblem` from a checked config and hands it on:
``duo train --type coord`` (and a sweep's jobs) to the algorithm, ``duo eval`` to the
evaluators, ``duo serve`` to the served coordinator.  It loads the three agents once
(checked against the env), takes BP from the expert checkpoint (or the config), and
from them builds the CoordEnv of any split with the YRC-0 roles, the evaluators of a
list of splits, and the coordinator policy the config names.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from duo_cli.agents import load_agent
from duo_cli.checkpoint import PolicyCheckpoint
from duo_cli.checks import check_agent
from duo_cli.coordination.env import CoordEnv
from duo_cli.envs import make_env
from duo_cli.errors import ConfigError
from duo_cli.evaluation.evaluator import Evaluator, make_evaluators
from duo_cli.registry import resolve

#: which agents play novice and expert on each split (YRC-0 simulated validation)
ROLES = {
    "train": ("sim_novice", "novice"),
    "val_sim": ("sim_novice", "novice"),
    "val_true": ("novice", "expert"),
    "test": ("novice", "expert"),
}
#: a split's level pool; its other keys set its difficulty (distribution_mode, variant)
POOL_KEYS = ("start_level", "num_levels", "seed")


def base_penalty(cfg: DictConfig, expert_ckpt: PolicyCheckpoint) -> float:
    """BP: ``coordination.base_penalty`` if set, else the expert checkpoint's measured value."""
    if cfg.coordination.base_penalty is not None:
        return float(cfg.coordination.base_penalty)  # checked > 0 at compose time
    bp = expert_ckpt.metadata.bp
    if bp is None or not math.isfinite(bp) or bp <= 0:
        raise ConfigError(
            f"expert checkpoint {cfg.agents.expert} has no positive measured BP ({bp}); run "
            f"`duo eval {cfg.agents.expert} evaluation.write_bp=true` or set "
            "coordination.base_penalty=<value>"
        )
    return float(bp)


class CoordProblem:
    """The agents of a coordination config, its BP and costs; CoordEnvs and evaluators per split.

    ``coordination.train_setting`` chooses the train split's setting: ``sim`` (YRC-0:
    sim_novice and novice at the train difficulty) or ``test`` (the skyline: novice and
    expert on the train pool's levels at the test difficulty).

    :param cfg: a checked coordination config.
    :param device: where the agents (and the coordinator) run.
    """

    def __init__(self, cfg: DictConfig, device: Any):
        self.cfg, self.device = cfg, device
        self.agents: dict[str, Any] = {}
        self.ckpts: dict[str, PolicyCheckpoint] = {}
        for role in ("sim_novice", "novice", "expert"):
            self.agents[role], self.ckpts[role] = load_agent(cfg.agents[role], device)
            check_agent(self.agents[role], self.ckpts[role].agent.num_actions, cfg,
                        f"agents.{role}={cfg.agents[role]}")
        self.bp = base_penalty(cfg, self.ckpts["expert"])
        co = cfg.coordination
        self.alpha = float(co.expert_query_cost_weight)
        self.beta = float(co.switch_agent_cost_weight)
        self.algorithm_class = resolve(cfg.algorithm._target_, "algorithm", "algorithm._target_")

    @property
    def method(self) -> str:
        return str(self.cfg.algorithm.name)

    def env(self, split: str, num_envs: int | None = None) -> CoordEnv:
        """The CoordEnv of ``split`` (``env.num_envs`` envs by default), its costs set from BP."""
        cfg, co = self.cfg, self.cfg.coordination
        env_cfg, (novice, expert) = cfg.env, ROLES[split]
        if split == "train" and co.get("train_setting") == "test":
            env_cfg = OmegaConf.merge(cfg.env, {"train": {
                k: v for k, v in cfg.env.test.items() if k not in POOL_KEYS}})
            novice, expert = ROLES["test"]
        env = CoordEnv(
            make_env(env_cfg, split, int(num_envs or cfg.env.num_envs)),
            self.agents[novice], self.agents[expert],
            expert_query_cost_weight=co.expert_query_cost_weight,
            switch_agent_cost_weight=co.switch_agent_cost_weight,
            temperature=co.temperature, open_expert=co.open_expert,
            cost_decimals=co.get("cost_decimals"),
        )
        env.set_costs(self.bp)
        return env

    def evaluators(self, splits: list[str], num_episodes: int | None = None
                   ) -> dict[str, Evaluator]:
        """split -> Evaluator over that split's CoordEnv (``evaluation.num_episodes`` each)."""
        n = int(num_episodes or self.cfg.evaluation.num_episodes)
        return make_evaluators(self.cfg, splits, n, self.env)

    def policy(self, env: Any) -> Any:
        """The coordinator policy ``cfg.policy`` names, sized for ``env``'s observations."""
        cls = resolve(self.cfg.policy._target_, "policy", "policy._target_")
        return cls(self.cfg.policy, env, device=self.device, seed=int(self.cfg.seed))

    def algorithm(self, ctx: Any) -> Any:
        """The algorithm ``cfg.algorithm`` names, with its settings and the run's context."""
        return self.algorithm_class(self.cfg.algorithm, ctx)

    def checkpoint_metadata(self) -> dict[str, Any]:
        """What every coordinator checkpoint of this problem stores: the method, BP and the
        whole setting (``run_config``, rebuilt by :func:`duo_cli.config.checkpoint_config`)."""
        return {"command": "duo train --type coord", "method": self.method, "bp": self.bp,
                "run_config": OmegaConf.to_container(self.cfg, resolve=True)}

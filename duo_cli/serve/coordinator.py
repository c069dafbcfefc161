"""A coordinator checkpoint rebuilt for serving, and the batched step it answers ``act`` with.

Per-step semantics are CoordEnv's, run by the same code
(:class:`duo_cli.coordination.step.AgentStep`): the novice runs once per observation (its
logits and hidden features are the coordinator's observation and its sampled action is the
novice's action); the expert runs only on the rows whose coordinator chose it (on every row
with ``coordination.open_expert``); the coordinator acts on the CoordEnv observation dict.
Each decision carries the coordinator's p(expert)
(:meth:`~duo_cli.policies.coord.CoordPolicy.choice_probs`): a stateless coordinator's choice
is drawn from it (one forward), a stateful one's by its own ``act`` after it was asked.
This module is the only place in :mod:`duo_cli.serve` that imports duo's coordination
setup (:mod:`duo_cli.coordination.problem`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from duo_cli.checkpoint import PolicyCheckpoint
from duo_cli.coordination.problem import CoordProblem
from duo_cli.coordination.step import EXPERT, NOVICE, AgentStep
from duo_cli.groups import ServeSettings
from duo_cli.rundir import make_run_dir

logger = logging.getLogger(__name__)


def new_run_dir(cfg: DictConfig) -> Path:
    return make_run_dir(cfg, "serve")


@dataclass
class Decision:
    """The answer to one ``act``: who acts, the base actions, p(expert) and the weights' version."""

    actor: int
    action: int | None
    novice_action: int
    p_expert: float
    version: str
    #: with ``serve.learn=true``: the behaviour log-probability of the choice, the value and
    #: the coordinator's observation row (what the learner keeps)
    logprob: float | None = None
    value: float | None = None
    #: updates applied to the weights that chose (``model_updates`` of the answer)
    updates: int = 0
    coord_obs: dict[str, np.ndarray] | None = None


class ServedCoordinator:
    """Novice, expert and coordinator policy of a checkpoint, answering batches of steps.

    :param problem: the coordination problem of the checkpoint's setting (with ``serve``).
    :param ckpt: the loaded coordinator checkpoint.
    :param path: where it was loaded from (reported by ``/v1/health``).
    :param settings: the checked ``serve`` settings.
    """

    def __init__(self, problem: CoordProblem, ckpt: PolicyCheckpoint, path: Path,
                 settings: ServeSettings):
        cfg = problem.cfg
        self.device = problem.device
        env = problem.env("test", 1)  # spaces, agents and costs; no game is started
        self.novice, self.expert = env.novice, env.expert
        for agent in (self.novice, self.expert):
            agent.eval()
            if settings.bf16 is not None and hasattr(agent.model, "bf16"):
                agent.model.bf16 = settings.bf16  # a deployment trade-off; changes numerics
        self.observation_space = env.base_env.single_observation_space
        self.num_actions = int(env.base_env.single_action_space.n)
        self.open_expert = bool(env.open_expert)
        self.alpha = float(cfg.coordination.expert_query_cost_weight)
        self.beta = float(cfg.coordination.switch_agent_cost_weight)
        self.bp = float(problem.bp)
        self.expert_cost = float(env.expert_query_cost_per_action)
        self.switch_cost = float(env.switch_agent_cost_per_action)
        self.agent_temperature = float(cfg.coordination.temperature)
        temp = settings.temperature
        self.temperature = float(cfg.evaluation.temperature if temp is None else temp)
        policy = problem.policy(env)
        policy.set_params(ckpt.state_dict)
        policy.eval()
        env.close()
        self.policy = policy
        #: stateful policies (e.g. ask_every_k's step counter) get one copy per episode
        self.stateful = bool(policy.stateful)
        self.method = str(ckpt.metadata.method or cfg.algorithm.name)
        self.path = path
        #: the weights' version: the checkpoint's digest, ``+N`` after N updates (learning)
        self.base_version = self.version = _file_digest(path)
        #: with ``serve.learn=true``: samples the choices and learns (see :meth:`learn_with`)
        self.learner: Any = None
        #: draws the choices of stateless coordinators from their p(expert)
        self.rng = np.random.default_rng(int(cfg.seed))
        #: the agents' per-step work (stateless: shared by every decide call)
        self.agents = AgentStep(self.novice, self.expert, self.agent_temperature,
                                self.open_expert, self.device)

    def learn_with(self, learner: Any, base_version: str | None = None) -> None:
        """Sample the choices with ``learner`` and report its weights' version from now on."""
        self.learner = learner
        if base_version is not None:
            self.base_version = base_version
        self.updated()

    def updated(self) -> None:
        """The learner's weights changed: the version names them."""
        n = self.learner.version
        self.version = self.base_version if n == 0 else f"{self.base_version}+{n}"

    @property
    def updates(self) -> int:
        """Updates applied to the served weights (0 without learning)."""
        return 0 if self.learner is None else int(self.learner.version)

    def episode_policy(self) -> Any | None:
        """The per-episode copy of a stateful coordinator (``None``: the shared one serves)."""
        if not self.stateful:
            return None
        policy = copy.deepcopy(self.policy)
        policy.reset(np.ones(1, dtype=bool))
        return policy

    @torch.no_grad()
    def decide(self, obs: list[np.ndarray], policies: list[Any | None],
               external: list[bool]) -> list[Decision]:
        """One step of ``len(obs)`` episodes: one novice forward, the expert on its rows only.

        :param obs: one base observation per episode.
        :param policies: per-episode coordinator copies (``None`` = the shared policy).
        :param external: rows whose expert is the application (no expert forward there).
        """
        agents = self.agents
        observed = agents.observe(np.stack(obs))
        if self.learner is None:
            actor, p_expert = self._choose(observed.obs, policies)
        else:  # PPO's sampling: the choice, its log-probability and the value, one forward
            actor, p_expert, logprob, value = self.learner.choose(observed.obs)
        ext = np.asarray(external, dtype=bool)
        action = agents.base_actions(observed, actor, skip=ext)
        out = [
            Decision(int(actor[i]), None if (ext[i] and actor[i] == EXPERT) else int(action[i]),
                     int(observed.novice_action[i]), float(p_expert[i]), self.version)
            for i in range(len(obs))
        ]
        if self.learner is not None:
            for i, d in enumerate(out):
                d.logprob, d.value = float(logprob[i]), float(value[i])
                d.updates = self.updates
                d.coord_obs = {k: v[i] for k, v in observed.obs.items()}
        return out

    def _choose(self, coord_obs: dict[str, np.ndarray], policies: list[Any | None]
                ) -> tuple[np.ndarray, np.ndarray]:
        """The coordinator's choice and p(expert) per row: shared rows in one call (the choice
        drawn from p), own copies row by row (asked, then ``act`` advances their state)."""
        n, temp = len(policies), self.temperature
        own = [i for i, p in enumerate(policies) if p is not None]
        actor = np.zeros(n, dtype=np.int64)
        p_expert = np.zeros(n, dtype=np.float64)
        shared = [i for i in range(n) if policies[i] is None]
        if shared:
            sub = coord_obs if len(shared) == n else {k: v[shared] for k, v in coord_obs.items()}
            p = np.asarray(self.policy.choice_probs(sub, temp), dtype=np.float64)
            p_expert[shared] = p
            actor[shared] = np.where(self.rng.random(len(shared)) < p, EXPERT, NOVICE)
        for i in own:
            row = {k: v[i:i + 1] for k, v in coord_obs.items()}
            p_expert[i] = float(np.asarray(policies[i].choice_probs(row, temp))[0])
            actor[i] = int(_as_numpy(policies[i].act(row, temp))[0])
        if ((actor != NOVICE) & (actor != EXPERT)).any():
            raise RuntimeError(f"coordinator returned actions other than 0/1: {actor}")
        chosen = np.where(actor == EXPERT, p_expert, 1.0 - p_expert)
        if not (np.isfinite(p_expert).all() and (p_expert >= 0).all() and (p_expert <= 1).all()
                and (chosen > 0).all()):
            raise RuntimeError(f"coordinator's choices {actor} disagree with its p(expert) "
                               f"{p_expert}")
        return actor, p_expert


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]

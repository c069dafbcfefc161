"""CoordEnv: the POMDP a coordinator sees.

At each step the coordinator picks, per env row, who acts in the base env:
``NOVICE`` (0) or ``EXPERT`` (1).  The reward is::

    base_reward - 1{expert} * alpha * BP - 1{switch} * beta * BP

where BP is the base per-step penalty (:meth:`CoordEnv.set_costs`) and a
switch is a change of acting agent between two steps of the same episode
(the first step of an episode is never a switch).

The novice runs exactly once per step: its logits and hidden features make
the coordinator's next observation *and* the novice's next action.  The
expert runs only on the rows that query it (on all rows with ``open_expert``).
These rules are written once, in :mod:`duo_cli.coordination.step` (shared with
``duo serve``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from duo_cli.coordination.step import (
    EXPERT,
    NOVICE,
    AgentStep,
    EpisodeSums,
    Observed,
    charge,
    step_costs,
)

__all__ = ["EXPERT", "NOVICE", "CoordEnv", "GeneralCoordEnv", "step_costs"]


class CoordEnv(VectorEnv):
    """Coordination env over a vector base env, a novice and an expert (stateless agents).

    The per-step rules are :mod:`duo_cli.coordination.step`'s: :class:`AgentStep` runs the
    agents, :func:`charge` prices the step, :class:`EpisodeSums` sums the episodes.  When
    episodes end, ``info["episode"]`` holds, on their rows, ``r`` (return), ``base_r``
    (base return), ``l`` (length), ``expert_steps`` and ``switches``.

    :param base_env: a gymnasium vector env (SAME_STEP autoreset, e.g. Procgen).
    :param novice: an agent policy with ``forward(obs) -> ModelOutput`` and ``model``.
    :param expert: the same, for the expert.
    :param expert_query_cost_weight: alpha.
    :param switch_agent_cost_weight: beta.
    :param temperature: sampling temperature of both agents (0 = greedy).
    :param open_expert: also expose ``expert_hidden`` / ``expert_logits``.
    :param cost_decimals: round the per-step costs to this many decimals (the
        benchmark's protocol rounds to 2); ``None`` keeps them exact.
    """

    NOVICE = NOVICE
    EXPERT = EXPERT
    #: declared to the Evaluator: ``info["episode"]`` carries the coordination sums
    #: (``base_r``, ``expert_steps``, ``switches``) of every ended episode
    reports_coordination = True
    #: declared to the Evaluator: :meth:`limit_episodes` idles the rows that have played
    #: their quota (no agent forward on them)
    limits_episodes = True
    #: run the expert on every row at every step (recurrent agents)
    expert_every_row = False
    #: the agents keep per-row state: both run on every row at every step, idle rows too
    recurrent_agents = False
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        base_env: Any,
        novice: Any,
        expert: Any,
        expert_query_cost_weight: float = 0.4,
        switch_agent_cost_weight: float = 0.0,
        temperature: float = 1.0,
        open_expert: bool = False,
        cost_decimals: int | None = None,
    ) -> None:
        self.base_env = base_env
        self.cost_decimals = cost_decimals
        self.novice = novice
        self.expert = expert
        self.expert_query_cost_weight = float(expert_query_cost_weight)
        self.switch_agent_cost_weight = float(switch_agent_cost_weight)
        self.temperature = float(temperature)
        self.open_expert = bool(open_expert)
        self.num_envs = base_env.num_envs
        self.device = getattr(novice, "device", torch.device("cpu"))
        self.agents = AgentStep(novice, expert, self.temperature, self.open_expert, self.device,
                                expert_every_row=self.expert_every_row,
                                recurrent=self.recurrent_agents)

        spaces = {
            "base_obs": base_env.single_observation_space,
            "novice_hidden": _box(novice.model.hidden_dim),
            "novice_logits": _box(novice.model.logit_dim),
        }
        if self.open_expert:
            spaces["expert_hidden"] = _box(expert.model.hidden_dim)
            spaces["expert_logits"] = _box(expert.model.logit_dim)
        self.single_observation_space = gym.spaces.Dict(spaces)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.single_action_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.MultiDiscrete(np.full(self.num_envs, 2))

        self.expert_query_cost_per_action: float | None = None
        self.switch_agent_cost_per_action: float | None = None
        self.base_penalty: float | None = None

        self._episodes = EpisodeSums(self.num_envs)
        self._base_action = np.zeros(self.num_envs, dtype=np.int64)
        self._observed: Observed | None = None
        self._obs: dict[str, np.ndarray] = {}
        self._limit: int | None = None
        self._played = np.zeros(self.num_envs, dtype=np.int64)
        self._active: np.ndarray | None = None

    # -- episode quota -----------------------------------------------------------------
    def limit_episodes(self, per_row: int | None) -> None:
        """From the next :meth:`reset`, each row plays ``per_row`` episodes, then idles.

        An idle row counts as NOVICE whatever the coordinator chose, the base env gets
        ``IDLE_ACTION`` there (which changes no other row's levels) and, unless the agents
        are recurrent, it costs no agent forward and its features are zeros.  ``None``
        lifts the limit.
        """
        if per_row is not None and int(per_row) < 1:
            raise ValueError(f"episodes per row must be >= 1 or None, got {per_row!r}")
        self._limit = None if per_row is None else int(per_row)
        self._active = None

    @property
    def active_rows(self) -> np.ndarray | None:
        """Rows still playing their quota (a boolean mask), ``None`` without a limit."""
        return None if self._active is None else self._active.copy()

    # -- costs -------------------------------------------------------------------------
    def set_costs(self, base_penalty: float) -> None:
        """Set BP: expert steps cost ``alpha * BP``, switches ``beta * BP``."""
        try:
            bp = float(base_penalty)
        except (TypeError, ValueError):
            raise ValueError(f"base penalty must be a positive number, got {base_penalty!r}") from None
        if not math.isfinite(bp) or bp <= 0:
            raise ValueError(f"base penalty must be positive and finite, got {base_penalty!r}")
        self.base_penalty = bp
        self.expert_query_cost_per_action, self.switch_agent_cost_per_action = step_costs(
            bp, self.expert_query_cost_weight, self.switch_agent_cost_weight, self.cost_decimals
        )

    # -- gymnasium API -----------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        base_obs, info = self.base_env.reset(seed=seed, options=options)
        self.agents.eval()
        self.agents.reset(np.ones(self.num_envs, dtype=bool))
        self._episodes.reset()
        self._played[:] = 0
        self._active = None if self._limit is None else np.ones(self.num_envs, dtype=bool)
        self._observe(base_obs)
        return self._obs, info

    def step(self, action: Any):
        if self.expert_query_cost_per_action is None:
            raise RuntimeError("call set_costs(base_penalty) before stepping a CoordEnv")
        action = np.asarray(action, dtype=np.int64).reshape(self.num_envs)
        if ((action != NOVICE) & (action != EXPERT)).any():
            raise ValueError(f"CoordEnv actions must be 0 (NOVICE) or 1 (EXPERT), got {action}")
        if self._active is not None:
            action = np.where(self._active, action, NOVICE)  # idle rows: the novice's idle action
        base_action = self.agents.base_actions(self._observed, action, out=self._base_action)

        base_obs, base_reward, terminated, truncated, base_info = self.base_env.step(base_action)
        done = np.logical_or(terminated, truncated)

        reward, _, switched = charge(action, self._episodes.prev_actor,
                                     self.expert_query_cost_per_action,
                                     self.switch_agent_cost_per_action, base_reward)
        reward = reward.astype(np.float32)
        finished = self._episodes.add(action, switched, reward, base_reward, done)
        info: dict[str, Any] = {
            "base_reward": base_reward,
            "base_action": base_action.copy(),
            "switched": switched,
        }
        if finished is not None:
            info["episode"] = finished
            info["_episode"] = done
            self.agents.reset(done)
            if self._active is not None:
                self._played += done
                self._active = self._played < self._limit
        self._observe(base_obs)
        return self._obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.base_env.close()

    # -- internals ---------------------------------------------------------------------
    def _observe(self, base_obs: np.ndarray) -> None:
        """One novice forward (active rows): the next observation and the novice's next action."""
        self._observed = self.agents.observe(base_obs, self._active)
        self._obs = self._observed.obs


class GeneralCoordEnv(CoordEnv):
    """CoordEnv for agents with recurrent state.

    Both agents run on every row at every step so their states advance in step
    with the episode; states are reset where an episode ends.  Rows idled by
    :meth:`~CoordEnv.limit_episodes` keep running them (row subsets of a recurrent state
    are not taken), so an evaluation saves no forward here.
    """

    expert_every_row = True
    recurrent_agents = True


def _box(dim: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, shape=(int(dim),), dtype=np.float32)

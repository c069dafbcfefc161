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
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from duo_cli.policies.base import sample_actions

NOVICE = 0
EXPERT = 1


class CoordEnv(VectorEnv):
    """Coordination env over a vector base env, a novice and an expert (stateless agents).

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

        n = self.num_envs
        self._prev_action = np.full(n, -1, dtype=np.int64)
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_base_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._base_action = np.zeros(n, dtype=np.int64)
        self._obs_t: torch.Tensor | None = None
        self._novice_action: np.ndarray | None = None
        self._expert_action: np.ndarray | None = None
        self._obs: dict[str, np.ndarray] = {}

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
        all_rows = np.ones(self.num_envs, dtype=bool)
        self.novice.eval()
        self.expert.eval()
        self.novice.reset(all_rows)
        self.expert.reset(all_rows)
        self._prev_action[:] = -1
        self._ep_return[:] = 0.0
        self._ep_base_return[:] = 0.0
        self._ep_length[:] = 0
        self._observe(base_obs)
        return self._obs, info

    def step(self, action: Any):
        if self.expert_query_cost_per_action is None:
            raise RuntimeError("call set_costs(base_penalty) before stepping a CoordEnv")
        action = np.asarray(action, dtype=np.int64).reshape(self.num_envs)
        if ((action != NOVICE) & (action != EXPERT)).any():
            raise ValueError(f"CoordEnv actions must be 0 (NOVICE) or 1 (EXPERT), got {action}")
        is_expert = action == EXPERT
        base_action = self._base_action
        base_action[:] = self._novice_action
        if is_expert.any():
            base_action[is_expert] = self._expert_actions(is_expert)

        base_obs, base_reward, terminated, truncated, base_info = self.base_env.step(base_action)
        done = np.logical_or(terminated, truncated)

        switched = (self._prev_action >= 0) & (action != self._prev_action)
        reward = (
            base_reward
            - is_expert * self.expert_query_cost_per_action
            - switched * self.switch_agent_cost_per_action
        ).astype(np.float32)
        self._prev_action[:] = action
        self._prev_action[done] = -1

        self._ep_return += reward
        self._ep_base_return += base_reward
        self._ep_length += 1
        info: dict[str, Any] = {
            "base_reward": base_reward,
            "base_action": base_action.copy(),
            "switched": switched,
        }
        if done.any():
            info["episode"] = {
                "r": np.where(done, self._ep_return, 0.0),
                "base_r": np.where(done, self._ep_base_return, 0.0),
                "l": np.where(done, self._ep_length, 0),
            }
            info["_episode"] = done
            self._ep_return[done] = 0.0
            self._ep_base_return[done] = 0.0
            self._ep_length[done] = 0
            self.novice.reset(done)
            self.expert.reset(done)
        self._observe(base_obs)
        return self._obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.base_env.close()

    # -- internals ---------------------------------------------------------------------
    @torch.no_grad()
    def _observe(self, base_obs: np.ndarray) -> None:
        """One novice forward: the next observation and the novice's next action."""
        obs_t = torch.from_numpy(base_obs).to(self.device, non_blocking=True)
        self._obs_t = obs_t
        out = self.novice.forward(obs_t)
        action = sample_actions(out.logits, self.temperature)
        h, k = out.hidden.shape[1], out.logits.shape[1]
        parts = [out.hidden.float(), out.logits.float(), action.unsqueeze(1).float()]
        if self.open_expert:
            eout = self.expert.forward(obs_t)
            e_action = sample_actions(eout.logits, self.temperature)
            parts += [eout.hidden.float(), eout.logits.float(), e_action.unsqueeze(1).float()]
        packed = torch.cat(parts, dim=1).cpu().numpy()  # the one device->host transfer
        obs = {
            "base_obs": base_obs,
            "novice_hidden": packed[:, :h],
            "novice_logits": packed[:, h:h + k],
        }
        self._novice_action = packed[:, h + k].astype(np.int64)
        if self.open_expert:
            o = h + k + 1
            eh = eout.hidden.shape[1]
            ek = eout.logits.shape[1]
            obs["expert_hidden"] = packed[:, o:o + eh]
            obs["expert_logits"] = packed[:, o + eh:o + eh + ek]
            self._expert_action = packed[:, o + eh + ek].astype(np.int64)
        self._obs = obs

    @torch.no_grad()
    def _expert_actions(self, rows: np.ndarray) -> np.ndarray:
        if self.open_expert:
            return self._expert_action[rows]
        idx = torch.from_numpy(np.flatnonzero(rows)).to(self.device)
        out = self.expert.forward(self._obs_t.index_select(0, idx))
        return sample_actions(out.logits, self.temperature).cpu().numpy()


class GeneralCoordEnv(CoordEnv):
    """CoordEnv for agents with recurrent state.

    Both agents run on every row at every step so their states advance in step
    with the episode; states are reset where an episode ends.
    """


    @torch.no_grad()
    def _observe(self, base_obs: np.ndarray) -> None:
        open_expert = self.open_expert
        self.open_expert = True  # the expert must advance its state on every row
        try:
            super()._observe(base_obs)
        finally:
            self.open_expert = open_expert
        if not open_expert:
            self._obs.pop("expert_hidden", None)
            self._obs.pop("expert_logits", None)

    def _expert_actions(self, rows: np.ndarray) -> np.ndarray:
        return self._expert_action[rows]


def step_costs(base_penalty: float, alpha: float, beta: float,
               decimals: int | None = None) -> tuple[float, float]:
    """Cost of one expert step (``alpha * BP``) and of one switch (``beta * BP``).

    With ``decimals`` both are rounded half-to-even to that many decimals, as the
    benchmark does (so a cost below ``0.5 * 10**-decimals`` becomes 0).
    """
    expert, switch = base_penalty * alpha, base_penalty * beta
    if decimals is not None:
        expert, switch = round(expert, int(decimals)), round(switch, int(decimals))
    return float(expert), float(switch)


def _box(dim: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, shape=(int(dim),), dtype=np.float32)

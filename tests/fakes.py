"""Tiny fakes for unit tests: a scripted vector env, counting models and agents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from duo_cli.models.base import Model, ModelOutput
from duo_cli.policies.base import Policy, sample_actions

RewardFn = Callable[["FakeVecEnv", np.ndarray], np.ndarray]


class FakeVecEnv:
    """A gymnasium-vector-like env with scripted episode lengths and rewards.

    Observations are ``uint8`` frames of ``obs_shape``; every pixel of row ``i``
    holds the step index inside the current episode (0 on the first frame),
    channel 1 of pixel (0, 0) holds the slot index and channel 2 the number of
    episodes that slot has finished (mod 256).

    :param ep_lengths: an int (every episode of every slot), or one entry per slot,
        each an int or a sequence of ints cycled episode after episode.
    :param reward_fn: ``reward_fn(env, actions) -> (num_envs,)`` rewards of the
        current step, called before episode counters advance (``env.t`` is the
        global step, ``env.ep_step`` the in-episode step); default: zeros.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 2,
        num_actions: int = 4,
        ep_lengths: int | Sequence[int | Sequence[int]] = 5,
        reward_fn: RewardFn | None = None,
        obs_shape: tuple[int, ...] = (8, 8, 3),
    ) -> None:
        self.num_envs = int(num_envs)
        self.num_actions = int(num_actions)
        if isinstance(ep_lengths, int):
            ep_lengths = [ep_lengths] * self.num_envs
        assert len(ep_lengths) == self.num_envs
        self._lengths = [
            [int(x)] if isinstance(x, int | np.integer) else [int(v) for v in x]
            for x in ep_lengths
        ]
        self.reward_fn = reward_fn
        self.obs_shape = tuple(obs_shape)
        self.single_observation_space = gym.spaces.Box(0, 255, self.obs_shape, dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(self.num_actions)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.spaces.MultiDiscrete(np.full(self.num_envs, self.num_actions))
        self.t = 0
        self.ep_step = np.zeros(self.num_envs, dtype=np.int64)
        self.ep_count = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_return = np.zeros(self.num_envs)
        self.actions: list[np.ndarray] = []
        self.reset_seeds: list[int | None] = []
        self.closed = False

    def current_length(self, i: int) -> int:
        seq = self._lengths[i]
        return seq[int(self.ep_count[i]) % len(seq)]

    def _obs(self) -> np.ndarray:
        obs = np.empty((self.num_envs, *self.obs_shape), dtype=np.uint8)
        for i in range(self.num_envs):
            obs[i] = self.ep_step[i] % 256
            if len(self.obs_shape) == 3 and self.obs_shape[-1] >= 3:
                obs[i, 0, 0, 1] = i % 256
                obs[i, 0, 0, 2] = self.ep_count[i] % 256
        return obs

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.reset_seeds.append(seed)
        self.t = 0
        self.ep_step[:] = 0
        self.ep_count[:] = 0
        self._ep_return[:] = 0.0
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs).copy()
        assert ((actions >= 0) & (actions < self.num_actions)).all(), actions
        self.actions.append(actions)
        if self.reward_fn is None:
            reward = np.zeros(self.num_envs, dtype=np.float32)
        else:
            reward = np.asarray(self.reward_fn(self, actions), dtype=np.float32)
        self.ep_step += 1
        self._ep_return += reward
        done = np.array(
            [self.ep_step[i] >= self.current_length(i) for i in range(self.num_envs)], dtype=bool
        )
        info: dict[str, Any] = {}
        if done.any():
            info["episode"] = {
                "r": np.where(done, self._ep_return, 0.0),
                "l": np.where(done, self.ep_step, 0),
            }
            info["_episode"] = done.copy()
            self.ep_step[done] = 0
            self.ep_count[done] += 1
            self._ep_return[done] = 0.0
        self.t += 1
        terminated = done.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.closed = True


def action_reward(table: Sequence[float]) -> RewardFn:
    """Reward ``table[action]`` for every row."""
    arr = np.asarray(table, dtype=np.float32)

    def fn(env: FakeVecEnv, actions: np.ndarray) -> np.ndarray:
        return arr[actions]

    return fn


def scripted_reward(rewards: np.ndarray) -> RewardFn:
    """Reward ``rewards[t]`` at global step ``t`` (a ``(T, num_envs)`` table)."""
    rewards = np.asarray(rewards, dtype=np.float32)

    def fn(env: FakeVecEnv, actions: np.ndarray) -> np.ndarray:
        return rewards[env.t]

    return fn


class CountingModel(nn.Module):
    """A parameter-free model with constant logits; counts calls and rows seen.

    :param logits: the logits every row gets (``logit_dim = len(logits)``).
    """

    def __init__(self, logits: Sequence[float], hidden_dim: int = 3):
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.logit_dim = len(logits)
        self.register_buffer("_logits", torch.tensor(list(logits), dtype=torch.float32))
        self.calls = 0
        self.rows = 0
        self.batch_sizes: list[int] = []

    def forward(self, obs: torch.Tensor) -> ModelOutput:
        n = obs.shape[0]
        self.calls += 1
        self.rows += n
        self.batch_sizes.append(n)
        logits = self._logits.expand(n, -1).clone()
        hidden = obs.reshape(n, -1)[:, : self.hidden_dim].float()
        if hidden.shape[1] < self.hidden_dim:
            hidden = torch.nn.functional.pad(hidden, (0, self.hidden_dim - hidden.shape[1]))
        return ModelOutput(logits, torch.zeros(n), hidden)


def one_hot_logits(action: int, num_actions: int, scale: float = 1000.0) -> list[float]:
    """Logits that make ``action`` certain, even when sampling at temperature 1."""
    logits = [0.0] * num_actions
    logits[action] = scale
    return logits


class FakeAgent(Policy):
    """A stateless agent around a :class:`CountingModel`; records resets and eval calls."""

    def __init__(self, model: nn.Module, device: str = "cpu"):
        self.model = model
        self.device = torch.device(device)
        self.reset_masks: list[np.ndarray] = []
        self.eval_calls = 0

    def forward(self, obs: Any) -> ModelOutput:
        if isinstance(obs, np.ndarray):
            obs = torch.from_numpy(obs)
        return self.model(obs)

    @torch.no_grad()
    def act(self, obs: Any, temperature: float = 1.0) -> torch.Tensor:
        return sample_actions(self.forward(obs).logits, temperature)

    def reset(self, done: np.ndarray) -> None:
        self.reset_masks.append(np.asarray(done, dtype=bool).copy())

    def eval(self) -> None:
        self.eval_calls += 1
        super().eval()


def fake_agent(action: int, num_actions: int = 4, hidden_dim: int = 3) -> FakeAgent:
    return FakeAgent(CountingModel(one_hot_logits(action, num_actions), hidden_dim=hidden_dim))


class RecurrentFakeAgent(FakeAgent):
    """An agent with per-row state: a counter of forwards since the row's last reset.

    ``hidden[:, 0]`` is the counter *after* the forward, so a row whose state was
    reset just before a forward reports 1.
    """

    def __init__(self, num_envs: int, action: int, num_actions: int = 4, hidden_dim: int = 2):
        super().__init__(CountingModel(one_hot_logits(action, num_actions), hidden_dim=hidden_dim))
        self.state = np.zeros(num_envs, dtype=np.int64)
        self.history: list[np.ndarray] = []

    def forward(self, obs: Any) -> ModelOutput:
        out = super().forward(obs)
        assert out.logits.shape[0] == len(self.state), "recurrent agents need every row"
        self.state += 1
        self.history.append(self.state.copy())
        hidden = out.hidden.clone()
        hidden[:, 0] = torch.from_numpy(self.state).float()
        return ModelOutput(out.logits, out.value, hidden)

    def reset(self, done: np.ndarray) -> None:
        super().reset(done)
        self.state[np.asarray(done, dtype=bool)] = 0


class ScriptedPolicy(Policy):
    """Acts from a script: ``actions[t]`` (one per row) at the t-th ``act`` call."""

    def __init__(self, actions: Sequence[Sequence[int]] | np.ndarray):
        self.actions = np.asarray(actions, dtype=np.int64)
        self.t = 0
        self.reset_masks: list[np.ndarray] = []

    def act(self, obs: Any, temperature: float = 1.0) -> np.ndarray:
        a = self.actions[self.t % len(self.actions)]
        self.t += 1
        return a.copy()

    def reset(self, done: np.ndarray) -> None:
        self.reset_masks.append(np.asarray(done, dtype=bool).copy())


class TinyMLP(Model):
    """A small actor-critic MLP over flattened observations (any dtype, cast to float)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_dim: int = 16):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.logit_dim = num_actions
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.Tanh())
        self.policy_head = nn.Linear(hidden_dim, num_actions)
        self.value_head = nn.Linear(hidden_dim, 1)

    def forward(self, obs: torch.Tensor) -> ModelOutput:
        x = torch.as_tensor(obs).reshape(obs.shape[0], -1).float() / 255.0
        hidden = self.trunk(x)
        return ModelOutput(self.policy_head(hidden), self.value_head(hidden).squeeze(-1), hidden)


class FakeCoordEnv:
    """A CoordEnv-like vector env with scripted novice features and per-agent rewards.

    Observations are dicts with ``base_obs`` (uint8 zeros), ``novice_hidden`` and
    ``novice_logits``.  Step ``t`` (global, counted from the last reset) shows
    ``logits[t % len(logits)]`` when a ``(T, num_envs, num_actions)`` table is given,
    else logits and hidden features drawn from a generator seeded by the reset seed.
    The reward of a step is ``novice_reward`` for NOVICE rows and
    ``expert_reward - expert_cost`` for EXPERT rows (``info["base_reward"]`` holds the
    reward without the cost).  Every episode lasts ``ep_length`` steps.  Like a CoordEnv,
    it reports ended episodes' ``r``, ``base_r``, ``l``, ``expert_steps`` and ``switches``
    in ``info["episode"]`` (switches cost nothing here).
    """

    NOVICE = 0
    EXPERT = 1
    reports_coordination = True
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        ep_length: int = 1,
        novice_reward: float = 0.0,
        expert_reward: float = 1.0,
        expert_cost: float = 0.2,
        hidden_dim: int = 4,
        num_actions: int = 3,
        logits: np.ndarray | None = None,
    ) -> None:
        self.num_envs = int(num_envs)
        self.ep_length = int(ep_length)
        self.novice_reward = float(novice_reward)
        self.expert_reward = float(expert_reward)
        self.expert_cost = float(expert_cost)
        self.hidden_dim = int(hidden_dim)
        self.num_actions = int(num_actions)
        self.logits = None if logits is None else np.asarray(logits, dtype=np.float32)
        if self.logits is not None:
            assert self.logits.shape[1:] == (self.num_envs, self.num_actions), self.logits.shape
        box = gym.spaces.Box
        self.single_observation_space = gym.spaces.Dict({
            "base_obs": box(0, 255, (2, 2, 3), dtype=np.uint8),
            "novice_hidden": box(-np.inf, np.inf, (self.hidden_dim,), dtype=np.float32),
            "novice_logits": box(-np.inf, np.inf, (self.num_actions,), dtype=np.float32),
        })
        self.single_action_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.MultiDiscrete(np.full(self.num_envs, 2))
        self.t = 0
        self.ep_step = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_return = np.zeros(self.num_envs)
        self._ep_base = np.zeros(self.num_envs)
        self._ep_expert = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_switches = np.zeros(self.num_envs, dtype=np.int64)
        self._prev = np.full(self.num_envs, -1, dtype=np.int64)
        self._rng = np.random.default_rng(0)
        self.actions: list[np.ndarray] = []
        self.reset_seeds: list[int | None] = []
        self.closed = False

    def _obs(self) -> dict[str, np.ndarray]:
        n = self.num_envs
        if self.logits is not None:
            logits = self.logits[self.t % len(self.logits)].copy()
        else:
            logits = self._rng.normal(size=(n, self.num_actions)).astype(np.float32)
        hidden = self._rng.normal(size=(n, self.hidden_dim)).astype(np.float32)
        return {
            "base_obs": np.zeros((n, 2, 2, 3), dtype=np.uint8),
            "novice_hidden": hidden,
            "novice_logits": logits,
        }

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.reset_seeds.append(seed)
        self._rng = np.random.default_rng(seed)
        self.t = 0
        self.ep_step[:] = 0
        self._ep_return[:] = 0.0
        self._ep_base[:] = 0.0
        self._ep_expert[:] = 0
        self._ep_switches[:] = 0
        self._prev[:] = -1
        return self._obs(), {}

    def step(self, actions):
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs).copy()
        assert ((a == self.NOVICE) | (a == self.EXPERT)).all(), a
        self.actions.append(a)
        is_expert = a == self.EXPERT
        base = np.where(is_expert, self.expert_reward, self.novice_reward).astype(np.float32)
        reward = (base - is_expert * self.expert_cost).astype(np.float32)
        self.ep_step += 1
        self._ep_return += reward
        self._ep_base += base
        self._ep_expert += is_expert
        self._ep_switches += (self._prev >= 0) & (a != self._prev)
        done = self.ep_step >= self.ep_length
        self._prev[:] = np.where(done, -1, a)
        info: dict[str, Any] = {"base_reward": base}
        if done.any():
            info["episode"] = {
                "r": np.where(done, self._ep_return, 0.0),
                "base_r": np.where(done, self._ep_base, 0.0),
                "l": np.where(done, self.ep_step, 0),
                "expert_steps": np.where(done, self._ep_expert, 0),
                "switches": np.where(done, self._ep_switches, 0),
            }
            info["_episode"] = done.copy()
            self.ep_step[done] = 0
            self._ep_return[done] = 0.0
            self._ep_base[done] = 0.0
            self._ep_expert[done] = 0
            self._ep_switches[done] = 0
        self.t += 1
        return self._obs(), reward, done.copy(), np.zeros(self.num_envs, dtype=bool), info

    def close(self, **kwargs: Any) -> None:
        self.closed = True


def assert_one_line_error(proc, *words: str) -> str:
    """A CLI user error: exit code 2, one stderr line naming ``words``, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]

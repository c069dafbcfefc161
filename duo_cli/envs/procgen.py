"""Procgen games as gymnasium vector environments.

This module is the only place in duo that imports :mod:`procgen`.  Observations
stay ``uint8`` NHWC on the wire; models convert to float themselves.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from duo_cli.settings import SPLITS, check_choice, check_number, check_pools

logger = logging.getLogger(__name__)

PROCGEN_GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball",
    "fruitbot", "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)
DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory", "exploration")


def _import_procgen():
    # procgen imports the unmaintained ``gym`` package, which prints a banner on import.
    with contextlib.redirect_stderr(io.StringIO()):
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


class ProcgenVecEnv(VectorEnv):
    """A vector of ``num_envs`` Procgen games with gymnasium's vector API.

    Procgen resets finished episodes itself, so the observation returned with
    ``terminated=True`` is already the first frame of the next episode
    (gymnasium's ``SAME_STEP`` autoreset mode).  When an episode ends, ``info``
    carries ``episode = {"r": returns, "l": lengths}`` and the mask ``_episode``.

    :param task: one of :data:`PROCGEN_GAMES`.
    :param num_envs: number of parallel games.
    :param distribution_mode: Procgen difficulty (``easy``, ``hard``, ...).
    :param start_level: first level seed of the level pool.
    :param num_levels: size of the level pool (0 = unbounded).
    :param seed: seed of the level sequence; ``reset(seed=s)`` replays it exactly.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        task: str,
        num_envs: int,
        distribution_mode: str = "easy",
        start_level: int = 0,
        num_levels: int = 0,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        if task not in PROCGEN_GAMES:
            raise ValueError(f"unknown procgen task {task!r}; valid: {', '.join(PROCGEN_GAMES)}")
        if distribution_mode not in DISTRIBUTION_MODES:
            raise ValueError(
                f"unknown distribution_mode {distribution_mode!r}; "
                f"valid: {', '.join(DISTRIBUTION_MODES)}"
            )
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = task
        self.num_envs = int(num_envs)
        self.distribution_mode = distribution_mode
        self.start_level = int(start_level)
        self.num_levels = int(num_levels)
        self.seed_value = int(seed)
        self.num_threads = int(num_threads)
        self.single_observation_space = gym.spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(15)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.spaces.MultiDiscrete(np.full(self.num_envs, 15))
        self._env = None
        self._rng = np.random.default_rng(self.seed_value)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._action_buf = np.zeros(self.num_envs, dtype=np.int32)

    def _make(self, seed: int) -> None:
        if self._env is not None:
            self._env.close()
        cls = _import_procgen()
        self._env = cls(
            num=self.num_envs,
            env_name=self.task,
            distribution_mode=self.distribution_mode,
            start_level=self.start_level,
            num_levels=self.num_levels,
            rand_seed=int(seed) % (2**31 - 1),
            num_threads=self.num_threads,
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start fresh episodes in every game.

        With ``seed`` the level sequence is exactly reproducible; without it the
        first reset uses the constructor's seed and later ones draw a new seed.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            run_seed = int(seed)
        elif self._env is None:
            run_seed = self.seed_value
        else:
            run_seed = int(self._rng.integers(0, 2**31 - 1))
        self._make(run_seed)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        _, obs, _ = self._env.observe()
        return obs["rgb"], {}

    def step(self, actions):
        """Advance every game by one step."""
        self._action_buf[:] = actions
        self._env.act(self._action_buf)
        rew, obs, first = self._env.observe()
        self._ep_return += rew
        self._ep_length += 1
        info: dict[str, Any] = {}
        if first.any():
            info["episode"] = {
                "r": np.where(first, self._ep_return, 0.0),
                "l": np.where(first, self._ep_length, 0),
            }
            info["_episode"] = first.copy()
            self._ep_return[first] = 0.0
            self._ep_length[first] = 0
        terminated = first.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return obs["rgb"], rew.astype(np.float32), terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def make_procgen(env_cfg: Any, split: str, num_envs: int) -> ProcgenVecEnv:
    """Build the vector env of one split from the ``env`` config node."""
    split_cfg = env_cfg[split]
    return ProcgenVecEnv(
        task=env_cfg.task,
        num_envs=num_envs,
        distribution_mode=split_cfg.distribution_mode,
        start_level=split_cfg.start_level,
        num_levels=split_cfg.num_levels,
        seed=split_cfg.seed,
        num_threads=env_cfg.get("num_threads", 2),
    )


#: every Procgen game: 15 actions, 64x64 RGB frames
NUM_ACTIONS, OBS_SHAPE = 15, (64, 64, 3)


def validate(env_cfg: Any) -> None:
    """Refuse an unknown game or mode, or a bad pool, with one line (``ConfigError``)."""
    check_choice(env_cfg, "task", PROCGEN_GAMES, where="env.")
    check_number(env_cfg, "num_threads", integer=True, low=0, where="env.")  # 0: step in the calling thread
    for split in SPLITS:
        if split in env_cfg:
            check_choice(env_cfg[split], "distribution_mode", DISTRIBUTION_MODES,
                         where=f"env.{split}.")
    check_pools(env_cfg, min_levels=0)  # num_levels 0 = unbounded


def spec(env_cfg: Any) -> tuple[int, tuple[int, ...]]:
    """``(number of actions, observation shape)`` of the configured game."""
    return NUM_ACTIONS, OBS_SHAPE

"""MiniGrid tasks as gymnasium vector environments.

This module is the only place in duo that imports :mod:`minigrid`.  The agent
sees MiniGrid's egocentric 7x7 view as a ``uint8`` array of shape ``(7, 7, 3)``:
per cell the object type, its colour and its state (open/closed/locked), the
encoding of ``minigrid.wrappers.ImgObsWrapper``.  The mission string is not
observed (each task has one mission).  :class:`FastView` computes that view
from a cached encoding of the grid, bit-identical to minigrid's ``gen_obs``
(which takes most of a step's time).

Each task is an easy -> hard distribution shift (:data:`TASKS`): ``train`` and
``val_sim`` play the easy variant, ``val_true`` and ``test`` the hard one.  A
"level" is the seed of one episode's layout; every split draws its levels from
its own pool ``[start_level, start_level + num_levels)``, so pools can be kept
disjoint as for Procgen.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from duo_cli.settings import SPLITS, check_choice, check_number, check_pools

logger = logging.getLogger(__name__)

#: task -> (easy env id, hard env id)
TASKS = {
    "DistShift": ("MiniGrid-DistShift1-v0", "MiniGrid-DistShift2-v0"),
    "DoorKey": ("MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-8x8-v0"),
    "LavaGap": ("MiniGrid-LavaGapS5-v0", "MiniGrid-LavaGapS7-v0"),
}
VARIANTS = ("easy", "hard")
#: env ids whose every seed gives the same grid (one layout: a level pool of such a variant
#: varies only the agents' own randomness); the others vary their layout with the seed
#: (measured over 200 seeds: DoorKey-5x5 47 layouts, 8x8 199, LavaGapS5 3, S7 15)
SINGLE_LAYOUT = frozenset({"MiniGrid-DistShift1-v0", "MiniGrid-DistShift2-v0"})
OBS_SHAPE = (7, 7, 3)
NUM_ACTIONS = 7


def _register() -> None:
    import minigrid  # noqa: F401  (importing registers the MiniGrid-* ids)


@functools.lru_cache(maxsize=1 << 15)
def _vis_mask(n: int, see: bytes) -> np.ndarray:
    """minigrid's ``Grid.process_vis`` of an ``n`` x ``n`` view, memoised on what blocks the eye.

    ``see[x * n + y]`` is 1 where cell ``(x, y)`` of the view lets the eye through.  Returns a
    read-only ``<u4`` mask ``[x, y]``: all ones where the cell is visible, 0 where unseen.
    """
    mask = np.zeros((n, n), dtype=bool)
    mask[n // 2, n - 1] = True  # the agent's cell
    for j in reversed(range(n)):  # minigrid's loops, step for step
        for i in range(n - 1):
            if mask[i, j] and see[i * n + j]:
                mask[i + 1, j] = True
                if j > 0:
                    mask[i + 1, j - 1] = mask[i, j - 1] = True
        for i in reversed(range(1, n)):
            if mask[i, j] and see[i * n + j]:
                mask[i - 1, j] = True
                if j > 0:
                    mask[i - 1, j - 1] = mask[i, j - 1] = True
    out = np.where(mask, np.uint32(0xFFFFFFFF), np.uint32(0)).astype("<u4")
    out.setflags(write=False)
    return out


def _code(encoding: tuple[int, int, int], see: bool) -> int:
    """One cell as ``<u4``: its bytes are type, colour, state and whether it lets the eye through."""
    return int(encoding[0]) | int(encoding[1]) << 8 | int(encoding[2]) << 16 | int(see) << 24


class FastView:
    """MiniGrid's ``gen_obs`` from a cached encoding of the whole grid, bit-identical to it.

    The grid is encoded once per layout (a reset builds a new ``Grid``) into one ``<u4`` code
    per cell (:func:`_code`), padded with walls (minigrid slices cells outside the grid as
    walls).  Each observation gathers the view by one index table per direction, applies
    ``process_vis`` (:func:`_vis_mask`, memoised) and puts the carried object in the agent's
    cell.  ``MiniGridEnv.step`` changes the grid only in the cell in front of the
    agent (pickup, drop, toggle: none of them moves or turns the agent), so that cell is
    re-encoded for every observation.
    """

    def __init__(self, env: Any):
        from minigrid.core.constants import DIR_TO_VEC, OBJECT_TO_IDX
        from minigrid.core.world_object import Wall

        self.env = env
        self.n = int(env.agent_view_size)
        self.wall = _code(Wall().encode(), False)
        self.empty = (OBJECT_TO_IDX["empty"], 0, 0)
        self.empty_code = _code(self.empty, True)
        self.dir_vec = [tuple(int(c) for c in v) for v in DIR_TO_VEC]
        self.grid, self.shape = None, None

    def _encode_all(self) -> None:
        grid, n, pad = self.env.grid, self.n, self.n - 1
        width, height = grid.width, grid.height
        if self.shape != (width, height):
            self.shape, self.hp = (width, height), height + 2 * pad
            self.codes = np.empty((width + 2 * pad, self.hp), dtype="<u4")
            offsets = np.arange(n)[:, None] * self.hp + np.arange(n)[None, :]
            # minigrid rotates the slice left agent_dir + 1 times; rot90(k=-1) is that turn
            self.index = [np.rot90(offsets, -(d + 1)).copy() for d in range(4)]
        self.codes[:] = self.wall
        cells = [self.empty_code if obj is None else _code(obj.encode(), obj.see_behind())
                 for obj in grid.grid]  # row-major: cell (x, y) at y * width + x
        self.codes[pad:pad + width, pad:pad + height] = np.array(cells).reshape(height, width).T
        self.flat = self.codes.reshape(-1)
        self.grid = grid

    def gen_obs(self) -> dict[str, Any]:
        """``MiniGridEnv.gen_obs``: the agent's view, its direction and the mission."""
        env, n, pad = self.env, self.n, self.n - 1
        if env.grid is not self.grid:
            self._encode_all()
        else:
            dx, dy = self.dir_vec[env.agent_dir]
            x, y = int(env.agent_pos[0]) + dx, int(env.agent_pos[1]) + dy
            if 0 <= x < self.shape[0] and 0 <= y < self.shape[1]:
                obj = env.grid.get(x, y)
                self.codes[x + pad, y + pad] = (self.empty_code if obj is None
                                                else _code(obj.encode(), obj.see_behind()))
        top_x, top_y, _, _ = env.get_view_exts()
        view = self.flat[self.index[env.agent_dir] + ((top_x + pad) * self.hp + top_y + pad)]
        if not env.see_through_walls:  # unseen cells encode as 0, 0, 0
            view &= _vis_mask(n, view.view(np.uint8).reshape(n, n, 4)[:, :, 3].tobytes())
        image = view.view(np.uint8).reshape(n, n, 4)[:, :, :3].copy()
        image[n // 2, n - 1] = env.carrying.encode() if env.carrying else self.empty
        return {"image": image, "direction": env.agent_dir, "mission": env.mission}


def install_fast_view(env: gym.Env) -> bool:
    """Make ``env``'s MiniGrid compute observations by :class:`FastView`; ``False`` if unsafe.

    Only envs that step and observe by ``MiniGridEnv``'s own methods qualify (their grid
    changes only in the cell in front of the agent); rewards, termination and RNG stay
    minigrid's own: only ``gen_obs`` is replaced, on this instance.
    """
    from minigrid.minigrid_env import MiniGridEnv  # lazy, as in _register: minigrid is slow to import

    base, cls = env.unwrapped, type(env.unwrapped)
    own = ("step", "gen_obs", "gen_obs_grid", "get_view_exts")
    if not isinstance(base, MiniGridEnv) or any(getattr(cls, m) is not getattr(MiniGridEnv, m)
                                                for m in own):
        return False
    base.gen_obs = FastView(base).gen_obs  # shadows the class's method for this instance
    return True


class LevelPool(gym.Wrapper):
    """One MiniGrid env whose every episode is a level drawn from a fixed pool.

    ``reset(seed=s)`` re-seeds the level sequence, so it replays exactly; later
    resets (autoreset included) draw the next level from the same sequence.
    With ``random_action_prob`` > 0, each action is replaced by a uniformly
    random one with that probability (the benchmark's stochastic-action wrapper).
    """

    def __init__(self, env: gym.Env, start_level: int, num_levels: int, seed: int,
                 random_action_prob: float = 0.0):
        super().__init__(env)
        self.start_level, self.num_levels = int(start_level), int(num_levels)
        self.random_action_prob = float(random_action_prob)
        self.num_actions = int(env.action_space.n)
        self._seed(seed)
        self.replaced = 0

    def _seed(self, seed: int) -> None:
        # separate streams: the levels must not depend on how many actions were replaced
        levels, actions = np.random.SeedSequence(seed).spawn(2)
        self._rng, self._action_rng = np.random.default_rng(levels), np.random.default_rng(actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._seed(seed)
        level = self.start_level + int(self._rng.integers(self.num_levels))
        obs, info = self.env.reset(seed=level, options=options)
        info["level"] = level
        return obs, info

    def step(self, action):
        rng = self._action_rng
        if self.random_action_prob > 0 and rng.random() < self.random_action_prob:
            action = int(rng.integers(self.num_actions))
            self.replaced += 1
        return self.env.step(action)


class MiniGridVecEnv(RecordEpisodeStatistics):
    """``num_envs`` copies of one MiniGrid variant, vectorised by gymnasium's ``SyncVectorEnv``.

    Finished episodes reset in the same step (``SAME_STEP`` autoreset, as CoordEnv
    expects); ``info["episode"]`` holds ``r`` and ``l`` of the episodes that ended,
    under the mask ``info["_episode"]``.  ``truncated`` marks MiniGrid's step limit.

    :param task: one of :data:`TASKS`.
    :param variant: ``easy`` or ``hard``.
    :param start_level: first layout seed of the level pool.
    :param num_levels: size of the level pool.
    :param seed: seed of the level sequence; ``reset(seed=s)`` replays it exactly.
    :param fast_obs: observations by :class:`FastView` (bit-identical); ``False`` keeps
        minigrid's own ``gen_obs`` (the reference the tests and the benchmark compare with).
    """

    def __init__(self, task: str, num_envs: int, variant: str = "easy", start_level: int = 0,
                 num_levels: int = 100000, seed: int = 0, random_action_prob: float = 0.0,
                 fast_obs: bool = True):
        if task not in TASKS:
            raise ValueError(f"unknown minigrid task {task!r}; valid: {', '.join(TASKS)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if num_envs < 1 or num_levels < 1:
            raise ValueError(f"num_envs and num_levels must be >= 1, got {num_envs}, {num_levels}")
        _register()
        from minigrid.wrappers import ImgObsWrapper

        env_id = TASKS[task][VARIANTS.index(variant)]
        seeds = np.random.SeedSequence(int(seed)).generate_state(num_envs)

        def factory(i: int):
            def make() -> gym.Env:
                env = gym.make(env_id)
                if fast_obs:
                    install_fast_view(env)
                env = ImgObsWrapper(env)
                return LevelPool(env, start_level, num_levels, int(seeds[i]), random_action_prob)
            return make

        vec = SyncVectorEnv([factory(i) for i in range(num_envs)],
                            autoreset_mode=AutoresetMode.SAME_STEP)
        super().__init__(vec)
        self.metadata = {**vec.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.task, self.variant, self.env_id = task, variant, env_id
        self.seed_value = int(seed)
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start fresh episodes in every env; ``seed`` (or the constructor's, first time) replays."""
        if seed is None and not self._started:
            seed = self.seed_value
        self._started = True
        if seed is None:
            return super().reset(options=options)
        slot_seeds = np.random.SeedSequence(int(seed)).generate_state(self.num_envs)
        return super().reset(seed=[int(s) for s in slot_seeds], options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        return obs, np.asarray(reward, dtype=np.float32), terminated, truncated, info

    @property
    def replaced_actions(self) -> int:
        """Actions replaced by random ones so far (``random_action_prob``), over all slots."""
        return sum(e.replaced for e in self.env.envs)


def make_minigrid(env_cfg: Any, split: str, num_envs: int) -> MiniGridVecEnv:
    """Build the vector env of one split from the ``env`` config node."""
    split_cfg = env_cfg[split]
    return MiniGridVecEnv(
        task=env_cfg.task,
        num_envs=num_envs,
        variant=split_cfg.variant,
        start_level=split_cfg.start_level,
        num_levels=split_cfg.num_levels,
        seed=split_cfg.seed,
        random_action_prob=float(env_cfg.get("random_action_prob", 0.0)),
    )


def validate(env_cfg: Any) -> None:
    """Refuse an unknown task or variant, or a bad pool, with one line (``ConfigError``)."""
    check_choice(env_cfg, "task", tuple(TASKS), where="env.")
    check_number(env_cfg, "random_action_prob", low=0, high=1, nullable=True,
                 where="env.")
    for split in SPLITS:
        if split in env_cfg:
            check_choice(env_cfg[split], "variant", VARIANTS, where=f"env.{split}.")
    check_pools(env_cfg, min_levels=1)


def single_layout(env_cfg: Any, split: str) -> bool:
    """Whether the variant ``split`` plays has one layout (declared in :data:`SINGLE_LAYOUT`)."""
    return TASKS[env_cfg.task][VARIANTS.index(env_cfg[split].variant)] in SINGLE_LAYOUT


def spec(env_cfg: Any) -> tuple[int, tuple[int, ...]]:
    """``(number of actions, observation shape)`` of every MiniGrid task."""
    return NUM_ACTIONS, OBS_SHAPE

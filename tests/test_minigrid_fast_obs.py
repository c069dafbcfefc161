"""MiniGrid's fast view (``FastView``): bit-identical to minigrid's own ``gen_obs`` in every state."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from minigrid.core.constants import OBJECT_TO_IDX
from minigrid.minigrid_env import MiniGridEnv

from duo_cli.config import compose
from duo_cli.envs import make_env
from duo_cli.envs.minigrid import TASKS, FastView, MiniGridVecEnv, install_fast_view

ENV_IDS = [env_id for pair in TASKS.values() for env_id in pair]
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = range(6)
DOOR, KEY = OBJECT_TO_IDX["door"], OBJECT_TO_IDX["key"]


class Checked:
    """One MiniGrid env with the fast view; every observation is compared with minigrid's own."""

    def __init__(self, env_id: str, see_through_walls: bool | None = None):
        self.env = gym.make(env_id)
        assert install_fast_view(self.env)
        self.base = self.env.unwrapped
        if see_through_walls is not None:  # the other visibility rule on the same layouts
            self.base.see_through_walls = see_through_walls
        self.images: list[np.ndarray] = []

    def check(self, obs: dict) -> None:
        ref = MiniGridEnv.gen_obs(self.base)
        assert obs["image"].dtype == ref["image"].dtype == np.uint8
        assert obs["image"].shape == ref["image"].shape == (7, 7, 3)
        assert np.array_equal(obs["image"], ref["image"]), (self.base.agent_pos, self.base.agent_dir)
        assert obs["direction"] == ref["direction"] and obs["mission"] == ref["mission"]
        self.images.append(obs["image"])

    def reset(self, seed: int | None = None) -> None:
        self.check(self.env.reset(seed=seed)[0])

    def step(self, action: int) -> bool:
        obs, _, term, trunc, _ = self.env.step(action)
        self.check(obs)
        return term or trunc


def _rollout(checked: Checked, seed: int, steps: int) -> None:
    rng = np.random.default_rng(seed)
    checked.reset(seed=seed)
    for _ in range(steps):
        if checked.step(int(rng.integers(7))):
            checked.reset()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_random_rollouts_equal_minigrid(env_id):
    checked = Checked(env_id)
    for seed in range(3):
        _rollout(checked, seed, 700)
    images = np.stack(checked.images)
    assert len(images) > 2000
    assert (images == 0).all(-1).any() == (not checked.base.see_through_walls)  # occlusion seen


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_the_other_visibility_rule_too(env_id):
    # DistShift sees through walls, the others do not: flip the rule so both meet both layouts
    checked = Checked(env_id, see_through_walls=not gym.make(env_id).unwrapped.see_through_walls)
    _rollout(checked, 11, 500)


def _find(base: MiniGridEnv, kind: str) -> tuple[int, int]:
    grid = base.grid
    return next((x, y) for y in range(grid.height) for x in range(grid.width)
                if grid.get(x, y) is not None and grid.get(x, y).type == kind)


def _plan(base: MiniGridEnv, target: tuple[int, int]) -> list[int]:
    """Shortest left/right/forward actions that leave the agent facing ``target``."""
    vec = ((1, 0), (0, 1), (-1, 0), (0, -1))
    start = (*map(int, base.agent_pos), int(base.agent_dir))
    back, todo = {start: None}, deque([start])
    while todo:
        x, y, d = state = todo.popleft()
        if (x + vec[d][0], y + vec[d][1]) == target:
            actions = []
            while back[state] is not None:
                state, action = back[state]
                actions.append(action)
            return actions[::-1]
        fx, fy = x + vec[d][0], y + vec[d][1]
        cell = base.grid.get(fx, fy)
        walk = cell is None or (cell.type == "door" and cell.is_open)
        moves = [(LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4))]
        moves += [(FORWARD, (fx, fy, d))] if walk else []
        for action, nxt in moves:
            if nxt not in back:
                back[nxt] = (state, action)
                todo.append(nxt)
    raise AssertionError(f"no path to {target}")


def _face(checked: Checked, target: tuple[int, int]) -> None:
    for action in _plan(checked.base, target):
        assert not checked.step(action)


@pytest.mark.parametrize("env_id", TASKS["DoorKey"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_doorkey_scripted_key_and_door(env_id, seed):
    checked = Checked(env_id)
    checked.reset(seed=seed)
    base = checked.base
    _face(checked, _find(base, "key"))
    checked.step(PICKUP)
    assert base.carrying is not None and base.carrying.type == "key"
    for action in (LEFT, LEFT, DROP, PICKUP, RIGHT, RIGHT, DROP, TOGGLE, PICKUP):
        checked.step(action)  # drop and pick up again where the cell in front allows
    assert base.carrying is not None
    door = _find(base, "door")
    _face(checked, door)
    for action in (LEFT, RIGHT, TOGGLE, TOGGLE, TOGGLE):  # unlock+open, close, open
        checked.step(action)
    assert base.grid.get(*door).is_open
    for action in (FORWARD, LEFT, RIGHT, RIGHT, LEFT, FORWARD, LEFT, LEFT, DROP, RIGHT, RIGHT):
        checked.step(action)  # stand in the doorway, look around, leave the key behind
    _face(checked, _find(base, "goal"))
    assert checked.step(FORWARD) and base.agent_pos == _find(base, "goal")
    images = np.stack(checked.images)
    door_states = set(images[images[..., 0] == DOOR][:, 2].tolist())
    assert door_states == {0, 1, 2}  # open, closed, locked all observed
    assert (images[:, 3, 6, 0] == KEY).any()  # the carried key in the agent's own cell


def _vec_rollout(env, steps: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = [(obs.copy(),)]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(rng.integers(0, 7, env.num_envs))
        ep = info.get("_episode")
        out.append((obs.copy(), reward.copy(), term.copy(), trunc.copy(),
                    None if ep is None else (ep.copy(), info["episode"]["r"].copy(),
                                             info["episode"]["l"].copy())))
    return out


def _equal(a, b) -> bool:
    if isinstance(a, tuple) or a is None or b is None:
        return (a is None) == (b is None) and (a is None or all(map(_equal, a, b)))
    return np.array_equal(a, b)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_vector_env_unchanged(task):
    cfg = compose(["env=minigrid", f"env.task={task}", "env.random_action_prob=0.1"])
    ended = 0
    for split in ("train", "test"):
        fast = make_env(cfg.env, split, 6)
        s = cfg.env[split]
        slow = MiniGridVecEnv(task, 6, s.variant, s.start_level, s.num_levels, s.seed,
                              random_action_prob=0.1, fast_obs=False)
        try:
            assert all(isinstance(e.unwrapped.gen_obs.__self__, FastView) for e in fast.env.envs)
            assert all(e.unwrapped.gen_obs.__func__ is MiniGridEnv.gen_obs for e in slow.env.envs)
            a, b = _vec_rollout(fast, 300, seed=9), _vec_rollout(slow, 300, seed=9)
            assert all(map(_equal, a, b))
            assert fast.replaced_actions == slow.replaced_actions > 0
            ended += sum(step[4] is not None for step in a[1:])
        finally:
            fast.close()
            slow.close()
    assert ended  # autoresets happened inside the compared steps


def test_unsafe_envs_keep_minigrid_obs():
    class Moving(MiniGridEnv):  # a step of its own may change the grid anywhere
        def step(self, action):
            return super().step(action)

    env = gym.make("MiniGrid-Empty-5x5-v0")
    env.unwrapped.__class__ = type("MovingEmpty", (Moving, type(env.unwrapped)), {})
    assert not install_fast_view(env)
    assert env.unwrapped.gen_obs.__func__ is MiniGridEnv.gen_obs

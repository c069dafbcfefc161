"""MiniGrid envs: the vector-env contract CoordEnv relies on, on all three tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from duo_cli.config import ConfigError, compose
from duo_cli.envs import make_env
from duo_cli.envs.minigrid import NUM_ACTIONS, OBS_SHAPE, TASKS, MiniGridVecEnv
from duo_cli.models.grid import GridCNN

SPLITS = ("train", "val_sim", "val_true", "test")


def _cfg(task: str, *extra: str):
    return compose(["env=minigrid", f"env.task={task}", *extra])


def _rollout(env, steps: int, seed: int, action_seed: int = 0):
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    frames, ends = [obs.copy()], []
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(rng.integers(0, NUM_ACTIONS, env.num_envs))
        frames.append(obs.copy())
        if "_episode" in info:
            ends.append((info["_episode"].copy(), info["episode"]["r"].copy(),
                         info["episode"]["l"].copy(), reward.copy(), term | trunc))
    return np.stack(frames), ends


@pytest.mark.parametrize("task", sorted(TASKS))
def test_contract_on_every_split(task):
    cfg = _cfg(task)
    assert cfg.model.name == "grid_cnn"  # env=minigrid picks the grid model
    for split in SPLITS:
        env = make_env(cfg.env, split, 4)
        try:
            assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
            assert env.single_observation_space.shape == OBS_SHAPE
            assert env.single_action_space.n == NUM_ACTIONS
            hard = split in ("val_true", "test")
            assert env.env_id == TASKS[task][int(hard)]
            obs, _ = env.reset(seed=3)
            assert obs.shape == (4, *OBS_SHAPE) and obs.dtype == np.uint8
            obs, reward, term, trunc, info = env.step(np.zeros(4, dtype=np.int64))
            assert reward.dtype == np.float32 and term.dtype == bool and trunc.dtype == bool
        finally:
            env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_reset_seed_replays_exactly(task):
    env = make_env(_cfg(task).env, "test", 3)
    try:
        a, ends_a = _rollout(env, 60, seed=7)
        b, ends_b = _rollout(env, 60, seed=7)
        c, _ = _rollout(env, 60, seed=8)
    finally:
        env.close()
    assert np.array_equal(a, b)
    assert len(ends_a) == len(ends_b)
    if task != "DistShift":  # DistShift layouts are fixed: only the actions differ
        assert not np.array_equal(a[0], c[0])


def test_autoreset_same_step_and_episode_stats():
    # LavaGap ends fast under random actions (stepping into lava terminates)
    env = make_env(_cfg("LavaGap").env, "train", 8)
    try:
        _, ends = _rollout(env, 200, seed=0)
    finally:
        env.close()
    assert ends, "no episode ended"
    for mask, r, length, reward, done in ends:
        assert np.array_equal(mask, done)  # stats exactly where an episode ended
        assert (length[mask] >= 1).all()
        assert np.allclose(r[mask], reward[mask])  # MiniGrid pays only at the end
        assert ((r[mask] >= 0) & (r[mask] <= 1)).all()


def test_level_pools_are_disjoint_and_checked():
    cfg = _cfg("DoorKey")
    pools = {s: (cfg.env[s].start_level, cfg.env[s].num_levels) for s in SPLITS}
    a, n = pools["train"]
    for s in SPLITS[1:]:
        b, m = pools[s]
        assert a + n <= b or b + m <= a, s
    with pytest.raises(ConfigError, match="overlap"):
        _cfg("DoorKey", "env.test.start_level=10")


def test_every_episode_is_a_level_of_the_pool():
    env = MiniGridVecEnv("DoorKey", 1, "easy", start_level=40, num_levels=3, seed=0)
    pool = env.env.envs[0]
    try:
        levels = [pool.reset(seed=5)[1]["level"]] + [pool.reset()[1]["level"] for _ in range(30)]
        replay = [pool.reset(seed=5)[1]["level"]] + [pool.reset()[1]["level"] for _ in range(30)]
    finally:
        env.close()
    assert set(levels) == {40, 41, 42}
    assert levels == replay


def test_random_action_prob_binomial():
    n, steps, p = 8, 500, 0.1
    env = MiniGridVecEnv("DoorKey", n, "easy", seed=0, random_action_prob=p)
    plain = MiniGridVecEnv("DoorKey", n, "easy", seed=0)
    try:
        _rollout(env, steps, seed=0)
        _rollout(plain, steps, seed=0)
        draws = n * steps
        mean, sd = draws * p, (draws * p * (1 - p)) ** 0.5
        assert abs(env.replaced_actions - mean) < 4 * sd
        assert plain.replaced_actions == 0
    finally:
        env.close()
        plain.close()


def test_random_actions_do_not_change_the_levels():
    a = MiniGridVecEnv("DoorKey", 2, "easy", seed=0, random_action_prob=0.5)
    b = MiniGridVecEnv("DoorKey", 2, "easy", seed=0)
    try:
        fa, _ = _rollout(a, 1, seed=4)
        fb, _ = _rollout(b, 1, seed=4)
    finally:
        a.close()
        b.close()
    assert np.array_equal(fa[0], fb[0])


def test_grid_cnn_shapes():
    model = GridCNN(num_actions=NUM_ACTIONS, hidden_dim=32)
    obs = torch.randint(0, 11, (5, *OBS_SHAPE), dtype=torch.uint8)
    out = model(obs)
    assert out.logits.shape == (5, NUM_ACTIONS)
    assert out.value.shape == (5,)
    assert out.hidden.shape == (5, 32)
    assert model.hidden_dim == 32 and model.logit_dim == NUM_ACTIONS

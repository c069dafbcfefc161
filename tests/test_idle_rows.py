"""Idle rows: a CoordEnv's rows that have played an evaluation's quota cost no forward."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeVecEnv, RecurrentFakeAgent, fake_agent

from duo_cli.coordination.env import EXPERT, NOVICE, CoordEnv, GeneralCoordEnv

NUM_ACTIONS = 4
NOVICE_ACTION = 1
EXPERT_ACTION = 2


def make_coord(num_envs=3, ep_lengths=100, reward_fn=None, alpha=0.4, bp=2.5,
               open_expert=False, novice=None, expert=None, cls=CoordEnv):
    base = FakeVecEnv(num_envs, NUM_ACTIONS, ep_lengths=ep_lengths, reward_fn=reward_fn)
    novice = novice or fake_agent(NOVICE_ACTION, NUM_ACTIONS, hidden_dim=3)
    expert = expert or fake_agent(EXPERT_ACTION, NUM_ACTIONS, hidden_dim=5)
    env = cls(base, novice, expert, expert_query_cost_weight=alpha, open_expert=open_expert)
    env.set_costs(bp)
    return env, base, novice, expert


def const_reward(value: float):
    return lambda env, actions: np.full(env.num_envs, value, dtype=np.float32)



def test_limit_episodes_idles_rows_that_played_their_quota():
    # slot 0: 1-step episodes, slot 1: 2-step, slot 2: 100-step; one episode per row
    env, base, novice, expert = make_coord(num_envs=3, ep_lengths=[1, 2, 100], alpha=0.5, bp=1.0,
                                           reward_fn=const_reward(1.0))
    env.limit_episodes(1)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.active_rows, [True, True, True])
    obs, reward, *_ = env.step([EXPERT, EXPERT, EXPERT])  # slot 0 ends its episode
    np.testing.assert_array_equal(env.active_rows, [False, True, True])
    assert novice.model.batch_sizes == [3, 2] and expert.model.batch_sizes == [3]
    # an idle row: zero features, counted as NOVICE whatever was chosen, idle base action 0
    np.testing.assert_array_equal(obs["novice_hidden"][0], 0.0)
    np.testing.assert_array_equal(obs["novice_logits"][0], 0.0)
    obs, reward, _, _, info = env.step([EXPERT, EXPERT, NOVICE])
    np.testing.assert_array_equal(info["base_action"], [0, EXPERT_ACTION, NOVICE_ACTION])
    np.testing.assert_allclose(reward, [1.0, 0.5, 1.0])  # no expert cost on the idle row
    assert expert.model.batch_sizes == [3, 1]
    np.testing.assert_array_equal(env.active_rows, [False, False, True])
    assert novice.model.batch_sizes == [3, 2, 1]
    env.step([NOVICE, NOVICE, NOVICE])
    assert novice.model.batch_sizes == [3, 2, 1, 1]
    env.reset(seed=0)  # a reset starts the quota over
    np.testing.assert_array_equal(env.active_rows, [True, True, True])
    assert novice.model.batch_sizes[-1] == 3
    env.limit_episodes(None)
    assert env.active_rows is None
    with pytest.raises(ValueError):
        env.limit_episodes(0)


def test_limit_episodes_with_every_row_idle_runs_no_forward():
    env, _, novice, _ = make_coord(num_envs=2, ep_lengths=1, open_expert=True)
    env.limit_episodes(1)
    env.reset(seed=0)
    obs, *_ = env.step([NOVICE, NOVICE])
    assert novice.model.batch_sizes == [2]  # the observation after the last step: no forward
    assert obs["novice_hidden"].shape == (2, 3) and obs["expert_hidden"].shape == (2, 5)
    assert env.observation_space.contains(obs)


def test_open_expert_runs_on_active_rows_only():
    env, _, novice, expert = make_coord(num_envs=3, ep_lengths=[1, 5, 5], open_expert=True)
    env.limit_episodes(1)
    env.reset(seed=0)
    obs, *_ = env.step([NOVICE, EXPERT, NOVICE])
    assert novice.model.batch_sizes == expert.model.batch_sizes == [3, 2]
    np.testing.assert_array_equal(obs["expert_hidden"][0], 0.0)
    assert obs["expert_hidden"][1:].any() or obs["expert_logits"][1:].any()


def test_general_coord_env_keeps_recurrent_agents_on_every_row():
    n = 2
    novice = RecurrentFakeAgent(n, NOVICE_ACTION, NUM_ACTIONS)
    expert = RecurrentFakeAgent(n, EXPERT_ACTION, NUM_ACTIONS)
    env, *_ = make_coord(num_envs=n, ep_lengths=[1, 100], novice=novice, expert=expert,
                         cls=GeneralCoordEnv)
    env.limit_episodes(1)
    env.reset(seed=0)
    for _ in range(3):
        obs, _, _, _, info = env.step([EXPERT, EXPERT])
    np.testing.assert_array_equal(env.active_rows, [False, True])
    assert novice.model.batch_sizes == expert.model.batch_sizes == [n] * 4  # state per row
    np.testing.assert_array_equal(obs["novice_hidden"][:, 0], [1, 4])  # slot 0 reset each step
    np.testing.assert_array_equal(info["base_action"], [0, EXPERT_ACTION])  # idle: action 0

"""CoordEnv / GeneralCoordEnv and the agents: observation features, forwards per step,
temperature, recurrent state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from coordenv import EXPERT_ACTION, NOVICE_ACTION, NUM_ACTIONS, make_coord
from fakes import CountingModel, FakeAgent, RecurrentFakeAgent

from duo_cli.coordination.env import EXPERT, NOVICE, GeneralCoordEnv


def test_observation_keys_and_space_default():
    env, *_ = make_coord(num_envs=3, open_expert=False)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"base_obs", "novice_hidden", "novice_logits"}
    assert set(env.single_observation_space.spaces) == set(obs)
    assert obs["base_obs"].shape == (3, 8, 8, 3) and obs["base_obs"].dtype == np.uint8
    assert obs["novice_hidden"].shape == (3, 3)
    assert obs["novice_logits"].shape == (3, NUM_ACTIONS)
    assert env.observation_space.contains(obs)
    assert env.single_action_space.n == 2
    assert env.action_space.shape == (3,)


def test_open_expert_adds_expert_keys_matching_space():
    env, _, novice, expert = make_coord(num_envs=3, open_expert=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"base_obs", "novice_hidden", "novice_logits", "expert_hidden",
                        "expert_logits"}
    assert set(env.single_observation_space.spaces) == set(obs)
    for key, value in obs.items():
        assert env.single_observation_space[key].shape == value.shape[1:], key
    assert obs["expert_hidden"].shape == (3, 5)  # the expert's own hidden_dim
    assert obs["expert_logits"].shape == (3, NUM_ACTIONS)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs["expert_logits"][:, EXPERT_ACTION], 1000.0)
    np.testing.assert_allclose(obs["novice_logits"][:, NOVICE_ACTION], 1000.0)
    obs, _, _, _, info = env.step([EXPERT, NOVICE, EXPERT])
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(info["base_action"], [EXPERT_ACTION, NOVICE_ACTION,
                                                        EXPERT_ACTION])


def test_novice_features_are_the_models_output():
    env, base, *_ = make_coord(num_envs=2, ep_lengths=[2, 100])
    obs, _ = env.reset(seed=0)
    # the fake hidden is the first pixel values: step index, then slot index
    np.testing.assert_allclose(obs["novice_hidden"][:, :2], [[0, 0], [0, 1]])
    obs, *_ = env.step([NOVICE, NOVICE])
    np.testing.assert_allclose(obs["novice_hidden"][:, 0], [1.0, 1.0])
    obs, *_ = env.step([NOVICE, NOVICE])  # row 0's episode ends: obs of the new episode
    np.testing.assert_allclose(obs["novice_hidden"][:, 0], [0.0, 2.0])
    np.testing.assert_array_equal(obs["base_obs"][:, 1, 1, 0], [0, 2])


# -- forward counts ---------------------------------------------------------------------


def test_exactly_one_novice_forward_per_step():
    env, _, novice, _ = make_coord(num_envs=3, ep_lengths=[2, 3, 100])
    env.reset(seed=0)
    assert novice.model.calls == 1
    assert novice.model.rows == 3
    script = [[NOVICE] * 3, [EXPERT] * 3, [NOVICE, EXPERT, NOVICE], [EXPERT, NOVICE, NOVICE],
              [NOVICE] * 3]
    for t, action in enumerate(script, start=1):
        env.step(action)
        assert novice.model.calls == 1 + t
    assert novice.model.batch_sizes == [3] * (1 + len(script))
    env.reset(seed=1)
    assert novice.model.calls == 2 + len(script)


def test_expert_forward_only_on_queried_rows():
    env, _, novice, expert = make_coord(num_envs=4)
    env.reset(seed=0)
    assert expert.model.calls == 0
    script = [[NOVICE] * 4, [EXPERT, NOVICE, NOVICE, NOVICE], [NOVICE] * 4,
              [EXPERT, EXPERT, NOVICE, EXPERT], [EXPERT] * 4]
    calls = rows = 0
    for action in script:
        env.step(action)
        k = sum(a == EXPERT for a in action)
        calls += k > 0
        rows += k
        assert expert.model.calls == calls
        assert expert.model.rows == rows
    assert expert.model.batch_sizes == [1, 3, 4]


def test_expert_never_runs_when_nobody_queries():
    env, _, novice, expert = make_coord(num_envs=3, ep_lengths=[1, 2, 3])
    env.reset(seed=0)
    for _ in range(10):
        env.step([NOVICE] * 3)
    assert expert.model.calls == 0
    assert expert.model.rows == 0
    assert novice.model.calls == 11


def test_open_expert_runs_expert_once_per_step_on_all_rows():
    env, _, novice, expert = make_coord(num_envs=3, open_expert=True)
    env.reset(seed=0)
    for action in ([NOVICE] * 3, [EXPERT, NOVICE, EXPERT], [EXPERT] * 3):
        env.step(action)
    assert expert.model.calls == novice.model.calls == 4
    assert expert.model.batch_sizes == [3] * 4


def test_reset_puts_agents_in_eval_mode_and_resets_all_rows():
    env, _, novice, expert = make_coord(num_envs=2, ep_lengths=[1, 100])
    env.reset(seed=3)
    assert novice.eval_calls == 1 and expert.eval_calls == 1
    np.testing.assert_array_equal(novice.reset_masks[0], [True, True])
    env.step([NOVICE, NOVICE])  # row 0 ends
    np.testing.assert_array_equal(novice.reset_masks[-1], [True, False])
    np.testing.assert_array_equal(expert.reset_masks[-1], [True, False])


# -- set_costs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [0, 0.0, -1.0, -1e-9, math.nan, math.inf, -math.inf, "abc", None, "nan"]
)
def test_set_costs_refuses_non_positive_or_non_finite(bad):
    env, *_ = make_coord(bp=None)
    with pytest.raises(ValueError):
        env.set_costs(bad)
    assert env.base_penalty is None


def test_step_before_set_costs_raises():
    env, base, *_ = make_coord(bp=None)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="set_costs"):
        env.step([NOVICE, NOVICE, NOVICE])
    assert base.actions == []  # the base env was not stepped


# -- temperature ------------------------------------------------------------------------


def test_temperature_zero_is_greedy():
    soft_novice = FakeAgent(CountingModel([0.0, 2.0, 1.0, 0.0]))
    soft_expert = FakeAgent(CountingModel([3.0, 0.0, 0.0, 2.5]))
    env, *_ = make_coord(
        num_envs=4, temperature=0.0, novice=soft_novice, expert=soft_expert
    )
    env.reset(seed=0)
    for _ in range(30):
        _, _, _, _, info = env.step([NOVICE, EXPERT, NOVICE, EXPERT])
        np.testing.assert_array_equal(info["base_action"], [1, 0, 1, 0])


def test_temperature_one_samples():
    soft_novice = FakeAgent(CountingModel([0.0, 2.0, 1.0, 0.0]))
    env, *_ = make_coord(num_envs=4, temperature=1.0, novice=soft_novice)
    env.reset(seed=0)
    seen = set()
    for _ in range(30):
        _, _, _, _, info = env.step([NOVICE] * 4)
        seen.update(info["base_action"].tolist())
    assert len(seen) >= 2  # P(only action 1 in 120 draws) < 1e-20


# -- GeneralCoordEnv --------------------------------------------------------------------


def test_general_coord_env_resets_agent_state_where_episodes_end():
    n = 3
    novice = RecurrentFakeAgent(n, NOVICE_ACTION, NUM_ACTIONS)
    expert = RecurrentFakeAgent(n, EXPERT_ACTION, NUM_ACTIONS)
    env, base, *_ = make_coord(
        num_envs=n, ep_lengths=[2, 3, 100], novice=novice, expert=expert, cls=GeneralCoordEnv,
        alpha=0.0,
    )
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"base_obs", "novice_hidden", "novice_logits"}
    np.testing.assert_array_equal(novice.reset_masks[0], [True] * n)
    np.testing.assert_array_equal(expert.reset_masks[0], [True] * n)
    np.testing.assert_allclose(obs["novice_hidden"][:, 0], [1, 1, 1])
    steps_in_episode = np.zeros(n, dtype=np.int64)
    for t in range(7):
        action = [EXPERT if (t + i) % 2 else NOVICE for i in range(n)]
        obs, _, term, trunc, info = env.step(action)
        done = term | trunc
        steps_in_episode += 1
        steps_in_episode[done] = 0
        if done.any():
            np.testing.assert_array_equal(novice.reset_masks[-1], done)
            np.testing.assert_array_equal(expert.reset_masks[-1], done)
        # state = forwards since the row's episode started (1 on a fresh episode)
        np.testing.assert_array_equal(obs["novice_hidden"][:, 0], steps_in_episode + 1)
        np.testing.assert_array_equal(expert.state, steps_in_episode + 1)
        expected = np.where(np.asarray(action) == EXPERT, EXPERT_ACTION, NOVICE_ACTION)
        np.testing.assert_array_equal(info["base_action"], expected)
    # both agents advance on every row at every step
    assert novice.model.calls == expert.model.calls == 8
    assert expert.model.batch_sizes == [n] * 8
    assert env.observation_space.contains(obs)


def test_general_coord_env_open_expert_keeps_expert_keys():
    n = 2
    novice = RecurrentFakeAgent(n, NOVICE_ACTION, NUM_ACTIONS)
    expert = RecurrentFakeAgent(n, EXPERT_ACTION, NUM_ACTIONS, hidden_dim=4)
    env, *_ = make_coord(num_envs=n, novice=novice, expert=expert, cls=GeneralCoordEnv,
                         open_expert=True)
    obs, _ = env.reset(seed=0)
    assert obs["expert_hidden"].shape == (n, 4)
    obs, *_ = env.step([EXPERT, NOVICE])
    np.testing.assert_allclose(obs["expert_hidden"][:, 0], [2, 2])
    assert env.observation_space.contains(obs)


def test_close_closes_base_env():
    env, base, *_ = make_coord()
    env.close()
    assert base.closed

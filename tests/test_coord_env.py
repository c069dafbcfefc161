"""CoordEnv's rules on a scripted fake vector env: costs, switches, episode sums.

The agents' forwards and features: ``test_coord_env_agents.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from coordenv import EXPERT_ACTION, NOVICE_ACTION, const_reward, make_coord
from fakes import scripted_reward

from duo_cli.coordination.env import EXPERT, NOVICE

# -- costs ------------------------------------------------------------------------------


def test_query_cost_charged_only_on_expert_rows():
    env, *_ = make_coord(num_envs=3, reward_fn=const_reward(0.5), alpha=0.4, beta=0.0, bp=2.5)
    assert env.expert_query_cost_per_action == pytest.approx(1.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step([EXPERT, NOVICE, EXPERT])
    np.testing.assert_allclose(reward, [0.5 - 1.0, 0.5, 0.5 - 1.0], rtol=1e-6)
    assert reward.dtype == np.float32
    np.testing.assert_allclose(info["base_reward"], [0.5, 0.5, 0.5])
    _, reward, _, _, _ = env.step([NOVICE, NOVICE, EXPERT])
    np.testing.assert_allclose(reward, [0.5, 0.5, 0.5 - 1.0], rtol=1e-6)


def test_switch_cost_when_exactly_one_env_switches():
    env, *_ = make_coord(num_envs=3, alpha=0.0, beta=0.5, bp=2.0)
    assert env.switch_agent_cost_per_action == pytest.approx(1.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step([NOVICE, NOVICE, NOVICE])
    np.testing.assert_array_equal(reward, [0.0, 0.0, 0.0])  # first step: never a switch
    np.testing.assert_array_equal(info["switched"], [False, False, False])
    _, reward, _, _, info = env.step([NOVICE, EXPERT, NOVICE])
    np.testing.assert_allclose(reward, [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(info["switched"], [False, True, False])
    _, reward, _, _, info = env.step([NOVICE, EXPERT, NOVICE])  # no change: no cost
    np.testing.assert_allclose(reward, [0.0, 0.0, 0.0])


def test_switch_cost_when_several_envs_switch():
    env, *_ = make_coord(num_envs=4, alpha=0.0, beta=0.5, bp=2.0)
    env.reset(seed=0)
    env.step([NOVICE, NOVICE, EXPERT, EXPERT])
    _, reward, _, _, info = env.step([EXPERT, NOVICE, NOVICE, EXPERT])
    np.testing.assert_allclose(reward, [-1.0, 0.0, -1.0, 0.0])
    _, reward, _, _, _ = env.step([NOVICE, EXPERT, EXPERT, NOVICE])
    np.testing.assert_allclose(reward, [-1.0, -1.0, -1.0, -1.0])


def test_query_and_switch_costs_add_up():
    env, *_ = make_coord(
        num_envs=2, reward_fn=const_reward(1.0), alpha=0.4, beta=0.1, bp=10.0
    )  # query 4.0, switch 1.0
    env.reset(seed=0)
    _, reward, _, _, _ = env.step([NOVICE, EXPERT])
    np.testing.assert_allclose(reward, [1.0, 1.0 - 4.0], rtol=1e-6)
    _, reward, _, _, _ = env.step([EXPERT, NOVICE])
    np.testing.assert_allclose(reward, [1.0 - 4.0 - 1.0, 1.0 - 1.0], rtol=1e-6)


def test_switch_cost_never_across_episode_boundary():
    # row 0: episodes of 2 steps; row 1: one long episode
    env, base, *_ = make_coord(num_envs=2, ep_lengths=[2, 100], alpha=0.0, beta=0.5, bp=2.0)
    env.reset(seed=0)
    _, reward, term, _, _ = env.step([NOVICE, NOVICE])
    assert not term.any()
    np.testing.assert_allclose(reward, [0.0, 0.0])
    # last step of row 0's episode: it switches there, and pays for it
    _, reward, term, _, info = env.step([EXPERT, NOVICE])
    np.testing.assert_array_equal(term, [True, False])
    np.testing.assert_allclose(reward, [-1.0, 0.0])
    assert info["switched"][0]
    # first step of the new episode: a different agent than the last step, but no switch
    _, reward, term, _, info = env.step([NOVICE, NOVICE])
    assert not term.any()
    np.testing.assert_allclose(reward, [0.0, 0.0])
    assert not info["switched"][0]
    # inside the new episode switches count again
    _, reward, term, _, _ = env.step([EXPERT, EXPERT])
    np.testing.assert_array_equal(term, [True, False])
    np.testing.assert_allclose(reward, [-1.0, -1.0])
    # a new episode starting with the same agent as the old one ended with: still no cost
    _, reward, _, _, info = env.step([EXPERT, EXPERT])
    np.testing.assert_allclose(reward, [0.0, 0.0])
    assert not info["switched"].any()


def test_reset_forgets_previous_agent():
    env, *_ = make_coord(num_envs=2, alpha=0.0, beta=0.5, bp=2.0)
    env.reset(seed=0)
    env.step([EXPERT, EXPERT])
    env.reset(seed=0)
    _, reward, _, _, info = env.step([NOVICE, NOVICE])
    np.testing.assert_allclose(reward, [0.0, 0.0])
    assert not info["switched"].any()


def test_beta_zero_never_charges_switches():
    env, *_ = make_coord(num_envs=2, reward_fn=const_reward(0.25), alpha=0.4, beta=0.0, bp=1.0)
    env.reset(seed=0)
    rewards = []
    for action in ([NOVICE, EXPERT], [EXPERT, NOVICE], [NOVICE, EXPERT], [EXPERT, NOVICE]):
        _, reward, _, _, info = env.step(action)
        assert info["switched"].sum() == (0 if not rewards else 2)
        expected = 0.25 - 0.4 * (np.asarray(action) == EXPERT)
        np.testing.assert_allclose(reward, expected, rtol=1e-6)
        rewards.append(reward)
    assert env.switch_agent_cost_per_action == 0.0


def test_alpha_zero_makes_expert_free():
    env, base, novice, expert = make_coord(
        num_envs=2, reward_fn=const_reward(0.25), alpha=0.0, beta=0.0, bp=3.0
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step([EXPERT, EXPERT])
    np.testing.assert_allclose(reward, [0.25, 0.25])
    np.testing.assert_array_equal(info["base_action"], [EXPERT_ACTION, EXPERT_ACTION])
    assert env.expert_query_cost_per_action == 0.0


def test_cost_weights_scale_with_base_penalty():
    env, *_ = make_coord(alpha=0.3, beta=0.2, bp=None)
    env.set_costs(5)
    assert env.base_penalty == 5.0
    assert env.expert_query_cost_per_action == pytest.approx(1.5)
    assert env.switch_agent_cost_per_action == pytest.approx(1.0)
    env.set_costs(0.5)  # may be called again with a new BP
    assert env.expert_query_cost_per_action == pytest.approx(0.15)


# -- actions and info -------------------------------------------------------------------


def test_info_base_action_comes_from_the_acting_agent():
    rewards = np.arange(15, dtype=np.float32).reshape(5, 3)
    env, base, *_ = make_coord(num_envs=3, reward_fn=scripted_reward(rewards))
    env.reset(seed=0)
    script = [[NOVICE, EXPERT, NOVICE], [EXPERT, EXPERT, EXPERT], [NOVICE, NOVICE, NOVICE],
              [EXPERT, NOVICE, EXPERT]]
    for t, action in enumerate(script):
        _, _, _, _, info = env.step(action)
        expected = np.where(np.asarray(action) == EXPERT, EXPERT_ACTION, NOVICE_ACTION)
        np.testing.assert_array_equal(info["base_action"], expected)
        np.testing.assert_array_equal(base.actions[-1], expected)  # what the base env got
        np.testing.assert_array_equal(info["base_reward"], rewards[t])
    # info arrays are not aliased to internal buffers
    first = info["base_action"].copy()
    env.step([NOVICE, NOVICE, NOVICE])
    np.testing.assert_array_equal(info["base_action"], first)


def test_episode_info_reports_cost_and_base_returns():
    env, *_ = make_coord(
        num_envs=2, ep_lengths=[3, 100], reward_fn=const_reward(1.0), alpha=0.5, beta=0.0,
        bp=1.0,
    )
    env.reset(seed=0)
    env.step([EXPERT, NOVICE])
    env.step([NOVICE, NOVICE])
    _, _, term, _, info = env.step([EXPERT, NOVICE])
    np.testing.assert_array_equal(term, [True, False])
    np.testing.assert_array_equal(info["_episode"], [True, False])
    assert info["episode"]["l"][0] == 3
    assert info["episode"]["base_r"][0] == pytest.approx(3.0)
    assert info["episode"]["r"][0] == pytest.approx(3.0 - 2 * 0.5)

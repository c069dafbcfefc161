"""Evaluator: per-slot quotas, exactly N episodes, CI, coordination stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes import FakeVecEnv, fake_agent
from fakes import ScriptedPolicy as _Scripted

from duo_cli.coordination.env import EXPERT, NOVICE, CoordEnv
from duo_cli.evaluation.evaluator import Evaluator
from duo_cli.evaluation.statistics import mean_ci95, summarize_episodes
from duo_cli.policies.base import Policy


def one_per_step(env, actions):
    return np.ones(env.num_envs, dtype=np.float32)


class ScriptedPolicy(_Scripted):
    """The fakes' scripted policy, declared stateful: its script has a column per slot and a
    step counter, so it acts on every row (idle ones included)."""

    stateful = True


class CoordFakeEnv(FakeVecEnv):
    """A fake env that declares, like a CoordEnv, that it reports coordination sums.

    Its reported sums are made up (``base_r = 10 * r``, 1 expert step and 2 switches per
    episode, whatever the actions), so a test sees that the Evaluator takes them as given.
    """

    EXPERT = 1
    reports_coordination = True

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        if "episode" in info:
            ep, done = info["episode"], info["_episode"]
            ep["base_r"] = 10 * ep["r"]
            ep["expert_steps"] = np.where(done, 1, 0)
            ep["switches"] = np.where(done, 2, 0)
        return obs, reward, terminated, truncated, info


class UndeclaredFakeEnv(FakeVecEnv):
    """Has an ``EXPERT`` attribute but declares nothing: an agent's env to the Evaluator."""

    EXPERT = 1


# -- mean / CI --------------------------------------------------------------------------


def test_mean_ci95_hand_numbers():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, ci = mean_ci95(values)
    # std(ddof=1) = sqrt(((1.5^2 + .5^2) * 2) / 3) = sqrt(5/3) = 1.2909944
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert ci == pytest.approx(1.2651745, abs=1e-6)


def test_mean_ci95_edge_cases():
    assert mean_ci95(np.array([5.0])) == (5.0, 0.0)
    mean, ci = mean_ci95(np.array([]))
    assert math.isnan(mean) and math.isnan(ci)
    assert mean_ci95(np.array([2.0, 2.0, 2.0])) == (2.0, 0.0)


def test_summarize_episodes_hand_numbers():
    # (k, slot, reward, base, length, expert steps, switches)
    records = [
        (0, 1, 2.0, 3.0, 4, 2, 1),
        (0, 0, 1.0, 1.0, 2, 0, 0),
        (1, 0, 3.0, 5.0, 6, 3, 2),
        (1, 1, 4.0, 7.0, 8, 1, 1),
        (2, 0, 100.0, 100.0, 1, 1, 0),  # beyond num_episodes: dropped
    ]
    res = summarize_episodes(records, num_episodes=4, total_steps=123, coordinating=True)
    assert res["episodes"] == 4
    assert res["rewards"] == [1.0, 2.0, 3.0, 4.0]  # (k, slot) order
    assert res["base_rewards"] == [1.0, 3.0, 5.0, 7.0]
    assert res["reward_mean"] == pytest.approx(2.5)
    assert res["reward_ci95"] == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert res["base_reward_mean"] == pytest.approx(4.0)
    assert res["base_reward_ci95"] == pytest.approx(1.96 * np.std([1, 3, 5, 7], ddof=1) / 2)
    assert res["episode_length_mean"] == pytest.approx(5.0)
    assert res["episode_length_min"] == 2 and res["episode_length_max"] == 8
    assert res["steps"] == 123
    assert res["expert_frac"] == pytest.approx(6 / 20)
    assert res["switches_mean"] == pytest.approx(1.0)


def test_summarize_episodes_for_agents_has_no_coordination_stats():
    res = summarize_episodes([(0, 0, 1.0, 1.0, 3, 0, 0)], 1, 3, coordinating=False)
    assert "expert_frac" not in res and "switches_mean" not in res
    assert res["reward_ci95"] == 0.0


def test_summarize_no_episodes():
    res = summarize_episodes([], 4, 0, coordinating=True)
    assert res["episodes"] == 0
    assert math.isnan(res["reward_mean"])
    assert res["expert_frac"] == 0.0


# -- Evaluator --------------------------------------------------------------------------


def test_slot_quota_keeps_short_episodes_from_dominating():
    # slot 0: 1-step episodes; slot 1: 5-step episodes; reward 1 per step
    env = FakeVecEnv(2, 4, ep_lengths=[1, 5], reward_fn=one_per_step)
    ev = Evaluator(env, num_episodes=4, seed=11)
    res = ev.evaluate(fake_agent(0))
    assert env.reset_seeds == [11]
    assert res["episodes"] == 4
    # quota = ceil(4 / 2) = 2 episodes per slot: two of length 1, two of length 5
    assert sorted(res["rewards"]) == [1.0, 1.0, 5.0, 5.0]
    assert res["reward_mean"] == pytest.approx(3.0)
    assert res["reward_ci95"] == pytest.approx(1.96 * np.std([1, 1, 5, 5], ddof=1) / 2)
    assert res["episode_length_min"] == 1 and res["episode_length_max"] == 5
    assert res["steps"] == 2 * 10  # ran until slot 1 finished its 2 episodes
    assert "expert_frac" not in res


def test_exactly_n_episodes_when_n_not_divisible():
    env = FakeVecEnv(2, 4, ep_lengths=[1, 5], reward_fn=one_per_step)
    res = Evaluator(env, num_episodes=3, seed=0).evaluate(fake_agent(0))
    assert res["episodes"] == 3
    # kept in (k, slot) order: (0, slot0), (0, slot1), (1, slot0)
    assert res["rewards"] == [1.0, 5.0, 1.0]


@pytest.mark.parametrize(("num_envs", "num_episodes"), [(1, 3), (3, 3), (4, 3), (3, 7)])
def test_exactly_n_episodes_various_shapes(num_envs, num_episodes):
    lengths = [[1 + (i % 3), 2 + i] for i in range(num_envs)]
    env = FakeVecEnv(num_envs, 4, ep_lengths=lengths, reward_fn=one_per_step)
    res = Evaluator(env, num_episodes=num_episodes, seed=0).evaluate(fake_agent(0))
    assert res["episodes"] == num_episodes
    quota = math.ceil(num_episodes / num_envs)
    assert len(res["rewards"]) == num_episodes
    assert res["steps"] % num_envs == 0
    assert res["steps"] >= num_envs * quota


def test_same_seed_same_result_and_policy_resets():
    env = FakeVecEnv(2, 4, ep_lengths=[[2, 3], [4]], reward_fn=one_per_step)
    script = [[0, 1], [1, 0], [1, 1]]
    policy = ScriptedPolicy(script)
    ev = Evaluator(env, num_episodes=4, seed=5)
    a = ev.evaluate(policy)
    b = ev.evaluate(ScriptedPolicy(script))
    assert a == b
    assert env.reset_seeds == [5, 5]
    np.testing.assert_array_equal(policy.reset_masks[0], [True, True])


def test_declared_coordination_env_sums_are_taken_as_reported():
    env = CoordFakeEnv(2, 2, ep_lengths=[4, 2], reward_fn=one_per_step)
    policy = ScriptedPolicy([[0, 1], [1, 1], [1, 0], [0, 0]])
    res = Evaluator(env, num_episodes=4, seed=0).evaluate(policy)
    assert res["episodes"] == 4
    assert res["rewards"] == [4.0, 2.0, 4.0, 2.0]  # (k, slot) order
    assert res["base_rewards"] == [40.0, 20.0, 40.0, 20.0]  # as reported, not recounted
    assert res["lengths"] == [4, 2, 4, 2]
    assert res["expert_steps"] == [1, 1, 1, 1] and res["switches"] == [2, 2, 2, 2]
    assert res["expert_frac"] == pytest.approx(4 / 12)
    assert res["switches_mean"] == pytest.approx(2.0)


def test_an_expert_attribute_alone_is_not_a_coordination_env():
    env = UndeclaredFakeEnv(1, 2, ep_lengths=4, reward_fn=one_per_step)
    res = Evaluator(env, num_episodes=2, seed=0).evaluate(ScriptedPolicy([[1]]))
    assert res["rewards"] == [4.0, 4.0] and res["base_rewards"] == [4.0, 4.0]
    assert "expert_frac" not in res and "switches_mean" not in res


def test_evaluator_on_coord_env_uses_base_reward():
    base = FakeVecEnv(2, 4, ep_lengths=[2, 3], reward_fn=one_per_step)
    env = CoordEnv(base, fake_agent(1), fake_agent(2), expert_query_cost_weight=0.5,
                   switch_agent_cost_weight=0.25)
    env.set_costs(1.0)
    always_expert = ScriptedPolicy([[EXPERT, EXPERT]])
    res = Evaluator(env, num_episodes=2, seed=0).evaluate(always_expert)
    assert res["episodes"] == 2
    assert sorted(res["base_rewards"]) == [2.0, 3.0]
    assert sorted(res["rewards"]) == [2.0 - 2 * 0.5, 3.0 - 3 * 0.5]
    assert res["expert_frac"] == 1.0
    assert res["switches_mean"] == 0.0

    alternate = ScriptedPolicy([[NOVICE, NOVICE], [EXPERT, EXPERT]])
    res = Evaluator(env, num_episodes=2, seed=0).evaluate(alternate)
    # slot 0: N E (1 switch, 1 expert); slot 1: N E N (2 switches, 1 expert)
    assert res["rewards"] == pytest.approx([2 - 0.5 - 0.25, 3 - 0.5 - 0.5])
    assert res["switches_mean"] == pytest.approx(1.5)
    assert res["expert_frac"] == pytest.approx(2 / 5)


def test_num_episodes_must_be_positive():
    with pytest.raises(ValueError):
        Evaluator(FakeVecEnv(), num_episodes=0, seed=0)


# -- finished slots cost no forward -----------------------------------------------------


class CountingCoordinator(Policy):
    """A stateless coordinator asking the expert on every row it is given; records batch sizes."""

    def __init__(self):
        self.batch_sizes: list[int] = []

    def act(self, obs, temperature=1.0):
        n = len(obs["base_obs"])
        self.batch_sizes.append(n)
        return np.full(n, EXPERT, dtype=np.int64)


@pytest.mark.parametrize("skip", [True, False])
def test_finished_slots_cost_no_policy_forward(skip):
    # slot 0: 1-step episodes, slot 1: 5-step ones; quota 2: slot 0 is done after 2 steps
    env = FakeVecEnv(2, 4, ep_lengths=[1, 5], reward_fn=one_per_step)
    agent = fake_agent(3)
    res = Evaluator(env, num_episodes=4, seed=0, skip_finished=skip).evaluate(agent)
    assert res["rewards"] == [1.0, 5.0, 1.0, 5.0] and res["steps"] == 2 * 10
    if skip:
        assert agent.model.batch_sizes == [2, 2] + [1] * 8
        # the idle slot still steps, with the fixed action 0
        assert [a.tolist() for a in env.actions] == [[3, 3]] * 2 + [[0, 3]] * 8
    else:
        assert agent.model.batch_sizes == [2] * 10


def _coord_run(skip: bool, open_expert: bool = False):
    # quota 2: slot 0 (1-step episodes) idles after step 2, slot 2 (2 steps) after step 4,
    # slot 1 (3 steps) ends the run at step 6
    base = FakeVecEnv(3, 4, ep_lengths=[1, 3, 2], reward_fn=one_per_step)
    novice, expert = fake_agent(1), fake_agent(2)
    env = CoordEnv(base, novice, expert, expert_query_cost_weight=0.5, open_expert=open_expert)
    env.set_costs(1.0)
    coordinator = CountingCoordinator()
    res = Evaluator(env, num_episodes=6, seed=0, skip_finished=skip).evaluate(coordinator)
    return res, base, novice.model, expert.model, coordinator, env


def test_finished_slots_cost_no_coordinator_novice_or_expert_forward():
    res, base, novice, expert, coordinator, env = _coord_run(skip=True)
    # observe at reset and after each of the 6 steps: no forward once every slot is done
    assert novice.batch_sizes == [3, 3, 2, 2, 1, 1]
    assert coordinator.batch_sizes == [3, 3, 2, 2, 1, 1]
    assert expert.batch_sizes == [3, 3, 2, 2, 1, 1]  # the expert on the rows that ask
    # idle slots step with the idle action (0), never the expert's 2
    assert [a.tolist() for a in base.actions] == [[2, 2, 2]] * 2 + [[0, 2, 2]] * 2 + [[0, 2, 0]] * 2
    assert env.active_rows is None  # the limit is lifted after the evaluation
    _, _, novice_old, expert_old, coordinator_old, _ = _coord_run(skip=False)
    assert novice_old.batch_sizes == [3] * 7 and expert_old.batch_sizes == [3] * 6
    assert coordinator_old.batch_sizes == [3] * 6


@pytest.mark.parametrize("open_expert", [True, False])
def test_deterministic_results_identical_with_and_without_skipping(open_expert):
    new, *_ = _coord_run(skip=True, open_expert=open_expert)
    old, *_ = _coord_run(skip=False, open_expert=open_expert)
    assert new == old
    assert new["rewards"] == [1 - 0.5, 3 - 1.5, 2 - 1.0] * 2  # (k, slot) order


def test_a_stateful_policy_acts_on_every_row():
    env = FakeVecEnv(2, 4, ep_lengths=[1, 3], reward_fn=one_per_step)
    policy = ScriptedPolicy([[1, 2]])
    Evaluator(env, num_episodes=4, seed=0).evaluate(policy)
    assert policy.t == 6  # one act per step, on both rows
    # its actions on the idle slot are replaced by the fixed action 0
    assert [a.tolist() for a in env.actions] == [[1, 2]] * 2 + [[0, 2]] * 4


# -- the paired design on a real env ----------------------------------------------------


class LevelRecorder:
    """Wraps a MiniGrid vector env; records each slot's levels in the order it meets them."""

    def __init__(self, env):
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.levels: list[list[int]] = [[] for _ in range(env.num_envs)]

    def _record(self, info):
        for i in np.flatnonzero(info["_level"]):
            self.levels[i].append(int(info["level"][i]))

    def reset(self, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.levels = [[] for _ in range(self.num_envs)]
        self._record(info)
        return obs, info

    def step(self, actions):
        out = self.env.step(actions)
        if "_level" in out[4]:
            self._record(out[4])
        return out

    def close(self):
        self.env.close()


def _minigrid_levels(skip: bool, coordinator: str | None, temperature: float, quota: int = 3):
    from duo_cli.agents import load_agent
    from duo_cli.envs.minigrid import MiniGridVecEnv
    from duo_cli.policies.logit import LogitPolicy
    from duo_cli.policies.random import RandomPolicy

    n = 4
    base = LevelRecorder(MiniGridVecEnv("LavaGap", n, "hard", start_level=0, num_levels=1000))
    novice = load_agent("checkpoints/minigrid/LavaGap/novice.pt")[0]
    expert = load_agent("checkpoints/minigrid/LavaGap/expert.pt")[0]
    env, policy = base, novice
    if coordinator is not None:
        env = CoordEnv(base, novice, expert, temperature=temperature)
        env.set_costs(0.1)
        policy = (RandomPolicy({"p": 0.5}, env, seed=1) if coordinator == "random" else
                  LogitPolicy({"metric": "max_prob", "threshold": 0.9}, env))
    ev = Evaluator(env, num_episodes=n * quota, seed=7, temperature=temperature,
                   skip_finished=skip)
    res = ev.evaluate(policy)
    return res, [levels[:quota] for levels in base.levels]


@pytest.mark.slow
@pytest.mark.parametrize("coordinator", ["random", None])
def test_each_slot_meets_the_same_levels_with_and_without_skipping(coordinator):
    new, new_levels = _minigrid_levels(True, coordinator, temperature=1.0)
    old, old_levels = _minigrid_levels(False, coordinator, temperature=1.0)
    assert new_levels == old_levels  # sampled actions differ, the levels per slot do not
    assert all(len(set(levels)) == 3 for levels in new_levels)  # distinct levels per slot
    assert new["episodes"] == old["episodes"] == 12


@pytest.mark.slow
@pytest.mark.parametrize("coordinator", ["logit", None])
def test_greedy_policies_score_identically_with_and_without_skipping(coordinator):
    new, _ = _minigrid_levels(True, coordinator, temperature=0.0)
    old, _ = _minigrid_levels(False, coordinator, temperature=0.0)
    assert new == old

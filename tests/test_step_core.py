"""The coordination step core: costs, switches, episode sums and the agents' work, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import CountingModel, FakeAgent, fake_agent

from duo_cli.coordination import env as coord_env
from duo_cli.coordination.step import (
    EXPERT,
    NO_ACTOR,
    NOVICE,
    AgentStep,
    EpisodeSums,
    charge,
    step_costs,
)
from duo_cli.policies.base import sample_actions
from duo_cli.serve import coordinator as served
from duo_cli.serve import episodes
from duo_cli.serve.episodes import APPLICATION, Episode

N, E = NOVICE, EXPERT


def test_actor_ids_are_defined_once():
    assert (NOVICE, EXPERT, NO_ACTOR) == (0, 1, -1)
    for module in (coord_env, served, episodes):
        assert (module.NOVICE, module.EXPERT) == (NOVICE, EXPERT)
    assert (coord_env.CoordEnv.NOVICE, coord_env.CoordEnv.EXPERT) == (NOVICE, EXPERT)
    assert coord_env.step_costs is step_costs
    assert APPLICATION not in (NOVICE, EXPERT, NO_ACTOR)


# -- step_costs ---------------------------------------------------------------------------


def test_step_costs_by_hand():
    assert step_costs(2.0, 0.4, 0.25) == (0.8, 0.5)
    assert step_costs(0.0213, 0.6, 1.0, decimals=2) == (0.01, 0.02)
    assert step_costs(0.0213, 0.2, 0.0, decimals=2) == (0.0, 0.0)  # 0.00426 rounds to 0
    assert step_costs(0.125, 1.0, 0.5, decimals=2) == (0.12, 0.06)  # half to even
    expert, switch = step_costs(3, 1, 0)
    assert type(expert) is float and type(switch) is float


# -- charge -------------------------------------------------------------------------------


def test_charge_expert_and_switch_costs_by_hand():
    # rows:          start:N  start:E  N->N  N->E  E->E  E->N
    actor = np.array([N, E, N, E, E, N])
    prev = np.array([NO_ACTOR, NO_ACTOR, N, N, E, E])
    base = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=np.float32)
    reward, cost, switched = charge(actor, prev, 0.4, 0.25, base)
    np.testing.assert_array_equal(switched, [False, False, False, True, False, True])
    np.testing.assert_allclose(cost, [0.0, 0.4, 0.0, 0.65, 0.4, 0.25])
    np.testing.assert_allclose(reward, [1.0, 0.6, 1.0, 0.35, 0.6, -0.25])
    assert reward.dtype == np.float64 and cost.dtype == np.float64


def test_charge_subtracts_in_coordenv_order():
    base = np.array([0.7], dtype=np.float32)
    reward, cost, _ = charge(np.array([E]), np.array([N]), 0.1, 0.2, base)
    x = np.float64(base[0])
    assert (x - 0.1) - 0.2 != x - (0.1 + 0.2)  # the two orders differ in the last bit here
    assert reward[0] == (x - 0.1) - 0.2  # CoordEnv's order, as before the core existed
    assert cost[0] == 0.1 + 0.2


def test_first_step_of_an_episode_is_never_a_switch():
    for actor in (N, E):
        _, cost, switched = charge(actor, NO_ACTOR, 0.0, 5.0)
        assert not switched and cost == 0.0
    assert charge(N, -7, 0.0, 5.0)[2] == np.False_  # any negative previous actor


def test_charge_scalars_match_rows():
    actor, prev = np.array([N, E, E, N]), np.array([NO_ACTOR, N, E, E])
    _, costs, switches = charge(actor, prev, 0.04, 0.05)
    for i in range(4):
        _, cost, switched = charge(int(actor[i]), int(prev[i]), 0.04, 0.05)
        assert np.ndim(cost) == 0 and float(cost) == costs[i] and bool(switched) == switches[i]


def test_zero_costs_cost_nothing():
    reward, cost, switched = charge(np.array([E, N]), np.array([N, E]), 0.0, 0.0,
                                    np.array([2.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(cost, [0.0, 0.0])
    np.testing.assert_array_equal(reward, [2.0, 3.0])
    np.testing.assert_array_equal(switched, [True, True])  # still counted as switches


# -- EpisodeSums --------------------------------------------------------------------------


def _play(sums: EpisodeSums, actor, base, done, expert_cost=0.5, switch_cost=0.25):
    actor, done = np.asarray(actor), np.asarray(done, dtype=bool)
    base = np.asarray(base, dtype=np.float32)
    reward, _, switched = charge(actor, sums.prev_actor, expert_cost, switch_cost, base)
    reward = reward.astype(np.float32)
    return reward, switched, sums.add(actor, switched, reward, base, done)


def test_episode_sums_by_hand():
    sums = EpisodeSums(2)
    # row 0: N E | E N ... (ends after 2 steps); row 1: E E E (ends after 3 steps)
    r, sw, ended = _play(sums, [N, E], [1.0, 0.0], [False, False])
    assert ended is None
    np.testing.assert_array_equal(r, np.array([1.0, -0.5], dtype=np.float32))
    np.testing.assert_array_equal(sums.prev_actor, [N, E])
    r, sw, ended = _play(sums, [E, E], [2.0, 0.0], [True, False])
    np.testing.assert_array_equal(sw, [True, False])
    np.testing.assert_array_equal(r, np.array([1.25, -0.5], dtype=np.float32))
    assert set(ended) == {"r", "base_r", "l", "expert_steps", "switches"}
    np.testing.assert_array_equal(ended["r"], [1.0 + 1.25, 0.0])
    np.testing.assert_array_equal(ended["base_r"], [3.0, 0.0])
    np.testing.assert_array_equal(ended["l"], [2, 0])
    np.testing.assert_array_equal(ended["expert_steps"], [1, 0])
    np.testing.assert_array_equal(ended["switches"], [1, 0])
    assert ended["r"].dtype == np.float64 and ended["l"].dtype == np.int64
    # row 0 starts over: its previous actor is forgotten (no switch across the boundary)
    np.testing.assert_array_equal(sums.prev_actor, [NO_ACTOR, E])
    assert sums.ret[0] == 0.0 and sums.length[0] == 0 and sums.switches[0] == 0
    r, sw, ended = _play(sums, [N, N], [0.0, 1.0], [False, True])
    np.testing.assert_array_equal(sw, [False, True])  # row 0: first step; row 1: E -> N
    np.testing.assert_array_equal(ended["r"], [0.0, -0.5 - 0.5 + 0.75])
    np.testing.assert_array_equal(ended["base_r"], [0.0, 1.0])
    np.testing.assert_array_equal(ended["l"], [0, 3])
    np.testing.assert_array_equal(ended["expert_steps"], [0, 2])
    np.testing.assert_array_equal(ended["switches"], [0, 1])
    assert sums.length[0] == 1 and sums.prev_actor[0] == N


def test_episode_sums_add_float32_rewards_in_float64():
    sums = EpisodeSums(1)
    total = np.float64(0.0)
    for _ in range(10):
        r, _, _ = _play(sums, [E], [0.1], [False], expert_cost=0.03, switch_cost=0.0)
        total += r[0]
    assert sums.ret[0] == total and sums.ret.dtype == np.float64
    assert sums.base_ret[0] == sum(np.float64(np.float32(0.1)) for _ in range(10))


def test_episode_sums_reset():
    sums = EpisodeSums(3)
    _play(sums, [E, E, N], [1.0, 1.0, 1.0], [False] * 3)
    sums.reset(np.array([True, False, False]))
    np.testing.assert_array_equal(sums.prev_actor, [NO_ACTOR, E, N])
    np.testing.assert_array_equal(sums.length, [0, 1, 1])
    np.testing.assert_array_equal(sums.expert_steps, [0, 1, 0])
    sums.reset()
    np.testing.assert_array_equal(sums.prev_actor, [NO_ACTOR] * 3)
    assert not sums.ret.any() and not sums.length.any()


# -- the server's episodes use the same charge ---------------------------------------------


def test_served_episode_costs_by_hand_and_application_steps_are_free():
    ep = Episode("e", training_enabled=False, external_expert=False)
    costs = [ep.record_step(N, 1, 1, 0.04, 0.05),      # first step: no switch
             ep.record_step(E, 2, 1, 0.04, 0.05),      # expert + switch
             ep.record_step(APPLICATION, 3, None, 0.04, 0.05),  # free, not an actor change
             ep.record_step(E, 2, 1, 0.04, 0.05),      # E after E (application in between)
             ep.record_step(N, 1, 1, 0.04, 0.05)]      # switch
    assert costs == [0.0, 0.04 + 0.05, 0.0, 0.04, 0.05]
    assert all(type(c) is float for c in costs)
    s = ep.summary()
    assert (s["length"], s["expert_steps"], s["switches"], s["application_steps"]) == (5, 2, 2, 1)
    assert s["cost"] == pytest.approx(0.18)


def test_served_episode_costs_equal_charge_row_by_row():
    rng = np.random.default_rng(0)
    actor = rng.integers(0, 2, size=50)
    ep = Episode("e", training_enabled=False, external_expert=False)
    got = [ep.record_step(int(a), 0, 0, 0.3, 0.7) for a in actor]
    prev = np.concatenate([[NO_ACTOR], actor[:-1]])
    _, want, switched = charge(actor, prev, 0.3, 0.7)
    assert got == want.tolist()
    assert ep.switches == int(switched.sum()) and ep.expert_steps == int(actor.sum())


# -- AgentStep -----------------------------------------------------------------------------


def _uniform_agent(num_actions: int = 5, hidden_dim: int = 3) -> FakeAgent:
    return FakeAgent(CountingModel([0.0] * num_actions, hidden_dim=hidden_dim))


OBS = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)


def test_observe_runs_the_novice_once_and_not_the_expert():
    novice, expert = fake_agent(1, 4, hidden_dim=3), fake_agent(2, 4, hidden_dim=5)
    core = AgentStep(novice, expert, 1.0, open_expert=False, device="cpu")
    seen = core.observe(OBS)
    assert novice.model.calls == 1 and expert.model.calls == 0
    assert set(seen.obs) == {"base_obs", "novice_hidden", "novice_logits"}
    assert seen.obs["base_obs"] is OBS
    assert seen.obs["novice_hidden"].shape == (4, 3) and seen.obs["novice_logits"].shape == (4, 4)
    assert seen.obs["novice_hidden"].dtype == np.float32
    np.testing.assert_array_equal(seen.novice_action, [1, 1, 1, 1])
    assert seen.novice_action.dtype == np.int64 and seen.expert_action is None


def test_base_actions_run_the_expert_on_its_rows_only():
    novice, expert = fake_agent(1, 4), fake_agent(2, 4)
    core = AgentStep(novice, expert, 1.0, open_expert=False, device="cpu")
    seen = core.observe(OBS)
    actions = core.base_actions(seen, np.array([E, N, E, N]))
    np.testing.assert_array_equal(actions, [2, 1, 2, 1])
    assert expert.model.batch_sizes == [2] and novice.model.calls == 1
    actions = core.base_actions(seen, np.array([N, N, N, N]))
    np.testing.assert_array_equal(actions, [1, 1, 1, 1])
    assert expert.model.batch_sizes == [2]  # nobody chose the expert: no forward
    # skipped rows (an external expert): no forward there, they keep the novice's action
    actions = core.base_actions(seen, np.array([E, E, N, E]), skip=np.array([True, False, False, True]))
    np.testing.assert_array_equal(actions, [1, 2, 1, 1])
    assert expert.model.batch_sizes == [2, 1]
    out = np.full(4, -1, dtype=np.int64)
    assert core.base_actions(seen, np.array([N, E, N, N]), out=out) is out
    np.testing.assert_array_equal(out, [1, 2, 1, 1])


@pytest.mark.parametrize("open_expert", [True, False])
def test_expert_every_row_is_sampled_once_in_observe(open_expert):
    novice, expert = fake_agent(1, 4, hidden_dim=3), fake_agent(2, 4, hidden_dim=5)
    core = AgentStep(novice, expert, 1.0, open_expert=open_expert, device="cpu",
                     expert_every_row=True)
    seen = core.observe(OBS)
    assert novice.model.calls == 1 and expert.model.batch_sizes == [4]
    assert ("expert_hidden" in seen.obs) == open_expert
    assert ("expert_logits" in seen.obs) == open_expert
    if open_expert:
        assert seen.obs["expert_hidden"].shape == (4, 5) and seen.obs["expert_logits"].shape == (4, 4)
    np.testing.assert_array_equal(seen.expert_action, [2, 2, 2, 2])
    np.testing.assert_array_equal(core.base_actions(seen, np.array([E, N, N, E])), [2, 1, 1, 2])
    assert expert.model.batch_sizes == [4]  # no second expert forward


@pytest.mark.parametrize("open_expert", [True, False])
def test_sampling_order_novice_then_expert(open_expert):
    """Random draws: the novice's (all rows), then the expert's (all rows or its rows)."""
    novice, expert = _uniform_agent(), _uniform_agent()
    core = AgentStep(novice, expert, 1.0, open_expert=open_expert, device="cpu")
    actor = np.array([E, N, E, E])
    torch.manual_seed(123)
    seen = core.observe(OBS)
    actions = core.base_actions(seen, actor)
    torch.manual_seed(123)
    logits = torch.zeros(4, 5)
    want_novice = sample_actions(logits, 1.0).numpy()
    want_expert = sample_actions(logits if open_expert else logits[actor == E], 1.0).numpy()
    np.testing.assert_array_equal(seen.novice_action, want_novice)
    want = want_novice.copy()
    want[actor == E] = want_expert[actor == E] if open_expert else want_expert
    np.testing.assert_array_equal(actions, want)


def test_reset_and_eval_reach_both_agents():
    novice, expert = fake_agent(1), fake_agent(2)
    core = AgentStep(novice, expert, 0.0, open_expert=False, device="cpu")
    core.eval()
    rows = np.array([True, False])
    core.reset(rows)
    assert novice.eval_calls == expert.eval_calls == 1
    np.testing.assert_array_equal(novice.reset_masks[0], rows)
    np.testing.assert_array_equal(expert.reset_masks[0], rows)

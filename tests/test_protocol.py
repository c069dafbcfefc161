"""The benchmark-protocol switches: rounded costs and random actions, off by default."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeVecEnv, fake_agent

from duo_cli.config import compose
from duo_cli.coordination.alpha_grid import rescore
from duo_cli.coordination.env import EXPERT, CoordEnv, step_costs


def _env(alpha: float, bp: float, decimals=None) -> CoordEnv:
    base = FakeVecEnv(2, 4, ep_lengths=50, reward_fn=lambda e, a: np.ones(e.num_envs, np.float32))
    env = CoordEnv(base, fake_agent(1, 4), fake_agent(2, 4), expert_query_cost_weight=alpha,
                   switch_agent_cost_weight=0.5, cost_decimals=decimals)
    env.set_costs(bp)
    return env


def test_step_costs_hand_computed():
    # DoorKey-like BP 0.0213: alpha 0.2 costs 0.00426 exactly, 0.00 rounded to 2 decimals
    assert step_costs(0.0213, 0.2, 0.0) == pytest.approx((0.00426, 0.0))
    assert step_costs(0.0213, 0.2, 0.0, decimals=2) == (0.0, 0.0)
    assert step_costs(0.0213, 0.6, 1.0, decimals=2) == (0.01, 0.02)
    assert step_costs(0.0213, 1.0, 0.0, decimals=2) == (0.02, 0.0)


def test_rounded_cost_is_charged_by_coord_env():
    exact, rounded = _env(0.2, 0.0213), _env(0.2, 0.0213, decimals=2)
    for env in (exact, rounded):
        env.reset(seed=0)
    _, r_exact, *_ = exact.step(np.full(2, EXPERT))
    _, r_round, *_ = rounded.step(np.full(2, EXPERT))
    assert np.allclose(r_exact, 1 - 0.00426)
    assert np.allclose(r_round, 1.0)  # the cost rounds to 0


def test_rescore_uses_the_same_rounding():
    result = {"base_rewards": [1.0], "expert_steps": [10], "switches": [2], "lengths": [10],
              "steps": 10}
    assert rescore(result, 0.2, 0.5, 0.0213, decimals=2)["reward_mean"] == pytest.approx(
        1.0 - 0.0 * 10 - 0.01 * 2)
    assert rescore(result, 0.2, 0.5, 0.0213)["reward_mean"] == pytest.approx(
        1.0 - 0.00426 * 10 - 0.01065 * 2)


def test_switches_are_off_by_default():
    cfg = compose(["env=minigrid"], "coord")
    assert cfg.coordination.cost_decimals is None
    assert cfg.env.random_action_prob == 0.0


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5"])
def test_bad_cost_decimals_refused_at_compose(bad):
    from duo_cli.config import ConfigError

    with pytest.raises(ConfigError, match="coordination.cost_decimals"):
        compose([f"coordination.cost_decimals={bad}"], "coord")

"""CoordEnv tests' shared set-up: a scripted fake vector env and counting fake agents."""

from __future__ import annotations

import numpy as np
from fakes import FakeVecEnv, fake_agent

from duo_cli.coordination.env import CoordEnv

NUM_ACTIONS = 4
NOVICE_ACTION = 1
EXPERT_ACTION = 2


def make_coord(
    num_envs: int = 3,
    ep_lengths=100,
    reward_fn=None,
    alpha: float = 0.4,
    beta: float = 0.0,
    bp: float | None = 2.5,
    open_expert: bool = False,
    temperature: float = 1.0,
    novice=None,
    expert=None,
    cls=CoordEnv,
):
    base = FakeVecEnv(num_envs, NUM_ACTIONS, ep_lengths=ep_lengths, reward_fn=reward_fn)
    novice = novice or fake_agent(NOVICE_ACTION, NUM_ACTIONS, hidden_dim=3)
    expert = expert or fake_agent(EXPERT_ACTION, NUM_ACTIONS, hidden_dim=5)
    env = cls(
        base, novice, expert,
        expert_query_cost_weight=alpha, switch_agent_cost_weight=beta,
        temperature=temperature, open_expert=open_expert,
    )
    if bp is not None:
        env.set_costs(bp)
    return env, base, novice, expert


def const_reward(value: float):
    return lambda env, actions: np.full(env.num_envs, value, dtype=np.float32)

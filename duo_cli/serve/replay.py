"""Replaying a served log for another coordinator: its observations and its probabilities.

For each logged step the coordinator's observation is rebuilt from the logged base
observation by the log's agents (:class:`~duo_cli.coordination.step.AgentStep`: one novice
forward, and one expert forward when the expert's features or action probabilities are
needed), and the target coordinator is asked p(expert)
(:meth:`~duo_cli.policies.coord.CoordPolicy.choice_probs`); a stateful target replays each
episode from its start, its state advanced by its own ``act`` as when serving.  Optionally
the agents' probabilities of the logged base action are returned too (at the agents'
temperature), for weights on the base action rather than on the choice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from duo_cli.coordination.step import AgentStep
from duo_cli.errors import DuoError
from duo_cli.serve.store import StepColumns

#: logged steps whose observations are rebuilt by one forward
CHUNK_STEPS = 4096


@dataclass
class Replayed:
    """One episode's steps seen by the target.

    :param tau: the target's p(expert) at each step.
    :param novice_p: the novice's probability of the logged base action (or ``None``).
    :param expert_p: the expert's probability of the logged base action (or ``None``).
    """

    tau: np.ndarray
    novice_p: np.ndarray | None = None
    expert_p: np.ndarray | None = None


def action_probs(logits: np.ndarray, actions: np.ndarray, temperature: float) -> np.ndarray:
    """Probability of ``actions`` under softmax(``logits`` / temperature) (argmax at 0)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    if temperature <= 0:
        return (z.argmax(axis=1) == actions).astype(np.float64)
    z = z / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p[rows, actions] / p.sum(axis=1)


def replay(agents: AgentStep, policy: Any, episodes: list[StepColumns],
           observations: np.ndarray, temperature: float, with_actions: bool) -> list[Replayed]:
    """The target's view of every step of ``episodes`` (groups of whole episodes per forward).

    :param agents: the log's agents (``open_expert`` when the target or ``with_actions``
        needs the expert's logits).
    :param policy: the target coordinator (evaluation mode).
    :param observations: the log's observation rows (:func:`~duo_cli.serve.store.read_observations`).
    :param temperature: the target's sampling temperature.
    :param with_actions: also the agents' probabilities of the logged base actions.
    """
    out: list[Replayed] = []
    group: list[StepColumns] = []
    size = 0
    for steps in [*episodes, None]:
        if group and (steps is None or size + len(steps) > CHUNK_STEPS):
            out += _replay_group(agents, policy, group, observations, temperature, with_actions)
            group, size = [], 0
        if steps is not None:
            group.append(steps)
            size += len(steps)
    return out


def _replay_group(agents: AgentStep, policy: Any, group: list[StepColumns],
                  observations: np.ndarray, temp: float, with_actions: bool) -> list[Replayed]:
    rows = np.concatenate([np.asarray(s.obs_row, dtype=np.int64) for s in group])
    if rows.size and rows.max() >= len(observations):
        raise DuoError(f"the log names observation row {rows.max()}; observations.bin holds "
                       f"{len(observations)}")
    obs = agents.observe(np.ascontiguousarray(observations[rows])).obs
    bounds = np.cumsum([0, *map(len, group)])
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    if policy.stateful:
        tau = np.empty(len(rows))
        for a, b in spans:
            own = copy.deepcopy(policy)
            own.reset(np.ones(1, dtype=bool))
            for t in range(a, b):
                row = {k: v[t:t + 1] for k, v in obs.items()}
                tau[t] = float(np.asarray(own.choice_probs(row, temp))[0])
                own.act(row, temp)  # advances its state as serving and CoordEnv do
    else:
        tau = np.asarray(policy.choice_probs(obs, temp), dtype=np.float64)
    novice_p = expert_p = None
    if with_actions:
        actions = np.concatenate([np.asarray(s.action, dtype=np.int64) for s in group])
        novice_p = action_probs(obs["novice_logits"], actions, agents.temperature)
        expert_p = action_probs(obs["expert_logits"], actions, agents.temperature)
    return [Replayed(tau[a:b], None if novice_p is None else novice_p[a:b],
                     None if expert_p is None else expert_p[a:b]) for a, b in spans]

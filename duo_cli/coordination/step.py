"""The coordination step, written once: who acts, what it costs, what the agents compute.

Used by :class:`~duo_cli.coordination.env.CoordEnv` (training and ``duo eval``) and by
``duo serve`` (:mod:`duo_cli.serve.coordinator`, :mod:`duo_cli.serve.episodes`), so a
served episode follows exactly the rules an evaluated one does:

* the coordinator picks, per row, ``NOVICE`` (0) or ``EXPERT`` (1) to act in the base env;
* the novice runs once per step: its sampled action is the novice's action and its logits
  and hidden features are the coordinator's observation (:meth:`AgentStep.observe`);
* the expert runs only on the rows that chose it, or on every row when its features are
  part of the observation (``open_expert``) or its state must advance (recurrent agents)
  (:meth:`AgentStep.base_actions`);
* an expert step costs ``alpha * BP``, a switch ``beta * BP`` (:func:`step_costs`); a
  switch is a change of acting agent between two steps of one episode, so the first step
  of an episode is never one (:func:`charge`, previous actor ``NO_ACTOR``);
* per-episode sums: return, base return, length, expert steps, switches
  (:class:`EpisodeSums`);
* idle rows (an evaluation's rows that have played their quota) cost no forward: the
  agents skip them unless they are recurrent, and their base action is ``IDLE_ACTION``;
* the agents are frozen: one whose model's inputs repeat (MiniGrid's views) is memoised
  per distinct input row (:class:`~duo_cli.models.rows.ForwardMemo`).

Nothing of duo's is imported but :func:`~duo_cli.policies.base.sample_actions` and the
memo: this module sits below the coordination env and the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from duo_cli.models.rows import memoised
from duo_cli.policies.base import sample_actions

NOVICE = 0
EXPERT = 1
#: the "previous actor" of a row whose episode has just started (no switch is possible)
NO_ACTOR = -1
#: the base action of an idle row (one the agents do not run on; see :meth:`AgentStep.observe`)
IDLE_ACTION = 0


def step_costs(base_penalty: float, alpha: float, beta: float,
               decimals: int | None = None) -> tuple[float, float]:
    """Cost of one expert step (``alpha * BP``) and of one switch (``beta * BP``).

    With ``decimals`` both are rounded half-to-even to that many decimals, as the
    benchmark does (so a cost below ``0.5 * 10**-decimals`` becomes 0).
    """
    expert, switch = base_penalty * alpha, base_penalty * beta
    if decimals is not None:
        expert, switch = round(expert, int(decimals)), round(switch, int(decimals))
    return float(expert), float(switch)


def charge(actor: Any, prev_actor: Any, expert_cost: float, switch_cost: float,
           base_reward: Any = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Costs of coordinator steps, per row (arrays or scalars, broadcast together).

    :param actor: who acts now (``NOVICE`` / ``EXPERT``).
    :param prev_actor: who acted at the previous step of the same episode; ``NO_ACTOR``
        (any negative value) at the first step of an episode, which is never a switch.
    :param expert_cost: cost of an expert step (``alpha * BP``, see :func:`step_costs`).
    :param switch_cost: cost of a switch (``beta * BP``).
    :param base_reward: the base env's reward of the step.
    :returns: ``(reward, cost, switched)``: the coordinator's reward
        ``base_reward - 1{expert} * expert_cost - 1{switch} * switch_cost`` (float64, in
        that order of subtraction), the step's cost ``1{expert} * expert_cost +
        1{switch} * switch_cost`` (float64) and the switched mask.
    """
    actor = np.asarray(actor)
    prev_actor = np.asarray(prev_actor)
    switched = (prev_actor >= 0) & (actor != prev_actor)
    expert_part = (actor == EXPERT) * expert_cost
    switch_part = switched * switch_cost
    reward = base_reward - expert_part - switch_part
    return reward, expert_part + switch_part, switched


class EpisodeSums:
    """Per-row sums of the running episodes and each row's previous actor.

    Return and base return are float64 sums of the per-step values as given (a CoordEnv
    adds its float32 rewards); length, expert steps and switches are int64 counts.

    :param num_rows: rows (env slots).
    """

    def __init__(self, num_rows: int) -> None:
        n = int(num_rows)
        self.prev_actor = np.full(n, NO_ACTOR, dtype=np.int64)
        self.ret = np.zeros(n, dtype=np.float64)
        self.base_ret = np.zeros(n, dtype=np.float64)
        self.length = np.zeros(n, dtype=np.int64)
        self.expert_steps = np.zeros(n, dtype=np.int64)
        self.switches = np.zeros(n, dtype=np.int64)

    def reset(self, rows: np.ndarray | None = None) -> None:
        """Start new episodes on ``rows`` (a boolean mask; all rows by default)."""
        rows = slice(None) if rows is None else rows
        self.prev_actor[rows] = NO_ACTOR
        self.ret[rows] = 0.0
        self.base_ret[rows] = 0.0
        self.length[rows] = 0
        self.expert_steps[rows] = 0
        self.switches[rows] = 0

    def add(self, actor: np.ndarray, switched: np.ndarray, reward: np.ndarray,
            base_reward: np.ndarray, done: np.ndarray) -> dict[str, np.ndarray] | None:
        """Account one step of every row; returns the sums of the episodes ``done`` ended.

        The result, ``None`` when no episode ended, is ``info["episode"]`` of a CoordEnv:
        ``r`` (return), ``base_r`` (base return), ``l`` (length), ``expert_steps`` and
        ``switches``, each zero on the rows that did not end; those rows start over.
        """
        self.prev_actor[:] = actor
        self.prev_actor[done] = NO_ACTOR
        self.ret += reward
        self.base_ret += base_reward
        self.length += 1
        self.expert_steps += actor == EXPERT
        self.switches += switched
        if not done.any():
            return None
        finished = {
            "r": np.where(done, self.ret, 0.0),
            "base_r": np.where(done, self.base_ret, 0.0),
            "l": np.where(done, self.length, 0),
            "expert_steps": np.where(done, self.expert_steps, 0),
            "switches": np.where(done, self.switches, 0),
        }
        self.reset(done)
        return finished


@dataclass
class Observed:
    """What :meth:`AgentStep.observe` computed for one batch of base observations.

    :param obs: the coordinator's observation (``base_obs``, ``novice_hidden``,
        ``novice_logits``; with ``open_expert`` also ``expert_hidden``, ``expert_logits``).
    :param novice_action: the novice's sampled action per row (int64).
    :param expert_action: the expert's sampled action per row when the expert ran on
        every row, else ``None``.
    :param obs_t: the base observations on the agents' device (for the expert's rows).
    :param active: the rows in play (a boolean mask); ``None``: every row.  The idle rows
        take :data:`IDLE_ACTION` and never query the expert; unless the agents are
        recurrent they cost no forward and their features are zeros.
    """

    obs: dict[str, np.ndarray]
    novice_action: np.ndarray
    expert_action: np.ndarray | None
    obs_t: torch.Tensor
    active: np.ndarray | None = None


class AgentStep:
    """The agents' work in one coordination step.

    :param novice: an agent policy with ``forward(obs) -> ModelOutput`` (``logits``,
        ``hidden``), ``reset(rows)`` and ``eval()``; its ``model``'s ``hidden_dim`` and
        ``logit_dim`` are read when every row is idle.
    :param expert: the same, for the expert.
    :param temperature: sampling temperature of both agents (0 = greedy).
    :param open_expert: the expert's hidden features and logits are part of the
        coordinator's observation (the expert then runs on every row).
    :param device: where the agents compute.
    :param expert_every_row: run the expert on every row even without ``open_expert``.
    :param recurrent: the agents keep per-row state: both run on every row at every step,
        idle rows included, so each row's state advances with its episode (implies
        ``expert_every_row``).
    """

    def __init__(self, novice: Any, expert: Any, temperature: float, open_expert: bool,
                 device: Any, expert_every_row: bool = False, recurrent: bool = False) -> None:
        self.novice = novice
        self.expert = expert
        self.temperature = float(temperature)
        self.open_expert = bool(open_expert)
        self.device = torch.device(device)
        self.recurrent = bool(recurrent)
        self.expert_every_row = bool(expert_every_row) or self.open_expert or self.recurrent
        self.novice_forward = self._forward_of(novice)
        self.expert_forward = self._forward_of(expert)

    def _forward_of(self, agent: Any) -> Any:
        """``agent.forward``, memoised where its model's inputs repeat and it keeps no state."""
        if self.recurrent:
            return agent.forward
        return memoised(agent.forward, getattr(agent, "model", None))

    def eval(self) -> None:
        self.novice.eval()
        self.expert.eval()

    def reset(self, rows: np.ndarray) -> None:
        """Forget both agents' per-episode state on ``rows`` (a boolean mask)."""
        self.novice.reset(rows)
        self.expert.reset(rows)

    @torch.no_grad()
    def observe(self, base_obs: np.ndarray, active: np.ndarray | None = None) -> Observed:
        """One novice forward (and one expert forward if needed), one transfer each way.

        The novice's action is sampled first, then the expert's, each once per row.  With
        ``active`` (a boolean mask) the other rows are idle: their novice action is
        :data:`IDLE_ACTION`, and unless the agents are recurrent they get no forward (zero
        features).
        """
        obs_t = torch.from_numpy(base_obs).to(self.device, non_blocking=True)
        rows = None if active is None or self.recurrent or active.all() else np.flatnonzero(active)
        x = obs_t
        if rows is not None:
            x = obs_t.index_select(0, torch.from_numpy(rows).to(self.device))
        packed, (h, k, eh, ek) = self._forward(x)  # the one device->host transfer
        if rows is not None:
            full = np.zeros((len(base_obs), packed.shape[1]), dtype=np.float32)
            full[rows] = packed
            packed = full
        obs = {"base_obs": base_obs, "novice_hidden": packed[:, :h],
               "novice_logits": packed[:, h:h + k]}
        novice_action = packed[:, h + k].astype(np.int64)
        expert_action = None
        if self.expert_every_row:
            o = h + k + 1
            if self.open_expert:
                obs["expert_hidden"] = packed[:, o:o + eh]
                obs["expert_logits"] = packed[:, o + eh:o + eh + ek]
            expert_action = packed[:, o + eh + ek].astype(np.int64)
        if active is not None and not active.all():
            mask = np.asarray(active, dtype=bool).copy()
            novice_action[~mask] = IDLE_ACTION
            return Observed(obs, novice_action, expert_action, obs_t, mask)
        return Observed(obs, novice_action, expert_action, obs_t)

    def _forward(self, x: torch.Tensor) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The agents on the rows ``x`` (none: no forward), packed as one host array: the
        novice's hidden features, logits and action, then the expert's when it runs on every
        row; and the widths ``(h, k, eh, ek)`` of the features and logits."""
        every = self.expert_every_row
        if not len(x):  # every row idle: the widths the models declare
            h, k = self.novice.model.hidden_dim, self.novice.model.logit_dim
            eh, ek = (self.expert.model.hidden_dim, self.expert.model.logit_dim) if every else (0, 0)
            return np.zeros((0, h + k + 1 + (eh + ek + 1) * every), np.float32), (h, k, eh, ek)
        out = self.novice_forward(x)
        parts = [out.hidden.float(), out.logits.float(),
                 sample_actions(out.logits, self.temperature).unsqueeze(1).float()]
        eh = ek = 0
        if every:
            eout = self.expert_forward(x)
            e_action = sample_actions(eout.logits, self.temperature)
            parts += [eout.hidden.float(), eout.logits.float(), e_action.unsqueeze(1).float()]
            eh, ek = eout.hidden.shape[1], eout.logits.shape[1]
        widths = (out.hidden.shape[1], out.logits.shape[1], eh, ek)
        return torch.cat(parts, dim=1).cpu().numpy(), widths

    @torch.no_grad()
    def base_actions(self, observed: Observed, actor: np.ndarray,
                     skip: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The base env's action per row: the novice's, the expert's where ``actor`` is EXPERT.

        The expert runs (if it has not already on every row) only on the rows that chose
        it, minus the ``skip`` rows (a boolean mask: rows whose expert is someone else's;
        they keep the novice's action) and the idle rows (``observed.active``: they keep
        :data:`IDLE_ACTION`).  ``out`` is an int64 buffer to fill.
        """
        if out is None:
            out = np.empty(len(observed.novice_action), dtype=np.int64)
        out[:] = observed.novice_action
        rows = actor == EXPERT
        if skip is not None:
            rows &= ~skip
        if observed.active is not None:
            rows &= observed.active
        if rows.any():
            if observed.expert_action is not None:
                out[rows] = observed.expert_action[rows]
            else:
                idx = torch.from_numpy(np.flatnonzero(rows)).to(self.device)
                eout = self.expert_forward(observed.obs_t.index_select(0, idx))
                out[rows] = sample_actions(eout.logits, self.temperature).cpu().numpy()
        return out

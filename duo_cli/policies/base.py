"""The Policy interface: a policy acts; algorithms change it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from duo_cli.settings import NoSettings


class Policy:
    """Base class of every acting policy (agents and coordinators).

    Subclasses implement :meth:`act`; stateful ones also :meth:`reset`;
    tunable ones :meth:`get_params` / :meth:`set_params`.
    """

    #: the typed settings of the class's config node (``policy.*``), checked at compose time
    Settings: type = NoSettings
    #: keeps per-episode state (reset per row): a server gives each episode its own copy
    stateful: bool = False
    #: torch module holding learnable weights, if any
    model: torch.nn.Module | None = None

    def act(self, obs: Any, temperature: float = 1.0) -> torch.Tensor:
        """Return one action per env row."""
        raise NotImplementedError

    def reset(self, done: np.ndarray) -> None:
        """Forget per-episode state of the rows where ``done`` is true."""

    def get_params(self) -> dict[str, Any]:
        """Plain-data parameters (hyper-parameters or weights) that define the policy."""
        return self.model.state_dict() if self.model is not None else {}

    def set_params(self, params: dict[str, Any]) -> None:
        if self.model is not None:
            self.model.load_state_dict(params)

    def train(self) -> None:
        if self.model is not None:
            self.model.train()

    def eval(self) -> None:
        if self.model is not None:
            self.model.eval()


def act_rows(policy: Any, obs: Any, rows: np.ndarray | None, temperature: float = 1.0,
             idle_action: int = 0) -> np.ndarray:
    """One int64 action per row from ``policy``: its own on ``rows`` (a boolean mask; ``None``:
    every row), ``idle_action`` elsewhere.

    A policy without per-episode state (``stateful`` false) acts on the ``rows`` alone:
    ``obs`` (an array, a tensor, or a dict of them) is indexed, so the other rows cost no
    forward.  A stateful policy acts on every row, so its state advances with each row's
    episode.
    """
    if rows is None or rows.all() or getattr(policy, "stateful", False):
        action = _host(policy.act(obs, temperature))
        if rows is not None and not rows.all():
            action = np.where(rows, action, idle_action)
        return action
    action = np.full(len(rows), idle_action, dtype=np.int64)
    if rows.any():
        action[rows] = _host(policy.act(take_rows(obs, rows), temperature))
    return action


def take_rows(obs: Any, rows: np.ndarray) -> Any:
    """The ``rows`` (a boolean mask) of an observation: an array, a tensor or a dict of them."""
    if isinstance(obs, Mapping):
        return {key: take_rows(value, rows) for key, value in obs.items()}
    if isinstance(obs, torch.Tensor):
        return obs[torch.from_numpy(np.flatnonzero(rows)).to(obs.device)]
    return obs[rows]


def _host(action: Any) -> np.ndarray:
    a = action.cpu().numpy() if isinstance(action, torch.Tensor) else np.asarray(action)
    return a.astype(np.int64, copy=False)


def sample_actions(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sample from softmax(logits / temperature); temperature 0 means greedy.

    Gumbel-max: ``argmax(logits - log(E))``, E ~ Exp(1). It draws what
    ``torch.multinomial(softmax(logits), 1)`` draws from the same generator state (its
    one-sample path divides the probabilities by such exponential noise and takes the
    argmax; the same actions but for float rounding of a near-tie,
    ``tests/test_ppo_collect.py``), at half the cost (no checks of the probabilities, no
    softmax).
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return (logits - torch.empty_like(logits).exponential_().log_()).argmax(dim=-1)

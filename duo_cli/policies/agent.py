"""Agents: a model acting in the base environment."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from duo_cli.models.base import Model, ModelOutput
from duo_cli.policies.base import Policy, sample_actions


class AgentPolicy(Policy):
    """Acts by sampling from a model's logits.

    :param model: an actor-critic :class:`~duo_cli.models.base.Model`.
    :param device: where observations are sent.
    """

    def __init__(self, model: Model, device: torch.device | str = "cpu"):
        self.model = model
        self.device = torch.device(device)

    def forward(self, obs: Any) -> ModelOutput:
        if isinstance(obs, np.ndarray):
            obs = torch.from_numpy(obs)
        return self.model(obs.to(self.device, non_blocking=True))

    @torch.no_grad()
    def act(self, obs: Any, temperature: float = 1.0) -> torch.Tensor:
        return sample_actions(self.forward(obs).logits, temperature)

"""Shared pieces of coordination policies (who acts: 0 = novice, 1 = expert)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from duo_cli.policies.base import Policy
from duo_cli.settings import parse_settings


class CoordPolicy(Policy):
    """Base of coordination policies.

    :param cfg: the ``policy`` config node, parsed into the class's :attr:`Settings`.
    :param env: the CoordEnv the policy acts in (for ``num_envs`` and spaces).
    :param device: torch device.
    :param seed: seed of the policy's own randomness.
    """

    kind = "coord"

    def __init__(self, cfg: Mapping[str, Any], env: Any, device: Any = "cpu", seed: int = 0):
        self.settings = parse_settings(self.Settings, cfg, "policy")
        self.num_envs = env.num_envs
        self.EXPERT = env.EXPERT
        self.NOVICE = env.NOVICE
        self.device = torch.device(device)
        self.seed = int(seed)
        identity = {k: cfg[k] for k in ("_target_", "name") if k in cfg}
        self.config = {"policy": {**identity, **dataclasses.asdict(self.settings)}}

    def act(self, obs: Any, temperature: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(self.decide(obs).astype(np.int64))

    def decide(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Boolean or 0/1 array: which rows query the expert."""
        raise NotImplementedError

    def choice_probs(self, obs: Mapping[str, Any], temperature: float = 1.0) -> np.ndarray:
        """p(expert) per row: the probability that :meth:`act` chooses the expert now.

        The contract every coordinator keeps: ``act(obs, temperature)`` draws EXPERT with
        exactly this probability (0 or 1 for a deterministic rule).  A stateful policy
        answers for its current state without advancing it (ask before :meth:`act`).
        The served log records it as the behaviour probability; off-policy evaluation
        asks it of the target coordinator.

        :returns: float64 array in [0, 1], one entry per row of ``obs``.
        """
        raise NotImplementedError(f"{type(self).__name__} gives no choice probabilities")

    def describe(self) -> str:
        """Short human description of the current parameters."""
        return ", ".join(f"{k}={_short(v)}" for k, v in self.get_params().items())


def input_key(feature: str) -> str:
    """The CoordEnv observation a coordinator feature reads: ``obs`` (or ``base_obs``) ->
    ``base_obs``, ``<agent>_dist`` -> ``<agent>_logits`` (its softmax), any other key itself."""
    if feature in ("obs", "base_obs"):
        return "base_obs"
    return feature[:-len("_dist")] + "_logits" if feature.endswith("_dist") else feature


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

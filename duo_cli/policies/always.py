"""Always the same agent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duo_cli.policies.coord import CoordPolicy
from duo_cli.settings import setting

AGENTS = ("novice", "expert")


class AlwaysPolicy(CoordPolicy):
    """Always lets ``policy.agent`` (``novice`` or ``expert``) act."""

    @dataclass(frozen=True)
    class Settings:
        agent: str = setting(choices=AGENTS, doc="the agent that always acts")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.agent = self.settings.agent

    def decide(self, obs):
        n = len(obs["base_obs"])
        return np.full(n, self.EXPERT if self.agent == "expert" else self.NOVICE)

    def choice_probs(self, obs, temperature=1.0):
        return np.asarray(self.decide(obs), dtype=np.float64)  # deterministic: 0 or 1

    def get_params(self):
        return {"agent": self.agent}

    def set_params(self, params):
        self.agent = params.get("agent", self.agent)

"""Always the same agent."""

from __future__ import annotations

import numpy as np

from duo_cli.policies.coord import CoordPolicy

AGENTS = ("novice", "expert")


class AlwaysPolicy(CoordPolicy):
    """Always lets ``cfg.agent`` (``novice`` or ``expert``) act."""

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.agent = str(cfg.get("agent", "novice"))
        if self.agent not in AGENTS:
            raise ValueError(f"unknown policy.agent {self.agent!r}; valid choices: novice, expert")

    def decide(self, obs):
        n = len(obs["base_obs"])
        return np.full(n, self.EXPERT if self.agent == "expert" else self.NOVICE)

    def get_params(self):
        return {"agent": self.agent}

    def set_params(self, params):
        self.agent = params.get("agent", self.agent)

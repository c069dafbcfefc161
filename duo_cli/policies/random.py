"""Ask the expert with a fixed probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duo_cli.policies.coord import CoordPolicy
from duo_cli.settings import setting


class RandomPolicy(CoordPolicy):
    """Queries the expert with probability ``p`` at every step."""

    @dataclass(frozen=True)
    class Settings:
        p: float = setting(low=0, high=1, doc="probability of querying the expert")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.p = self.settings.p
        self.rng = np.random.default_rng(self.seed)

    def decide(self, obs):
        n = len(obs["base_obs"])
        return self.rng.random(n) < self.p

    def choice_probs(self, obs, temperature=1.0):
        return np.full(len(obs["base_obs"]), self.p, dtype=np.float64)

    def get_params(self):
        return {"p": self.p}

    def set_params(self, params):
        self.p = float(params["p"])

    def eval(self):
        # the same stream for every evaluation, so candidates are compared fairly
        self.rng = np.random.default_rng(self.seed)

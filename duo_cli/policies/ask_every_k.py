"""Ask the expert every k steps of an episode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duo_cli.policies.coord import CoordPolicy
from duo_cli.settings import check_value, setting


class AskEveryKPolicy(CoordPolicy):
    """Queries the expert at steps 0, k, 2k, ... of every episode."""

    stateful = True

    @dataclass(frozen=True)
    class Settings:
        k: int = setting(low=1, doc="query the expert at steps 0, k, 2k, ... of each episode")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.k = self.settings.k
        self.step = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, done):
        done = np.asarray(done, dtype=bool)
        if len(done) != len(self.step):
            self.step = np.zeros(len(done), dtype=np.int64)
        self.step[done] = 0

    def decide(self, obs):
        ask = self.step % self.k == 0
        self.step += 1
        return ask

    def choice_probs(self, obs, temperature=1.0):
        """0 or 1 for the current step of each row (the step counter does not advance)."""
        return (self.step % self.k == 0).astype(np.float64)

    def get_params(self):
        return {"k": self.k}

    def set_params(self, params):
        self.k = check_value("policy.k", int(params["k"]), int, {"low": 1})

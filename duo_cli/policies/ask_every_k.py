"""Ask the expert every k steps of an episode."""

from __future__ import annotations

import numpy as np

from duo_cli.policies.coord import CoordPolicy


class AskEveryKPolicy(CoordPolicy):
    """Queries the expert at steps 0, k, 2k, ... of every episode."""

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.set_params({"k": cfg.get("k", 5)})
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

    def get_params(self):
        return {"k": self.k}

    def set_params(self, params):
        k = int(params["k"])
        if k < 1:
            raise ValueError(f"ask_every_k: k must be >= 1, got {k}")
        self.k = k

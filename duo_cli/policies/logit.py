"""Ask the expert when the novice is not confident (a score of its logits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duo_cli.errors import ConfigError
from duo_cli.policies.coord import CoordPolicy, as_numpy
from duo_cli.settings import setting


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def max_logit(logits):
    return logits.max(axis=1)


def max_prob(logits):
    return _softmax(logits).max(axis=1)


def margin(logits):
    p = np.sort(_softmax(logits), axis=1)
    return p[:, -1] - p[:, -2]


def entropy(logits):
    """Negative entropy: higher means more confident."""
    p = _softmax(logits)
    return (p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)


def energy(logits):
    """log-sum-exp of the logits (negative free energy): higher means more in-distribution."""
    m = logits.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True))).squeeze(1)


METRICS = {
    "max_logit": max_logit, "max_prob": max_prob, "margin": margin,
    "entropy": entropy, "energy": energy,
}


def confidence(metric: str, logits: np.ndarray) -> np.ndarray:
    """Confidence score of each row of ``logits`` (higher = more confident)."""
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ConfigError(
            f"unknown policy.metric {metric!r}; valid choices: {', '.join(METRICS)}"
        ) from None
    return fn(np.asarray(logits, dtype=np.float64))


class LogitPolicy(CoordPolicy):
    """Queries the expert when ``confidence(metric, novice_logits) < threshold``."""

    @dataclass(frozen=True)
    class Settings:
        metric: str = setting(choices=tuple(METRICS), doc="confidence score of the novice's logits")
        threshold: float | None = setting(doc="query the expert when score < threshold "
                                              "(null: chosen by the search)")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.metric = self.settings.metric
        self.threshold = float(self.settings.threshold or 0.0)

    def score(self, obs) -> np.ndarray:
        return confidence(self.metric, as_numpy(obs["novice_logits"]))

    def decide(self, obs):
        return self.score(obs) < self.threshold

    def choice_probs(self, obs, temperature=1.0):
        return np.asarray(self.decide(obs), dtype=np.float64)  # deterministic: 0 or 1

    def get_params(self):
        return {"metric": self.metric, "threshold": self.threshold}

    def set_params(self, params):
        self.metric = params.get("metric", self.metric)
        self.threshold = float(params["threshold"])

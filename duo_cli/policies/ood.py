"""Ask the expert when the novice's features look out of distribution (pyod detectors)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from duo_cli.errors import ConfigError
from duo_cli.policies.coord import CoordPolicy, as_numpy, input_key
from duo_cli.settings import setting

logger = logging.getLogger(__name__)

#: the base observation (flattened, scaled by its space's upper bound to [0, 1])
OBS = ("obs", "base_obs")


def parse_features(feature: Any) -> list[str]:
    """``policy.feature`` as a list: one CoordEnv feature, a ``+``-joined string or a list."""
    if isinstance(feature, str):
        parts = feature.split("+")
    elif isinstance(feature, Sequence):
        parts = [str(f) for f in feature]
    else:
        parts = [str(feature)]
    parts = [p.strip() for p in parts]
    if not parts or not all(parts):
        raise ConfigError(f"policy.feature {feature!r} names no feature")
    return parts


class Features:
    """Maps a CoordEnv observation dict to the detector's feature rows.

    Each part is one of ``obs`` (alias ``base_obs``: flattened and divided by the
    observation space's upper bound), ``<agent>_dist`` (softmax of ``<agent>_logits``)
    or any CoordEnv key used as it is (e.g. ``novice_hidden``, ``novice_logits``); the
    parts are concatenated in order.  A single plain key gives that key's array unchanged.
    """

    def __init__(self, parts: list[str], space: Any) -> None:
        keys = list(getattr(space, "spaces", {}))
        choices = ", ".join(["obs", *keys, *(k.replace("_logits", "_dist") for k in keys
                                             if k.endswith("_logits"))])
        self.parts, self.space = parts, space
        self.keys: list[str] = []
        self.scale: dict[str, np.ndarray] = {}
        for p in parts:
            key = input_key(p)
            if keys and key not in keys:
                raise ConfigError(f"unknown policy.feature part {p!r}; valid choices: {choices}")
            if p in OBS and keys:
                high = np.asarray(space[key].high, dtype=np.float64).reshape(-1)
                self.scale[p] = np.where(np.isfinite(high) & (high > 0), 1.0 / high, 1.0)
            if key not in self.keys:
                self.keys.append(key)

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        cols = []
        for p in self.parts:
            if p in OBS:
                x = as_numpy(obs["base_obs"])
                x = x.reshape(len(x), -1).astype(np.float32)
                if p in self.scale:
                    x = x * self.scale[p].astype(np.float32)
            elif p.endswith("_dist"):
                z = as_numpy(obs[input_key(p)]).astype(np.float64)
                e = np.exp(z - z.max(axis=1, keepdims=True))
                x = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
            else:
                x = as_numpy(obs[p])
            cols.append(x)
        return cols[0] if len(cols) == 1 else np.concatenate(
            [np.asarray(c, dtype=np.float32) for c in cols], axis=1)

    def collect(self, env: Any, num_steps: int, seed: int) -> np.ndarray:
        """Let the novice alone play ``env`` for ``num_steps`` steps; stack the feature rows."""
        obs, _ = env.reset(seed=seed)
        novice = np.full(env.num_envs, env.NOVICE)
        out = [np.array(self(obs), copy=True)]
        for _ in range(num_steps - 1):
            obs, *_ = env.step(novice)
            out.append(np.array(self(obs), copy=True))
        return np.concatenate(out, axis=0)


class OODPolicy(CoordPolicy):
    """Queries the expert when a detector's anomaly score is >= ``threshold``.

    The detector (default pyod's DeepSVDD) is fit on the ``feature`` rows (default
    ``novice_hidden``; a ``+``-joined string or a list combines several, see
    :class:`Features`) met while the novice alone plays the train split.  pyod's convention is
    that *larger* ``decision_function`` scores are *more* anomalous.
    The fit features are kept as plain data, and a loaded policy refits the
    detector from them with the same seed, so checkpoints hold no pickled objects.
    """

    @dataclass(frozen=True)
    class Settings:
        feature: str | list[str] = setting(doc="CoordEnv features the detector reads "
                                                "(a +-joined string or a list)")
        detector: dict[str, Any] = setting(doc="pyod DeepSVDD keyword arguments")
        threshold: float | None = setting(doc="query the expert when the anomaly score >= "
                                              "threshold (null: chosen by the search)")

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.parts = parse_features(self.settings.feature)
        self.feature = "+".join(self.parts)
        self.featurize = Features(self.parts, getattr(env, "single_observation_space", None))
        self.detector_cfg = dict(self.settings.detector)
        self.threshold = float(self.settings.threshold or 0.0)
        self.features: np.ndarray | None = None
        self.detector: Any = None

    def fit(self, features: np.ndarray) -> np.ndarray:
        """Fit the detector; returns the anomaly scores of the fit features."""
        from pyod.models.deep_svdd import DeepSVDD

        features = np.asarray(features, dtype=np.float32)
        self.features = features
        params = {"epochs": 20, "batch_size": 256, "verbose": 0, **self.detector_cfg}
        np_state = np.random.get_state()
        np.random.seed(self.seed)  # pyod shuffles with numpy's global generator
        try:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self.detector = DeepSVDD(
                    n_features=features.shape[1], random_state=self.seed, **params
                )
                self.detector.fit(features)
        finally:
            np.random.set_state(np_state)
        return self.anomaly(features)

    def fit_features(self, env: Any, num_steps: int, seed: int) -> np.ndarray:
        """The feature rows of ``num_steps`` steps of the novice alone in ``env``."""
        return self.featurize.collect(env, num_steps, seed)

    def anomaly(self, features: np.ndarray) -> np.ndarray:
        """Anomaly score (larger = more out of distribution)."""
        if self.detector is None:
            raise RuntimeError("OODPolicy: fit() the detector first")
        return np.asarray(self.detector.decision_function(np.asarray(features, np.float32)))

    def decide(self, obs):
        return self.anomaly(self.featurize(obs)) >= self.threshold

    def choice_probs(self, obs, temperature=1.0):
        return np.asarray(self.decide(obs), dtype=np.float64)  # deterministic: 0 or 1

    def get_params(self):
        params: dict[str, Any] = {"threshold": self.threshold, "feature": self.feature}
        if self.features is not None:
            params["fit_features"] = torch.from_numpy(self.features)
        return params

    def set_params(self, params):
        self.threshold = float(params["threshold"])
        if "feature" in params and str(params["feature"]) != self.feature:
            self.parts = parse_features(str(params["feature"]))
            self.feature = "+".join(self.parts)
            self.featurize = Features(self.parts, self.featurize.space)
        if "fit_features" in params:
            feats = np.asarray(as_numpy(params["fit_features"]), dtype=np.float32)
            if self.detector is None or not np.array_equal(feats, self.features):
                self.fit(feats)

    def describe(self) -> str:
        return f"threshold={self.threshold:.4g}"

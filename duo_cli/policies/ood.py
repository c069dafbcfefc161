"""Ask the expert when the novice's features look out of distribution (pyod detectors)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from duo_cli.policies.coord import CoordPolicy, as_numpy

logger = logging.getLogger(__name__)


class OODPolicy(CoordPolicy):
    """Queries the expert when a detector's anomaly score is >= ``threshold``.

    The detector (default pyod's DeepSVDD) is fit on ``novice_hidden`` features
    met while the novice alone plays the train split.  pyod's convention is
    that *larger* ``decision_function`` scores are *more* anomalous.
    The fit features are kept as plain data, and a loaded policy refits the
    detector from them with the same seed, so checkpoints hold no pickled objects.
    """

    def __init__(self, cfg, env, device="cpu", seed=0):
        super().__init__(cfg, env, device, seed)
        self.feature = str(cfg.get("feature", "novice_hidden"))
        self.detector_cfg = dict(cfg.get("detector") or {})
        self.threshold = float(cfg.get("threshold") or 0.0)
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

    def anomaly(self, features: np.ndarray) -> np.ndarray:
        """Anomaly score (larger = more out of distribution)."""
        if self.detector is None:
            raise RuntimeError("OODPolicy: fit() the detector first")
        return np.asarray(self.detector.decision_function(np.asarray(features, np.float32)))

    def decide(self, obs):
        return self.anomaly(as_numpy(obs[self.feature])) >= self.threshold

    def get_params(self):
        params: dict[str, Any] = {"threshold": self.threshold, "feature": self.feature}
        if self.features is not None:
            params["fit_features"] = torch.from_numpy(self.features)
        return params

    def set_params(self, params):
        self.threshold = float(params["threshold"])
        self.feature = str(params.get("feature", self.feature))
        if "fit_features" in params:
            feats = np.asarray(as_numpy(params["fit_features"]), dtype=np.float32)
            if self.detector is None or not np.array_equal(feats, self.features):
                self.fit(feats)

    def describe(self) -> str:
        return f"threshold={self.threshold:.4g}"

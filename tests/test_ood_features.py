"""OOD detection on combined feature sets (the benchmark's obs / hidden / dist mixes)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fakes import FakeCoordEnv
from rich.console import Console

from duo_cli.algorithms.base import RunContext
from duo_cli.algorithms.search import OODSearch, collect_novice_obs
from duo_cli.config import ConfigError
from duo_cli.policies.ood import OODPolicy, parse_features

DETECTOR = {"epochs": 2, "batch_size": 64}


def _policy(feature, env):
    return OODPolicy({"feature": feature, "detector": DETECTOR, "threshold": None}, env, seed=0)


def test_single_feature_rows_are_unchanged():
    env = FakeCoordEnv(num_envs=4, hidden_dim=4)
    rows = _policy("novice_hidden", env).fit_features(env, 10, seed=3)
    np.testing.assert_array_equal(rows, collect_novice_obs(env, "novice_hidden", 10, seed=3))
    assert rows.dtype == np.float32 and rows.shape == (40, 4)


def test_combined_features_concatenate_scaled_obs_hidden_and_dist():
    env = FakeCoordEnv(num_envs=4, hidden_dim=4, num_actions=3)
    joined = _policy("obs+novice_hidden+novice_dist", env)
    listed = _policy(["obs", "novice_hidden", "novice_dist"], env)
    assert joined.feature == listed.feature == "obs+novice_hidden+novice_dist"
    obs, _ = env.reset(seed=0)
    obs = {**obs, "base_obs": np.full((4, 2, 2, 3), 51, dtype=np.uint8)}
    rows = joined.featurize(obs)
    np.testing.assert_array_equal(rows, listed.featurize(obs))
    assert rows.shape == (4, 12 + 4 + 3) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[:, :12], 0.2)  # 51 / 255: scaled by the space's bound
    np.testing.assert_array_equal(rows[:, 12:16], obs["novice_hidden"])
    z = np.exp(obs["novice_logits"] - obs["novice_logits"].max(1, keepdims=True))
    np.testing.assert_allclose(rows[:, 16:], z / z.sum(1, keepdims=True), rtol=1e-6)


def test_search_fits_and_decides_on_a_combined_feature(tmp_path):
    env = FakeCoordEnv(num_envs=4, ep_length=3, hidden_dim=4)
    policy = _policy("novice_hidden+novice_dist", env)
    ctx = RunContext(run_dir=tmp_path, seed=0, console=Console(file=io.StringIO()),
                     progress=False)
    cands = OODSearch({"name": "ood", "percentiles": [0, 100], "fit_steps": 8,
                       "max_fit_samples": 32}, ctx).candidates(policy, env)
    assert policy.features.shape == (32, 7) and len(cands) == 2
    obs, _ = env.reset(seed=1)
    policy.set_params(cands[0])  # threshold = the lowest fit score: (almost) always asks
    assert policy.decide(obs).shape == (4,)
    params = policy.get_params()
    assert params["feature"] == "novice_hidden+novice_dist"


def test_bad_feature_part_is_a_config_error():
    env = FakeCoordEnv(num_envs=2)
    with pytest.raises(ConfigError, match="'hiden'.*valid choices: obs, base_obs, novice_hidden"):
        _policy("obs+hiden", env)
    with pytest.raises(ValueError, match="names no feature"):
        parse_features("obs+")

"""The OOD coordination method on fake features: detector, params round trip, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coord_policies import EXPERT, NOVICE, base_obs, make_ctx, spec
from fakes import FakeCoordEnv

from duo_cli.algorithms.search import OODSearch
from duo_cli.checkpoint import load_checkpoint, save_policy
from duo_cli.policies.ood import OODPolicy

# -- OOD --------------------------------------------------------------------------------

OOD_CFG = {"feature": "novice_hidden", "detector": {"epochs": 5, "batch_size": 64},
           "threshold": None}


def cluster(n: int, seed: int, center: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (center + 0.1 * rng.normal(size=(n, 4))).astype(np.float32)


@pytest.fixture(scope="module")
def fitted_ood():
    policy = OODPolicy(OOD_CFG, spec(4), seed=0)
    scores = policy.fit(cluster(256, seed=0))
    return policy, scores


def test_ood_far_point_is_more_anomalous(fitted_ood):
    policy, scores = fitted_ood
    assert scores.shape == (256,)
    inside = cluster(16, seed=1)
    far = cluster(16, seed=2, center=-20.0)
    s_in, s_far = policy.anomaly(inside), policy.anomaly(far)
    assert s_far.min() > s_in.max(), (s_in, s_far)
    # queries the expert for the far points at a threshold between the two groups
    policy.set_params({"threshold": float((s_in.max() + s_far.min()) / 2)})
    obs = {**base_obs(32), "novice_hidden": np.concatenate([inside, far])}
    np.testing.assert_array_equal(policy.decide(obs), [False] * 16 + [True] * 16)
    np.testing.assert_array_equal(policy.act(obs).numpy(), [NOVICE] * 16 + [EXPERT] * 16)


def test_ood_unfitted_is_an_error():
    with pytest.raises(RuntimeError, match="fit"):
        OODPolicy(OOD_CFG, spec()).anomaly(np.zeros((1, 4), np.float32))


def test_ood_params_round_trip_through_checkpoint(tmp_path, fitted_ood):
    policy, _ = fitted_ood
    policy.set_params({"threshold": 0.75})
    save_policy(tmp_path / "ood.pt", policy, {"note": "test"})
    ckpt = load_checkpoint(tmp_path / "ood.pt")  # weights_only: plain data
    assert ckpt["kind"] == "coord"
    sd = ckpt["state_dict"]
    assert sd["threshold"] == 0.75 and sd["feature"] == "novice_hidden"
    assert isinstance(sd["fit_features"], torch.Tensor)
    np.testing.assert_array_equal(sd["fit_features"].numpy(), policy.features)
    fresh = OODPolicy(ckpt["config"]["policy"], spec(4), seed=0)
    fresh.set_params(sd)  # refits the detector from the stored features, same seed
    points = np.concatenate([cluster(8, seed=3), cluster(8, seed=4, center=0.0)])
    np.testing.assert_allclose(fresh.anomaly(points), policy.anomaly(points), rtol=1e-6)
    assert fresh.threshold == 0.75
    obs = {**base_obs(16), "novice_hidden": points}
    np.testing.assert_array_equal(fresh.decide(obs), policy.decide(obs))


def test_ood_set_params_restores_feature_and_refits_on_new_features():
    a = OODPolicy({**OOD_CFG, "feature": "expert_hidden"}, spec(), seed=0)
    a.fit(cluster(128, seed=5))
    b = OODPolicy(OOD_CFG, spec(), seed=0)
    b.fit(cluster(128, seed=6, center=-3.0))  # a stale detector must not survive set_params
    b.set_params(a.get_params())
    assert b.feature == "expert_hidden"
    points = cluster(8, seed=7, center=1.0)
    np.testing.assert_allclose(b.anomaly(points), a.anomaly(points), rtol=1e-6)


def test_ood_search_thresholds_are_percentiles_of_fit_scores(tmp_path):
    env = FakeCoordEnv(num_envs=4, ep_length=3, hidden_dim=4)
    policy = OODPolicy(OOD_CFG, env, seed=0)
    cfg = {"name": "ood", "percentiles": [0, 50, 100], "fit_steps": 10, "max_fit_samples": 32}
    cands = OODSearch(cfg, make_ctx(tmp_path)).candidates(policy, env)
    assert policy.features.shape == (32, 4)  # 40 states subsampled to max_fit_samples
    expected = np.percentile(policy.anomaly(policy.features), [0, 50, 100])
    np.testing.assert_allclose([c["threshold"] for c in cands], expected, rtol=1e-6)
    assert [set(c) for c in cands] == [{"threshold"}] * 3

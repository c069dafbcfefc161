"""Paired / hierarchical bootstrap, AUC and winners on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from duo_cli.report import stats


def test_auc_normalised_and_unnormalised_area():
    assert stats.auc([0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # unsorted, uneven: (0.2*(2+1)/2 + 0.8*(1+1)/2) / 1.0
    assert stats.auc([1.0, 0, 0.2], [1.0, 2.0, 1.0]) == pytest.approx(1.1)
    # range 0.2..0.6: (0.4*(1+3)/2) / 0.4 = 2 (reward units); the area is 0.8
    assert stats.auc([0.2, 0.6], [1.0, 3.0]) == pytest.approx(2.0)
    assert stats.trapezoid_area([0.2, 0.6], [1.0, 3.0]) == pytest.approx(0.8)
    assert stats.auc([0.4], [3.5]) == 3.5 and stats.trapezoid_area([0.4], [3.5]) == 0.0
    w = stats.trapezoid_weights([0, 0.2, 1.0])
    assert w == pytest.approx([0.1, 0.5, 0.4])
    # per-level AUC: [alphas, seeds, levels] -> [seeds, levels]
    lv = stats.level_auc([0, 1], np.array([[[2.0, 4.0]], [[0.0, 2.0]]]))
    assert lv.tolist() == [[1.0, 3.0]]


def test_one_seed_bootstrap_is_scipys_and_hand_computed():
    # levels {0, 1}: resampled means 0, .5, 1 with p = 1/4, 1/2, 1/4 -> CI [0, 1]
    assert stats.bootstrap_ci([np.array([[0.0, 1.0]])]) == (0.0, 1.0)
    # constant levels: a zero-width CI; a single level: no CI
    assert stats.bootstrap_ci([np.full((1, 5), 2.0)]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([np.array([[1.0]])]))
    rng = np.random.default_rng(1)
    x = rng.normal(1, 1, 200)
    lo, hi = stats.bootstrap_ci([x[None]])
    ref = sp_stats.bootstrap((x,), np.mean, n_resamples=stats.N_BOOT, method="percentile",
                             rng=np.random.default_rng(stats.BOOT_SEED)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / math.sqrt(x.size), rel=0.1)


def test_paired_resampling_uses_the_same_levels():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, (1, 100))
    # b = a + 1 on every level: the paired difference is exactly 1 in every resample
    lo, hi = stats.bootstrap_ci([base + 1.0 - base])
    assert (lo, hi) == pytest.approx((1.0, 1.0))
    # ratio statistic on paired samples: a = 2 b on every level -> ratio exactly 2
    b = np.abs(base) + 1
    assert stats.bootstrap_ci([2 * b, b], stats.ratio) == pytest.approx((2.0, 2.0))
    assert stats.point([2 * b, b], stats.ratio) == pytest.approx(2.0)


def test_hierarchical_bootstrap_carries_seed_variation():
    # two seeds, constant within each (0 and 1): pooling levels would give a zero-width
    # CI around .5; resampling seeds gives means 0, .5, 1 (p 1/4, 1/2, 1/4) -> [0, 1]
    x = np.array([[0.0] * 50, [1.0] * 50])
    assert stats.bootstrap_ci([x]) == (0.0, 1.0)
    # paired across samples with seeds too: identical samples, identical draws
    y = np.random.default_rng(3).normal(size=(3, 40))
    assert stats.bootstrap_ci([y - y]) == (0.0, 0.0)
    assert stats.bootstrap_distribution([y]).shape == (stats.N_BOOT,)
    with pytest.raises(ValueError, match="one \\[seeds, levels\\] shape"):
        stats.bootstrap_distribution([y, y[:, :3]])


def test_prob_improvement_and_winners():
    p = stats.prob_improvement_levels([1, 2, 3, 4], [0, 2, 5, 1])
    assert p.tolist() == [1.0, 0.5, 0.0, 1.0]
    cis = {("b", "a"): (-0.5, 0.1), ("c", "a"): (-2.0, -1.0)}
    assert stats.winners({"a": 3.0, "b": 2.9, "c": 1.0, "d": math.nan},
                         lambda m, top: cis[(m, top)]) == ["a", "b"]
    assert stats.winners({}, lambda m, t: (0, 0)) == []


def test_independent_fallback_when_not_paired():
    lo, hi = stats.independent_auc_ci([0, 1], [[2.0, 2.0, 2.0], [0.0, 0.0]])
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(1.0))
    assert stats.independent_auc_ci([0, 1], [[0.0, 1.0], [1.0]]) == (0.5, 1.0)

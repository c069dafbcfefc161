"""Statistics of a cost sweep: AUC over the alpha grid and paired bootstrap CIs.

Pure functions on arrays.  The design is paired: the Evaluator plays the same
levels (episode ``i`` = the same task seed and env slot) for every alpha and every
method, so every resample draws the *same* episode indices for all the quantities
it compares.  A method's per-level AUC, ``auc_i = sum_a w_a r_{a,i}``, turns the
AUC and every AUC difference into a plain mean over levels; the paired bootstrap
of the AUC is the bootstrap of that mean.

With several seeds, values are arrays ``[seeds, levels]`` and the bootstrap is
hierarchical: draw seeds with replacement, then levels within each drawn seed,
so the CI carries seed-to-seed variation.  One seed: :func:`scipy.stats.bootstrap`
(percentile, ``paired=True``); several seeds: the two-stage resampling below
(neither scipy nor rliable has it), with the same percentile interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sp_stats

#: bootstrap resamples and the numpy seed of their generator
N_BOOT = 2000
BOOT_SEED = 0
LEVEL = 0.95

Statistic = Callable[[np.ndarray], np.ndarray]


def trapezoid_weights(alphas: Sequence[float]) -> np.ndarray:
    """Weights ``w`` with ``auc = w @ rewards`` for rewards at sorted ``alphas``.

    Trapezoid rule divided by the alpha range (so the weights sum to 1); a single
    alpha (or a zero range) gives the mean reward.
    """
    a = np.asarray(alphas, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no alpha points")
    if a.size == 1 or a[-1] == a[0]:
        return np.full(a.size, 1.0 / a.size)
    if np.any(np.diff(a) < 0):
        raise ValueError("alphas must be sorted")
    w = np.zeros(a.size)
    d = np.diff(a)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w / (a[-1] - a[0])


def auc(alphas: Sequence[float], rewards: Sequence[float]) -> float:
    """Normalised AUC: trapezoid area under reward-vs-alpha divided by the alpha range.

    In reward units (the mean reward over the alpha range): a constant reward r
    gives r; one alpha gives its reward.  Over alpha in [0, 1] it equals the
    benchmark's unnormalised area (:func:`trapezoid_area`).
    """
    a = np.asarray(alphas, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"{a.size} alphas but {r.size} rewards")
    order = np.argsort(a, kind="stable")
    return float(trapezoid_weights(a[order]) @ r[order])


def alpha_range(alphas: Sequence[float]) -> float:
    """``max(alpha) - min(alpha)``: the factor from :func:`auc` to :func:`trapezoid_area`."""
    a = np.asarray(alphas, dtype=np.float64)
    return float(a.max() - a.min()) if a.size else 0.0


def trapezoid_area(alphas: Sequence[float], rewards: Sequence[float]) -> float:
    """The benchmark's AUC: the unnormalised trapezoid area (0 for a single alpha)."""
    return auc(alphas, rewards) * alpha_range(alphas)


def level_auc(alphas: Sequence[float], levels: np.ndarray) -> np.ndarray:
    """Per-level AUC: ``levels`` is ``[alphas, seeds, levels]``; returns ``[seeds, levels]``."""
    a = np.asarray(alphas, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    w = trapezoid_weights(a[order])
    return np.tensordot(w, np.asarray(levels, dtype=np.float64)[order], axes=1)


def prob_improvement_levels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per level ``1{x > y} + 1/2 1{x = y}``: its mean is the paired probability of improvement."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return (x > y) + 0.5 * (x == y)


def _first(means: np.ndarray) -> np.ndarray:
    return means[0]


def ratio(means: np.ndarray) -> np.ndarray:
    """Statistic ``mean(sample 0) / mean(sample 1)`` (e.g. a method's AUC over the skyline's)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return means[0] / means[1]


def bootstrap_distribution(samples: Sequence[np.ndarray], statistic: Statistic = _first,
                           n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Bootstrap distribution ``[n_boot]`` of ``statistic(means of the resampled samples)``.

    :param samples: arrays ``[seeds, levels]`` of one shape, resampled with the same
        indices (paired).  One seed: :func:`scipy.stats.bootstrap`; several seeds:
        seeds with replacement, then levels with replacement within each drawn seed.
    :param statistic: maps the stacked per-sample means ``[k, ...]`` to the statistic.
    """
    xs = [np.asarray(s, dtype=np.float64) for s in samples]
    shape = xs[0].shape
    if len(shape) != 2 or any(x.shape != shape for x in xs):
        raise ValueError(f"paired samples need one [seeds, levels] shape, got "
                         f"{[x.shape for x in xs]}")
    n_seeds, n_levels = shape
    rng = np.random.default_rng(seed)
    if n_seeds == 1:

        def stat(*resampled, axis=-1):
            return statistic(np.stack([r.mean(axis=axis) for r in resampled]))

        res = sp_stats.bootstrap(
            [x[0] for x in xs], stat, n_resamples=n_boot, paired=True, vectorized=True,
            method="percentile", rng=rng, batch=max(1, 4_000_000 // max(n_levels, 1)),
        )
        return np.asarray(res.bootstrap_distribution, dtype=np.float64)
    out = np.empty(n_boot)
    chunk = max(1, 4_000_000 // (n_seeds * n_levels))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        seeds = rng.integers(0, n_seeds, (b, n_seeds, 1))
        lv = rng.integers(0, n_levels, (b, n_seeds, n_levels))
        means = np.stack([x[seeds, lv].mean(axis=(1, 2)) for x in xs])
        out[start:start + b] = statistic(means)
    return out


def percentile_ci(dist: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution (NaN-free resamples only)."""
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(d, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Statistic = _first,
                 n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                 level: float = LEVEL) -> tuple[float, float]:
    """Paired (hierarchical with several seeds) percentile bootstrap CI; NaNs with one level."""
    if np.asarray(samples[0]).size < 2:
        return float("nan"), float("nan")
    return percentile_ci(bootstrap_distribution(samples, statistic, n_boot, seed), level)


def point(samples: Sequence[np.ndarray], statistic: Statistic = _first) -> float:
    """``statistic`` of the samples' means (every seed weighs the same)."""
    means = np.array([np.asarray(s, dtype=np.float64).mean() for s in samples])
    return float(statistic(means))


def independent_auc_ci(alphas: Sequence[float], episodes: Sequence[np.ndarray],
                       n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                       level: float = LEVEL) -> tuple[float, float]:
    """Fallback CI of :func:`auc` when the alpha points are not paired (different episode
    counts): episodes are resampled independently at each alpha."""
    a = np.asarray(alphas, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    w = trapezoid_weights(a[order])
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, a.size))
    for col, j in enumerate(order):
        eps = np.asarray(episodes[j], dtype=np.float64)
        if eps.size < 1:
            return float("nan"), float("nan")
        means[:, col] = eps[rng.integers(0, eps.size, (n_boot, eps.size))].mean(axis=1)
    return percentile_ci(means @ w, level)


def winners(auc_by_method: dict[str, float],
            diff_ci: Callable[[str, str], tuple[float, float]]) -> list[str]:
    """The method with the highest AUC, plus every method whose paired CI of
    ``AUC(method) - AUC(top)`` includes 0 (a tie).  ``diff_ci(m, top)`` gives that CI."""
    finite = {m: v for m, v in auc_by_method.items() if np.isfinite(v)}
    if not finite:
        return []
    top = max(sorted(finite), key=finite.get)
    out = [top]
    for m in finite:
        if m == top:
            continue
        lo, hi = diff_ci(m, top)
        if np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi:
            out.append(m)
        elif not (np.isfinite(lo) and np.isfinite(hi)) and finite[m] == finite[top]:
            out.append(m)
    return sorted(out)

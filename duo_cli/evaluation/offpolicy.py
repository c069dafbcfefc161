"""Off-policy evaluation of a coordinator from logged episodes: per-decision importance sampling.

Episode ``i`` was played by a behaviour policy; at step ``t`` it took the logged decision
with probability ``b[i, t]``, and the target would take the same decision with probability
``e[i, t]``.  With ``rho[i, t] = prod_{k <= t} e[i, k] / b[i, k]`` (``rho[i, -1] = 1``), a
reward ``r[i, t]`` that follows the decision of step ``t`` and a reward ``q[i, t]`` fixed
before it (known from the history up to the step's state), the undiscounted return of the
target is estimated by

* ordinary per-decision importance sampling (unbiased):
  ``PDIS = mean_i sum_t (rho[i, t] * r[i, t] + rho[i, t-1] * q[i, t])``;
* weighted (self-normalised) PDIS (biased, consistent, lower variance): each term's sum over
  episodes divided by the sum of its weights, ``sum_t (sum_i rho[i, t] r[i, t] / sum_i
  rho[i, t] + sum_i rho[i, t-1] q[i, t] / sum_i rho[i, t-1])``, where an episode that has
  ended keeps its last weight and rewards 0, and a term whose weights are all 0 adds 0.

The confidence intervals are percentile bootstrap intervals over episodes
(:func:`scipy.stats.bootstrap`); the effective sample size is Kish's ``(sum w)^2 / sum w^2``
of the episodes' final weights ``w[i] = rho[i, L_i - 1]``.  What the decision is (the
coordinator's choice of actor, or the base action it led to) is the caller's:
:mod:`duo_cli.serve.offpolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Weighted:
    """Padded per-step arrays of ``n`` episodes (``T`` = the longest episode's length).

    :param rewards: ``(n, T)`` rewards that follow each step's decision, 0 after an
        episode's end.
    :param before: ``(n, T)`` rewards fixed before each step's decision, 0 after the end.
    :param rho: ``(n, T)`` cumulative importance weights, kept at their last value after
        an episode's end.
    :param lengths: ``(n,)`` episode lengths.
    """

    rewards: np.ndarray
    before: np.ndarray
    rho: np.ndarray
    lengths: np.ndarray

    @property
    def rho_before(self) -> np.ndarray:
        """``rho[:, t - 1]`` (1 at ``t = 0``): the weight of a reward fixed before step ``t``."""
        return np.concatenate([np.ones((len(self.rho), 1)), self.rho[:, :-1]], axis=1)

    @property
    def final(self) -> np.ndarray:
        """Each episode's trajectory weight ``rho[i, L_i - 1]``."""
        return self.rho[:, -1] if self.rho.shape[1] else np.ones(len(self.rho))


@dataclass(frozen=True)
class OffPolicyEstimate:
    """What :func:`estimate` returns (``*_ci`` are ``[low, high]`` at ``confidence``)."""

    pdis: float
    pdis_ci: list[float]
    wpdis: float
    wpdis_ci: list[float]
    ess: float
    episodes: int
    matched: int
    steps: int
    confidence: float
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def weigh(rewards: Sequence[Sequence[float]], behaviour: Sequence[Sequence[float]],
          target: Sequence[Sequence[float]],
          before: Sequence[Sequence[float]] | None = None) -> Weighted:
    """Pad episodes' per-step rewards and probabilities of the logged decision into arrays.

    :param rewards: per episode, the reward that follows each step's decision.
    :param behaviour: per episode, the behaviour probability of each logged decision (> 0).
    :param target: per episode, the target's probability of the same decision (in [0, 1]).
    :param before: per episode, rewards fixed before each step's decision (default none).
    :raises ValueError: unequal lengths, or a probability out of range.
    """
    n = len(rewards)
    if not n or len(behaviour) != n or len(target) != n:
        raise ValueError(f"need the same number (> 0) of episodes: {n}, {len(behaviour)}, "
                         f"{len(target)}")
    lengths = np.array([len(r) for r in rewards], dtype=np.int64)
    horizon = int(lengths.max())
    r, q = np.zeros((n, horizon)), np.zeros((n, horizon))
    ratio = np.ones((n, horizon))
    before = before if before is not None else [np.zeros(len(ri)) for ri in rewards]
    for i, (ri, bi, ei, qi) in enumerate(zip(rewards, behaviour, target, before, strict=True)):
        bi, ei = np.asarray(bi, dtype=np.float64), np.asarray(ei, dtype=np.float64)
        if not len(ri) == len(bi) == len(ei) == len(qi):
            raise ValueError(f"episode {i}: {len(ri)} and {len(qi)} rewards, {len(bi)} "
                             f"behaviour and {len(ei)} target probabilities")
        if not ((bi > 0) & (bi <= 1)).all() or not ((ei >= 0) & (ei <= 1)).all():
            raise ValueError(f"episode {i}: behaviour probabilities must be in (0, 1] and "
                             f"target ones in [0, 1]")
        r[i, :len(ri)] = ri
        q[i, :len(qi)] = qi
        ratio[i, :len(bi)] = ei / bi
    return Weighted(r, q, np.cumprod(ratio, axis=1), lengths)


def pdis_returns(w: Weighted) -> np.ndarray:
    """Each episode's per-decision importance-weighted return."""
    return (w.rho * w.rewards).sum(axis=1) + (w.rho_before * w.before).sum(axis=1)


def wpdis(rho: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Weighted PDIS of one kind of term over the episode axis ``-2`` (arrays ``(..., n, T)``):
    one value per leading index."""
    num = (rho * rewards).sum(axis=-2)
    den = rho.sum(axis=-2)
    per_step = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return per_step.sum(axis=-1)


def weighted_pdis(w: Weighted, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Weighted PDIS of the episodes ``idx`` (an index array ``(..., n)`` or all)."""
    return (wpdis(w.rho[idx], w.rewards[idx])
            + wpdis(w.rho_before[idx], w.before[idx]))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ``(sum w)^2 / sum w^2`` (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w * w).sum())
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def estimate(w: Weighted, confidence: float = 0.95, resamples: int = 2000,
             seed: int = 0) -> OffPolicyEstimate:
    """PDIS and weighted PDIS with percentile bootstrap CIs over episodes, and the ESS.

    With fewer than two episodes the intervals are ``[nan, nan]``.
    """
    g = pdis_returns(w)
    n, horizon = w.rho.shape
    ci_p = ci_w = [float("nan")] * 2
    if n >= 2:
        def stat_p(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            return g[idx].mean(axis=axis)

        def stat_w(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            return weighted_pdis(w, idx)

        batch = max(1, int(2_000_000 // max(1, n * horizon)))
        ci_p, ci_w = (_interval(stat, n, confidence, resamples, seed, batch)
                      for stat in (stat_p, stat_w))
    return OffPolicyEstimate(
        pdis=float(g.mean()), pdis_ci=ci_p, wpdis=float(weighted_pdis(w)), wpdis_ci=ci_w,
        ess=effective_sample_size(w.final), episodes=int(n),
        matched=int((w.final > 0).sum()), steps=int(w.lengths.sum()), confidence=confidence,
        resamples=int(resamples))


def _interval(stat, n: int, confidence: float, resamples: int, seed: int,
              batch: int) -> list[float]:
    res = stats.bootstrap((np.arange(n),), stat, vectorized=True, n_resamples=resamples,
                          confidence_level=confidence, method="percentile", batch=batch,
                          rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]

"""Per task: each method's reward curve over alpha, its AUC, paired comparisons, winners
and ratio to the skyline (see :mod:`duo_cli.report.stats` for the resampling)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import duo_cli.report.stats as stats
from duo_cli.report.records import Point
from duo_cli.summaries import METHOD, SKYLINE, VALIDATORS

#: the benchmark's two reference baselines every method is compared with
NOVICE, EXPERT = "always_novice", "always_expert"
MIXED_ROLES = "its jobs disagree on the role (skyline or method): counted as the skyline"


def best_skyline(aucs: Mapping[str, float], skylines: Iterable[str]) -> str | None:
    """The task's skyline: among ``skylines`` (the methods whose jobs declare the role
    skyline: a coordinator trained on the test distribution, never a contender) the one
    with the highest finite, nonzero AUC."""
    cands = [m for m in sorted(skylines) if math.isfinite(aucs[m]) and aucs[m]]
    return max(cands, key=aucs.get) if cands else None


@dataclass
class Curve:
    """One method on one task: per alpha and seed its test result."""

    method: str
    learned: bool = False  # its jobs declare that they train a network
    role: str = METHOD     # its jobs' declared role: "skyline" or "method"
    by_alpha: dict[float, dict[int, Mapping[str, Any]]] = field(default_factory=dict)
    alphas: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)   # complete seeds (every alpha, rewards)
    levels: np.ndarray | None = None                 # [alphas, seeds, levels]
    notes: list[str] = field(default_factory=list)
    fallback: bool = False  # (validator curve) some point had no result of its own: test

    @property
    def skyline(self) -> bool:
        return self.role == SKYLINE

    def finish(self) -> None:
        """Pick the seeds with every alpha and per-episode rewards; stack their levels."""
        self.alphas = sorted(self.by_alpha)
        every = sorted({s for runs in self.by_alpha.values() for s in runs})
        self.seeds = [s for s in every if all(
            s in self.by_alpha[a] and self.by_alpha[a][s].get("rewards") for a in self.alphas)]
        if dropped := sorted(set(every) - set(self.seeds)):
            self.notes.append(f"seeds {dropped} lack an alpha or per-episode rewards: "
                              "not in the paired statistics")
        if not self.seeds:
            return
        lengths = {len(self.by_alpha[a][s]["rewards"]) for a in self.alphas for s in self.seeds}
        n = min(lengths)
        if len(lengths) > 1:
            self.notes.append(f"episode counts differ ({sorted(lengths)}): first {n} used")
        self.levels = np.array([[self.by_alpha[a][s]["rewards"][:n] for s in self.seeds]
                                for a in self.alphas], dtype=np.float64)

    def level_auc(self) -> np.ndarray | None:
        return None if self.levels is None else stats.level_auc(self.alphas, self.levels)


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _ci(lo_hi: tuple[float, float] | None) -> list[float] | None:
    if lo_hi is None or not all(math.isfinite(v) for v in lo_hi):
        return None
    return [float(lo_hi[0]), float(lo_hi[1])]


def curve_summary(c: Curve, n_boot: int, seed: int) -> dict[str, Any]:
    """Points (reward, CI, expert fraction per alpha), AUC and area with paired CIs."""
    points = []
    for j, a in enumerate(c.alphas):
        runs = c.by_alpha[a]
        used = c.seeds if c.levels is not None else sorted(runs)
        tests = [runs[s] for s in used]
        if c.levels is not None:
            reward = float(c.levels[j].mean())
            ci = stats.bootstrap_ci([c.levels[j]], n_boot=n_boot, seed=seed)
        else:
            reward, ci = _mean([t.get("reward_mean") for t in tests]), None
        points.append({
            "alpha": a, "reward_mean": reward, "reward_ci95": _ci(ci),
            "expert_frac": _mean([t.get("expert_frac") for t in tests]),
            "base_reward_mean": _mean([t.get("base_reward_mean") for t in tests]),
            "seeds": used, "episodes": int(sum(len(t.get("rewards") or []) for t in tests)),
        })
    lv = c.level_auc()
    rng = stats.alpha_range(c.alphas)
    if lv is not None:
        value = float(lv.mean())
        ci = stats.bootstrap_ci([lv], n_boot=n_boot, seed=seed)
    else:
        value = stats.auc(c.alphas, [p["reward_mean"] if p["reward_mean"] is not None
                                     else math.nan for p in points])
        eps = [[r for t in c.by_alpha[a].values() for r in (t.get("rewards") or [])]
               for a in c.alphas]
        ci = stats.independent_auc_ci(c.alphas, eps, n_boot, seed) if all(eps) else None
    ci = _ci(ci)
    return {
        "auc": value, "auc_ci95": ci,
        "auc_area": value * rng, "auc_area_ci95": None if ci is None else [v * rng for v in ci],
        "paired": lv is not None, "learned": c.learned, "role": c.role,
        "seeds": c.seeds if lv is not None else sorted({s for r in c.by_alpha.values() for s in r}),
        "episodes_per_seed": 0 if c.levels is None else int(c.levels.shape[2]),
        "points": points, "notes": list(c.notes),
    }


def _paired(a: Curve, b: Curve) -> tuple[np.ndarray, np.ndarray] | None:
    """The two curves' per-level AUCs on their common seeds and levels."""
    la, lb = a.level_auc(), b.level_auc()
    if la is None or lb is None:
        return None
    common = [s for s in a.seeds if s in b.seeds]
    if not common:
        return None
    n = min(la.shape[1], lb.shape[1])
    ia = [a.seeds.index(s) for s in common]
    ib = [b.seeds.index(s) for s in common]
    return la[ia, :n], lb[ib, :n]


def compare(a: Curve, b: Curve, auc_a: float, auc_b: float, n_boot: int,
            seed: int) -> dict[str, Any]:
    """``a`` against ``b``: AUC difference with its paired CI and the probability that
    ``a``'s per-level AUC beats ``b``'s on the same level (ties count 1/2)."""
    pair = _paired(a, b)
    if pair is None:
        return {"auc_diff": auc_a - auc_b, "auc_diff_ci95": None, "prob_improvement": None,
                "prob_improvement_ci95": None, "paired": False}
    x, y = pair
    d = x - y
    p = stats.prob_improvement_levels(x, y)
    out = {
        "auc_diff": float(d.mean()),
        "auc_diff_ci95": _ci(stats.bootstrap_ci([d], n_boot=n_boot, seed=seed)),
        "prob_improvement": float(p.mean()),
        "prob_improvement_ci95": _ci(stats.bootstrap_ci([p], n_boot=n_boot, seed=seed)),
        "paired": True, "seeds": [s for s in a.seeds if s in b.seeds],
        "episodes_per_seed": int(x.shape[1]),
    }
    if a.alphas != b.alphas:
        out["note"] = "alpha grids differ"
    return out


def skyline_ratio(a: Curve, sky: Curve, auc_a: float, auc_sky: float, n_boot: int,
                  seed: int) -> tuple[float, list[float] | None]:
    """``AUC(a) / AUC(skyline)`` with a paired bootstrap CI (same levels for both)."""
    pair = _paired(a, sky)
    if pair is None:
        return (auc_a / auc_sky if auc_sky else math.nan), None
    x, y = pair
    value = stats.point([x, y], stats.ratio)
    return value, _ci(stats.bootstrap_ci([x, y], stats.ratio, n_boot=n_boot, seed=seed))


def _baselines(method: str, best: str | None, present: Sequence[str]) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for name, role in ((NOVICE, NOVICE), (EXPERT, EXPERT), (best, "best_baseline")):
        if name and name != method and name in present:
            roles.setdefault(name, []).append(role)
    return roles


def task_summary(curves: Mapping[str, Curve], n_boot: int, seed: int) -> dict[str, Any]:
    """Everything about one task: per method its curve and comparisons, the winners
    (ties by paired CI), the best non-learned baseline and the skyline ratios."""
    methods = {m: curve_summary(c, n_boot, seed) for m, c in sorted(curves.items())}
    aucs = {m: v["auc"] for m, v in methods.items()}
    contenders = {m: a for m, a in aucs.items() if not curves[m].skyline and math.isfinite(a)}
    non_learned = [m for m in contenders if not curves[m].learned]
    best = max(sorted(non_learned), key=contenders.get) if non_learned else None
    runner_up = max(sorted(m for m in non_learned if m != best), key=contenders.get,
                    default=None)
    cache: dict[tuple[str, str], dict[str, Any]] = {}

    def cmp(m: str, b: str) -> dict[str, Any]:
        if (m, b) not in cache:
            cache[(m, b)] = compare(curves[m], curves[b], aucs[m], aucs[b], n_boot, seed)
        return cache[(m, b)]

    for m, v in methods.items():
        roles = _baselines(m, best if m != best else runner_up, list(methods))
        v["comparisons"] = {b: {"roles": r, **cmp(m, b)} for b, r in roles.items()}
    win = stats.winners(contenders, lambda m, top: tuple(
        cmp(m, top)["auc_diff_ci95"] or (math.nan, math.nan)))
    sky = best_skyline(aucs, [m for m, c in curves.items() if c.skyline])
    if sky is not None:
        for m, v in methods.items():
            v["skyline_ratio"], v["skyline_ratio_ci95"] = skyline_ratio(
                curves[m], curves[sky], aucs[m], aucs[sky], n_boot, seed)
    return {
        "alphas": sorted({a for c in curves.values() for a in c.alphas}),
        "methods": methods, "winners": win, "best_baseline": best, "skyline": sky,
    }


def _add(curves: dict[str, Curve], p: Point, test: Mapping[str, Any]) -> bool:
    """Add ``test`` at ``p``'s alpha and seed; False when that point is already there."""
    c = curves.setdefault(p.method, Curve(p.method, role=p.traits.role))
    c.learned = c.learned or p.learned
    if p.traits.role != c.role and MIXED_ROLES not in c.notes:
        c.notes.append(MIXED_ROLES)
    if p.skyline:
        c.role = SKYLINE
    runs = c.by_alpha.setdefault(round(p.alpha, 10), {})
    if p.seed in runs:
        return False
    runs[p.seed] = test
    return True


def single_layout(name: str, declared: set[bool], notes: list[str]) -> bool | None:
    """Whether a task's test levels are one layout, as its jobs declared (``None``: none
    did); jobs that disagree count as one layout (the weaker claim) and add a note."""
    if len(declared) > 1:
        notes.append(f"{name}: its jobs disagree on whether the test levels are one layout; "
                     "reported as one layout")
    return True if True in declared else False if declared else None


def group_points(points: Sequence[Point]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Group by task (and beta, when betas vary) and method.

    :returns: ``({group: {"task", "beta", "curves": {method: Curve}, "validators":
        {validator: {method: Curve}}, "single_layout"}}, notes)``: ``curves`` hold "the"
        results, ``validators`` the test results of each validator's choice,
        ``single_layout`` whether the test levels are one layout (:func:`single_layout`).
    """
    betas = {p.beta for p in points}
    groups: dict[str, dict[str, Any]] = {}
    notes = []
    for p in points:
        name = p.task if len(betas) <= 1 else f"{p.task} beta={p.beta:g}"
        g = groups.setdefault(name, {"task": p.task, "beta": p.beta, "curves": {},
                                     "validators": {v: {} for v in VALIDATORS},
                                     "layouts": set()})
        if p.single_layout is not None:
            g["layouts"].add(p.single_layout)
        if not _add(g["curves"], p, p.test):
            notes.append(f"{name}/{p.method}: alpha {p.alpha:g} seed {p.seed} appears twice; "
                         "the first result is used")
            continue
        for v in VALIDATORS:
            _add(g["validators"][v], p, p.validators.get(v, p.test))
            if v in p.fallback or v not in p.validators:
                g["validators"][v][p.method].fallback = True
    for name, g in groups.items():
        g["single_layout"] = single_layout(name, g.pop("layouts"), notes)
        for c in [*g["curves"].values(), *(c for vc in g["validators"].values()
                                           for c in vc.values())]:
            c.finish()
    return dict(sorted(groups.items())), notes

"""The benchmark's own figures, per task: each method's AUC under both validators and the
validator gap, the three ratios of the best non-RL method (or the oracle proposer) to
the skyline (and where the skyline fails to bound the best non-RL method), and the winner
under the benchmark's rule and under ours.

Every quantity is paired: the validators' choices, the methods and the skyline play the
same test levels, so each CI resamples the same level indices for all its terms (see
:mod:`duo_cli.report.stats`).  "Best" methods are chosen on the point estimates and then
held fixed inside the bootstrap (the CIs are conditional on that choice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import duo_cli.report.stats as stats
from duo_cli.report.summary import Curve, _ci, compare, skyline_ratio
from duo_cli.summaries import SKYLINE, VALIDATORS

#: keys of a task's ``skyline_ratios``: whose AUC is divided by the skyline's
RATIOS = {
    "val_sim": "best non-RL method, each method's choice by the simulated validator (YRC-0)",
    "val_true": "best non-RL method, each method's choice by the oracle validator (val_true)",
    "oracle_proposer": "the skyline's PPO coordinator chosen by the simulated validator",
}


def curve_auc(c: Curve, n_boot: int, seed: int) -> dict[str, Any]:
    """AUC and the benchmark's area with paired CIs (NaN / None without per-episode data)."""
    lv = c.level_auc()
    rng = stats.alpha_range(c.alphas) if c.alphas else 0.0
    value = point_auc(c)
    ci = None if lv is None else _ci(stats.bootstrap_ci([lv], n_boot=n_boot, seed=seed))
    return {"auc": value, "auc_ci95": ci, "auc_area": value * rng,
            "auc_area_ci95": None if ci is None else [v * rng for v in ci],
            "paired": lv is not None, "fallback": c.fallback}


def point_auc(c: Curve) -> float:
    """The curve's AUC: the mean per-level AUC, or from the mean rewards without them."""
    lv = c.level_auc()
    if lv is not None:
        return float(lv.mean())
    means = [_mean_reward(c.by_alpha[a]) for a in c.alphas]
    return stats.auc(c.alphas, means) if c.alphas else math.nan


def _mean_reward(runs: Mapping[int, Mapping[str, Any]]) -> float:
    vals = [float(t["reward_mean"]) for t in runs.values()]
    return sum(vals) / len(vals) if vals else math.nan


def validator_summaries(by_validator: Mapping[str, Mapping[str, Curve]], n_boot: int,
                        seed: int) -> dict[str, dict[str, Any]]:
    """Per method ``{"val_sim": auc, "val_true": auc, "gap": val_true - val_sim}``; the gap
    is the paired comparison of the two choices' test results (same levels)."""
    out: dict[str, dict[str, Any]] = {}
    methods = sorted(set().union(*(set(c) for c in by_validator.values())))
    for m in methods:
        v = {name: curve_auc(by_validator[name][m], n_boot, seed) for name in VALIDATORS
             if m in by_validator[name]}
        if all(name in v for name in VALIDATORS):
            sim, true = (by_validator[name][m] for name in VALIDATORS)
            v["gap"] = compare(true, sim, v["val_true"]["auc"], v["val_sim"]["auc"],
                               n_boot, seed)
        out[m] = v
    return out


def _best(aucs: Mapping[str, float], among: list[str]) -> str | None:
    finite = [m for m in sorted(among) if math.isfinite(aucs.get(m, math.nan))]
    return max(finite, key=aucs.get) if finite else None


def skyline_ratios(curves: Mapping[str, Curve], by_validator: Mapping[str, Mapping[str, Curve]],
                   validators: Mapping[str, Mapping[str, Any]], sky: str | None,
                   non_rl: list[str], n_boot: int, seed: int) -> dict[str, Any] | None:
    """The three ratios to the skyline ``sky`` (the best skyline variant by AUC).

    The skyline's AUC is its own (``val_true``) choice; the oracle proposer is the same
    variant's ``val_sim`` choice, reported only where the job recorded it.
    """
    if sky is None:
        return None
    sky_curve = curves[sky]
    sky_auc = point_auc(sky_curve)
    out: dict[str, Any] = {"skyline": sky, "skyline_auc": sky_auc}
    for name in ("val_sim", "val_true"):
        aucs = {m: validators[m][name]["auc"] for m in non_rl if name in validators[m]}
        best = _best(aucs, list(aucs))
        out[name] = _ratio(by_validator[name].get(best) if best else None, best, aucs.get(best),
                           sky_curve, sky_auc, n_boot, seed)
    proposer = by_validator["val_sim"].get(sky)
    if proposer is None or proposer.fallback:
        out["oracle_proposer"] = {"method": None, "auc": None, "ratio": None, "ratio_ci95": None,
                                  "note": f"{sky} recorded no val_sim choice"}
    else:
        out["oracle_proposer"] = _ratio(proposer, f"{sky} (val_sim)",
                                        validators[sky]["val_sim"]["auc"], sky_curve, sky_auc,
                                        n_boot, seed)
    return out


def _ratio(c: Curve | None, name: str | None, auc: float | None, sky: Curve, sky_auc: float,
           n_boot: int, seed: int) -> dict[str, Any]:
    if c is None or auc is None:
        return {"method": None, "auc": None, "ratio": None, "ratio_ci95": None}
    value, ci = skyline_ratio(c, sky, auc, sky_auc, n_boot, seed)
    return {"method": name, "auc": auc, "ratio": value, "ratio_ci95": ci,
            "fallback": c.fallback}


#: the validators under which the skyline must bound the best non-RL method, and their names
BOUND_VALIDATORS = {"val_sim": "YRC-0 (simulated) validator", "val_true": "oracle validator"}


def bound_violations(ratios: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Where the skyline is not an upper bound: per validator of :data:`BOUND_VALIDATORS`
    whose ratio best non-RL AUC / skyline AUC exceeds 1 beyond its 95% CI (the CI's lower
    bound > 1; ``beyond_ci``), or exceeds 1 with no CI to check it against (``beyond_ci``
    false: per-episode rewards missing).  The one rule the report and the console use."""
    out = []
    for key, validator in BOUND_VALIDATORS.items():
        r = (ratios or {}).get(key) or {}
        value, ci = r.get("ratio"), r.get("ratio_ci95")
        if value is None or not math.isfinite(value):
            continue
        beyond = ci is not None and ci[0] > 1
        if beyond or (ci is None and value > 1):
            out.append({"validator": key, "validator_name": validator, "method": r["method"],
                        "skyline": ratios["skyline"], "ratio": value, "ratio_ci95": ci,
                        "beyond_ci": beyond})
    return out


def rule_winners(curves: Mapping[str, Curve], aucs: Mapping[str, float], non_rl: list[str],
                 n_boot: int, seed: int) -> dict[str, Any]:
    """The task's winner among the non-RL methods under both rules.

    ``benchmark``: strictly the highest mean AUC (a tie at the top gives no winner);
    ``paired``: the highest, when the paired 95% CI of its AUC difference to the
    runner-up excludes 0.
    """
    ranked = sorted((m for m in non_rl if math.isfinite(aucs[m])), key=lambda m: (-aucs[m], m))
    out: dict[str, Any] = {"benchmark": None, "paired": None, "top": None, "runner_up": None,
                           "auc_diff": None, "auc_diff_ci95": None}
    if not ranked:
        return out
    top = ranked[0]
    out["top"] = top
    if len(ranked) == 1:
        out["benchmark"] = out["paired"] = top
        return out
    second = ranked[1]
    c = compare(curves[top], curves[second], aucs[top], aucs[second], n_boot, seed)
    out.update(runner_up=second, auc_diff=c["auc_diff"], auc_diff_ci95=c["auc_diff_ci95"])
    if aucs[top] > aucs[second]:
        out["benchmark"] = top
        lo_hi = c["auc_diff_ci95"]
        if lo_hi is not None and lo_hi[0] > 0:
            out["paired"] = top
    return out


def yrc_task(curves: Mapping[str, Curve], by_validator: Mapping[str, Mapping[str, Curve]],
             aucs: Mapping[str, float], sky: str | None, n_boot: int,
             seed: int) -> dict[str, Any]:
    """``validators`` (per method), ``skyline_ratios``, ``bound_violations`` and
    ``rule_winners`` of one task."""
    non_rl = [m for m, c in curves.items() if not c.learned and not c.skyline]
    validators = validator_summaries(by_validator, n_boot, seed)
    ratios = skyline_ratios(curves, by_validator, validators, sky, non_rl, n_boot, seed)
    return {
        "validators": validators,
        "skyline_ratios": ratios,
        "bound_violations": bound_violations(ratios),
        "rule_winners": rule_winners(curves, aucs, non_rl, n_boot, seed),
    }


def count_rule_wins(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per non-RL method and rule: the number of tasks won and which."""
    wins: dict[str, dict[str, Any]] = {}
    for t, r in results.items():
        rw = r.get("rule_winners") or {}
        for m, v in r["methods"].items():
            if not v["learned"] and v["role"] != SKYLINE:
                wins.setdefault(m, {rule: {"wins": 0, "tasks": []} for rule in ("benchmark",
                                                                                 "paired")})
        for rule in ("benchmark", "paired"):
            if (m := rw.get(rule)) is not None:
                wins[m][rule]["wins"] += 1
                wins[m][rule]["tasks"].append(t)
    return wins

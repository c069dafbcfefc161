"""Across tasks: IQM and mean of the normalised score, probability of improvement and
wins, with rliable's stratified bootstrap (levels resampled within each task).

Normalised score of a level: its per-level AUC divided by the task's reference AUC,
the skyline's AUC when the task has a skyline, else the better of always_novice and
always_expert (a score above 1 then beats the best single agent).  Its mean over a
task's levels is the ratio of AUCs; the reference is a fixed point estimate.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from duo_cli.report.stats import prob_improvement_levels
from duo_cli.report.summary import EXPERT, NOVICE, Curve, _paired
from duo_cli.summaries import SKYLINE


def reference(result: Mapping[str, Any]) -> tuple[str, float] | None:
    """``(name, AUC)`` of the task's normalising reference, or ``None``."""
    methods = result["methods"]
    sky = (result["skyline"],) if result.get("skyline") else ()
    for names in (sky, (NOVICE, EXPERT)):
        cands = [(methods[n]["auc"], n) for n in names
                 if n in methods and math.isfinite(methods[n]["auc"]) and methods[n]["auc"] > 0]
        if cands:
            value, name = max(cands)
            return name, float(value)
    return None


def _detach_absl_stream() -> None:
    """rliable imports absl, whose (unused) logging handler keeps the ``sys.stderr`` of
    import time and closes it when a later ``logging.config.dictConfig`` (Hydra's, in the
    next multirun of the same process) shuts handlers down; point it at the real stderr,
    which it never closes."""
    handler = getattr(sys.modules.get("absl.logging"), "_absl_handler", None)
    python_handler = getattr(handler, "python_handler", None)
    if python_handler is not None:
        python_handler.stream = sys.__stderr__


def _interval(scores: Mapping[str, np.ndarray], func, n_boot: int, seed: int):
    """rliable's stratified percentile bootstrap; numpy's global generator (which rliable
    draws from) is seeded for the call and restored afterwards."""
    from rliable import library

    _detach_absl_stream()
    absl_log = logging.getLogger("absl")  # rliable logs one INFO line per method
    level = absl_log.level
    absl_log.setLevel(logging.WARNING)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return library.get_interval_estimates(dict(scores), func, reps=n_boot)
    finally:
        np.random.set_state(state)
        absl_log.setLevel(level)


def _columns(cols: list[np.ndarray]) -> np.ndarray:
    n = min(c.size for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


def _iqm_mean(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])


def _mean(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_mean(x)])


def aggregate(groups: Mapping[str, Mapping[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """:param groups: ``{task: {"curves": {method: Curve}, "result": task summary}}``."""
    refs = {t: reference(g["result"]) for t, g in groups.items()}
    scores: dict[str, list[np.ndarray]] = {}
    tasks_of: dict[str, list[str]] = {}
    prob_cols: dict[tuple[str, str], list[np.ndarray]] = {}
    for t, g in groups.items():
        if refs[t] is None:
            continue
        ref = refs[t][1]
        curves: Mapping[str, Curve] = g["curves"]
        for m, c in curves.items():
            lv = c.level_auc()
            if lv is None:
                continue
            scores.setdefault(m, []).append(lv.ravel() / ref)
            tasks_of.setdefault(m, []).append(t)
            for b in (NOVICE, EXPERT):
                if b != m and b in curves and (pair := _paired(c, curves[b])) is not None:
                    prob_cols.setdefault((m, b), []).append(
                        prob_improvement_levels(*pair).ravel())
    out: dict[str, Any] = {}
    if scores:
        mats = {m: _columns(cols) for m, cols in scores.items()}
        pt, ci = _interval(mats, _iqm_mean, n_boot, seed)
        for m in mats:
            out[m] = {"tasks": tasks_of[m], "levels_per_task": int(mats[m].shape[0]),
                      "iqm": float(pt[m][0]), "iqm_ci95": [float(ci[m][0][0]), float(ci[m][1][0])],
                      "mean": float(pt[m][1]),
                      "mean_ci95": [float(ci[m][0][1]), float(ci[m][1][1])],
                      "prob_improvement": {}}
    if prob_cols:
        mats = {f"{m}\0{b}": _columns(cols) for (m, b), cols in prob_cols.items()}
        pt, ci = _interval(mats, _mean, n_boot, seed)
        for key in mats:
            m, b = key.split("\0")
            out.setdefault(m, {"prob_improvement": {}})["prob_improvement"][b] = {
                "value": float(pt[key][0]), "ci95": [float(ci[key][0][0]), float(ci[key][1][0])],
                "tasks": len(prob_cols[(m, b)])}
    return {"references": {t: (None if r is None else {"method": r[0], "auc": r[1]})
                           for t, r in refs.items()},
            "methods": dict(sorted(out.items()))}


def count_wins(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: tasks won (ties included), tasks won alone, and which."""
    wins: dict[str, dict[str, Any]] = {}
    for t, r in results.items():
        for m, v in r["methods"].items():
            if v["role"] != SKYLINE:
                wins.setdefault(m, {"wins": 0, "sole_wins": 0, "tasks_won": []})
        for m in r["winners"]:
            w = wins.setdefault(m, {"wins": 0, "sole_wins": 0, "tasks_won": []})
            w["wins"] += 1
            w["sole_wins"] += len(r["winners"]) == 1
            w["tasks_won"].append(t)
    return dict(sorted(wins.items()))

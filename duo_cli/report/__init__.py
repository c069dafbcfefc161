"""The report of a cost sweep: statistics (:mod:`.stats`, :mod:`.summary`,
:mod:`.across`), console tables (:mod:`.tables`), plots (:mod:`.plots`) and
``report.md`` (:mod:`.markdown`), computed from the jobs' results (:mod:`.records`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duo_cli.report import stats
from duo_cli.report.across import aggregate, count_wins
from duo_cli.report.records import Point
from duo_cli.report.summary import group_points, task_summary

DEFINITIONS = {
    "auc": "normalised AUC: trapezoid area under mean test reward vs alpha divided by the "
           "alpha range (the mean reward over the range, in reward units; one alpha: its reward)",
    "auc_area": "the benchmark's AUC: the unnormalised trapezoid area (= auc x alpha range; "
                "equal to auc over alpha in [0, 1])",
    "auc_ci95": "95% percentile bootstrap, paired: every resample draws the same level "
                "indices at every alpha (and for both methods of a comparison); with several "
                "seeds hierarchical (seeds with replacement, then levels within each seed)",
    "prob_improvement": "probability that the method's per-level AUC beats the baseline's on "
                        "the same level (ties count 1/2), with its paired bootstrap CI",
    "winners": "per task the highest AUC (skyline excluded) plus every method whose paired "
               "95% CI of the AUC difference to it includes 0",
    "best_baseline": "the non-learned method (no trained network) with the highest AUC",
    "skyline_ratio": "AUC / the skyline's AUC, paired bootstrap CI",
    "aggregate": "normalised score = per-level AUC / the task's reference AUC (skyline, else "
                 "the better of always_novice and always_expert); IQM and mean over tasks with "
                 "rliable's stratified bootstrap (levels resampled within each task)",
}


def build(points: Sequence[Point], n_boot: int = stats.N_BOOT,
          seed: int = stats.BOOT_SEED) -> dict[str, Any]:
    """``{"tasks", "aggregate", "wins", "notes"}`` from the points of every job."""
    groups, notes = group_points(points)
    tasks = {}
    for name, g in groups.items():
        tasks[name] = {"task": g["task"], "beta": g["beta"],
                       **task_summary(g["curves"], n_boot, seed)}
    agg = aggregate({t: {"curves": g["curves"], "result": tasks[t]} for t, g in groups.items()},
                    n_boot, seed)
    return {"tasks": tasks, "aggregate": agg, "wins": count_wins(tasks), "notes": notes}

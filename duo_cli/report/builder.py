"""The report of a sweep from its points: per task the curves, AUCs, comparisons, winners
and the benchmark's figures (:mod:`.summary`, :mod:`.yrc`), across tasks the aggregate
and wins (:mod:`.across`), and the definitions of every quantity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duo_cli.report.stats as stats
from duo_cli.report.across import aggregate, count_wins
from duo_cli.report.records import Point
from duo_cli.report.summary import group_points, task_summary
from duo_cli.report.yrc import count_rule_wins, yrc_task

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
    "traits": "what each job's method is, declared in its summary.json (never guessed from "
              "its name): learns (its algorithm trains a network: a learned method, never "
              "among the non-RL ones), shares_rollouts (candidates played once and rescored "
              "for every alpha) and role: skyline when its coordinator is trained on the test "
              "distribution (coordination.train_setting=test), else method",
    "winners": "per task the highest AUC (skyline excluded) plus every method whose paired "
               "95% CI of the AUC difference to it includes 0",
    "best_baseline": "the non-learned method (no trained network) with the highest AUC",
    "skyline_ratio": "AUC / the skyline's AUC, paired bootstrap CI; the skyline of a task is "
                     "its best skyline variant (the jobs whose role is skyline) by AUC",
    "validators": "per method the test result of each validator's choice: val_sim (YRC-0, "
                  "the simulated validator; 'the' result of every method but the skyline) and "
                  "val_true (the oracle validator; 'the' result of the skyline); AUC with a "
                  "paired CI each; fallback=true where the job recorded only its own choice "
                  "(then both are that choice). gap: val_true minus val_sim AUC, paired CI and "
                  "probability of improvement on the same levels",
    "skyline_ratios": "per task: best non-RL method's AUC under val_sim (YRC-0) / the "
                      "skyline's AUC; the same under val_true (best non-RL method by its "
                      "oracle-validator AUC); the oracle proposer (the skyline's PPO "
                      "coordinator chosen by val_sim) / the skyline. Paired bootstrap CIs, "
                      "the best method held fixed",
    "bound_violations": "per task, where the skyline is not an upper bound: the best non-RL "
                        "method's AUC / the skyline's AUC (skyline_ratios, under the YRC-0 "
                        "and under the oracle validator) above 1 beyond its 95% CI (lower "
                        "bound > 1), or above 1 without a CI (beyond_ci false); printed as a "
                        "warning, never hidden",
    "single_layout": "per task, as its jobs' env declared: every test level is the same "
                     "layout (e.g. MiniGrid DistShift), so its CIs cover only the agents' own "
                     "randomness (policy sampling, random actions), not a level distribution",
    "rule_winners": "per task among the non-RL methods (no trained coordinator): benchmark = "
                    "strictly the highest mean AUC (a tie at the top: none); paired = the "
                    "highest when the paired 95% CI of its AUC difference to the runner-up "
                    "excludes 0 (else none)",
    "wins": "per method: wins / sole_wins / tasks_won count the winners above (ties by CI "
            "included); benchmark and paired count rule_winners under each rule",
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
        t = {"task": g["task"], "beta": g["beta"], "single_layout": g["single_layout"],
             **task_summary(g["curves"], n_boot, seed)}
        aucs = {m: v["auc"] for m, v in t["methods"].items()}
        extra = yrc_task(g["curves"], g["validators"], aucs, t["skyline"], n_boot, seed)
        for m, v in extra.pop("validators").items():
            t["methods"][m]["validators"] = v
        tasks[name] = {**t, **extra}
    agg = aggregate({t: {"curves": g["curves"], "result": tasks[t]} for t, g in groups.items()},
                    n_boot, seed)
    wins = count_wins(tasks)
    for m, w in count_rule_wins(tasks).items():
        wins.setdefault(m, {"wins": 0, "sole_wins": 0, "tasks_won": []}).update(w)
    return {"tasks": tasks, "aggregate": agg, "wins": dict(sorted(wins.items())), "notes": notes}

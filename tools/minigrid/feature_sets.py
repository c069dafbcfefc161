"""The skyline's feature sets compared at one α per task: the skyline card's table.

Reads the skyline jobs (``traits.role == "skyline"``) of one or more ``duo sweep`` dirs,
e.g. the ``yrc_minigrid`` suite (its ``skyline_obs_hidden_dist`` at every α) and a sweep of
the other sets at one α::

    duo sweep benchmark=yrc_minigrid env.task=DistShift,DoorKey,LavaGap \\
        algorithm=skyline_obs,skyline_hidden,skyline_hidden_obs,skyline_dist,\\
skyline_obs_dist,skyline_hidden_dist \\
        coordination.alphas=[0.6] hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=DIR
    .venv/bin/python tools/minigrid/feature_sets.py --alpha 0.6 SUITE_DIR DIR

and prints, per task and set, the val_true reward of the checkpoint chosen on val_true
(how the benchmark picks its best set), that checkpoint's test reward and expert fraction,
and the winner per task. A set is *dominated* on a task when its val_true reward lies
below the task's best by more than the best's 95% CI.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duo_cli.summaries import read_summary


def rows(sweeps: list[Path], alpha: float) -> list[dict]:
    """One row per skyline job and task at ``alpha`` (the first job found wins)."""
    out: dict[tuple[str, str], dict] = {}
    for sweep in sweeps:
        for path in sorted(sweep.glob("*/summary.json")):
            job = read_summary(path)
            if not job.traits.skyline:
                continue
            for r in job.results:
                if abs(r.alpha - alpha) > 1e-9:
                    continue
                chosen, val = r.validators["val_true"], r.validation["val_true"]
                out.setdefault((job.task, job.method), {
                    "task": job.task, "set": job.method.removeprefix("skyline_"),
                    "val_true": val["reward_mean"], "val_true_ci": val["reward_ci95"],
                    "test": chosen.test["reward_mean"], "test_ci": chosen.test["reward_ci95"],
                    "expert_frac": chosen.test.get("expert_frac", float("nan")),
                    "step": chosen.selected.get("global_step"), "job": str(path.parent)})
    return sorted(out.values(), key=lambda r: (r["task"], -r["val_true"]))


def table(data: list[dict], alpha: float) -> str:
    lines = [f"| task | feature set | val_true reward ± 95% CI (α={alpha:g}) | test reward ± "
             "95% CI | expert frac (test) | chosen step | |",
             "|---|---|---|---|---|---|---|"]
    best: dict[str, dict] = {}
    for r in data:
        best.setdefault(r["task"], r)
    for r in data:
        b = best[r["task"]]
        mark = ("**best**" if r is b else
                "dominated" if r["val_true"] < b["val_true"] - b["val_true_ci"] else "within CI")
        lines.append(f"| {r['task']} | {r['set']} | {r['val_true']:.3f} ± {r['val_true_ci']:.3f} "
                     f"| {r['test']:.3f} ± {r['test_ci']:.3f} | {r['expert_frac']:.3f} | "
                     f"{r['step']:,} | {mark} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweeps", type=Path, nargs="+", help="duo sweep dirs")
    p.add_argument("--alpha", type=float, default=0.6)
    args = p.parse_args()
    data = rows(args.sweeps, args.alpha)
    print(table(data, args.alpha))
    for task in sorted({r["task"] for r in data}):
        winner = next(r for r in data if r["task"] == task)
        print(f"{task}: best set {winner['set']}")


if __name__ == "__main__":
    main()

"""The skyline's feature sets compared at one α per task: the skyline card's table.

Reads the skyline jobs (``traits.role == "skyline"``) of one or more ``duo sweep`` dirs,
e.g. the ``yrc_minigrid`` suite (its default skyline set at every α) and a sweep of
the other sets at one α::

    duo sweep benchmark=yrc_minigrid env.task=DistShift,DoorKey,LavaGap \\
        algorithm=skyline_obs,skyline_hidden,skyline_hidden_obs,skyline_dist,\\
skyline_obs_dist,skyline_hidden_dist \\
        coordination.alphas=[0.6] hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=DIR
    .venv/bin/python tools/minigrid/feature_sets.py --alpha 0.6 SUITE_DIR DIR

and prints, per task and set, the val_true reward of the checkpoint chosen on val_true
(how the benchmark picks its best set), that checkpoint's test reward and expert fraction,
and the winner per task and seed. A set is *dominated* on a task when its val_true reward
lies below the best's (same task and seed) by more than the best's 95% CI. Sweeps of
several seeds (``seed=0,1``) give one block per seed, and the sets dominated on no task
under any seed. ``--add`` adds a sweep's rows (another seed) to the card's data;
``--write`` keeps the rows as the card's data
(``checkpoints/minigrid/skyline/feature_sets.json``): the suite's default skyline sets are
the sets it names as dominated on no task (``tests/test_skyline_card.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from duo_cli.summaries import read_summary

DATA = Path(__file__).resolve().parents[2] / "checkpoints" / "minigrid" / "skyline" / "feature_sets.json"


def rows(sweeps: list[Path], alpha: float) -> list[dict]:
    """One row per skyline job, task and seed at ``alpha`` (the first job found wins)."""
    out: dict[tuple[str, str, int], dict] = {}
    for sweep in sweeps:
        for path in sorted(sweep.glob("*/summary.json")):
            job = read_summary(path)
            if not job.traits.skyline:
                continue
            for r in job.results:
                if abs(r.alpha - alpha) > 1e-9:
                    continue
                chosen, val = r.validators["val_true"], r.validation["val_true"]
                out.setdefault((job.task, job.method, job.seed), {
                    "task": job.task, "set": job.method.removeprefix("skyline_"),
                    "seed": job.seed,
                    "val_true": val["reward_mean"], "val_true_ci": val["reward_ci95"],
                    "test": chosen.test["reward_mean"], "test_ci": chosen.test["reward_ci95"],
                    "expert_frac": chosen.test.get("expert_frac", float("nan")),
                    "step": chosen.selected.get("global_step"), "job": str(path.parent)})
    return sorted(out.values(), key=_ranked)


def _ranked(row: dict) -> tuple:
    """The rows' order: by task and seed, best val_true reward first (:func:`marks` needs it)."""
    return row["task"], row["seed"], -row["val_true"]


def marks(data: list[dict]) -> list[str]:
    """Per row: ``best``, ``within CI`` or ``dominated`` against its task and seed's best."""
    best: dict[tuple[str, int], dict] = {}
    for r in data:  # sorted: the first row of a task and seed is its best
        best.setdefault((r["task"], r["seed"]), r)
    out = []
    for r in data:
        b = best[(r["task"], r["seed"])]
        out.append("best" if r is b else
                   "dominated" if r["val_true"] < b["val_true"] - b["val_true_ci"] else "within CI")
    return out


def undominated(data: list[dict]) -> list[str]:
    """The sets dominated on no task under any seed (item 4: the suite's default)."""
    dominated = {r["set"] for r, mark in zip(data, marks(data), strict=True) if mark == "dominated"}
    return sorted({r["set"] for r in data} - dominated)


def merged(kept: list[dict], new: list[dict]) -> list[dict]:
    """``kept`` rows with ``new`` ones added; a new row replaces a kept one of the same
    task, set and seed."""
    out = {(r["task"], r["set"], r["seed"]): r for r in kept}
    out.update({(r["task"], r["set"], r["seed"]): r for r in new})
    return sorted(out.values(), key=_ranked)


def write(data: list[dict], alpha: float, path: Path = DATA) -> None:
    """The rows (without their job dirs) as the card's data, written atomically."""
    kept = [{k: v for k, v in r.items() if k != "job"} for r in data]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"alpha": alpha, "rows": kept}, indent=1) + "\n")
    tmp.replace(path)


def read(path: Path = DATA) -> list[dict]:
    """The card's rows, in ``rows``' order."""
    return sorted(json.loads(path.read_text())["rows"], key=_ranked)


def table(data: list[dict], alpha: float) -> str:
    lines = [f"| task | seed | feature set | val_true reward ± 95% CI (α={alpha:g}) | test "
             "reward ± 95% CI | expert frac (test) | chosen step | |",
             "|---|---|---|---|---|---|---|---|"]
    for r, mark in zip(data, marks(data), strict=True):
        lines.append(f"| {r['task']} | {r['seed']} | {r['set']} | {r['val_true']:.3f} ± "
                     f"{r['val_true_ci']:.3f} | {r['test']:.3f} ± {r['test_ci']:.3f} | "
                     f"{r['expert_frac']:.3f} | {r['step']:,} | "
                     f"{'**best**' if mark == 'best' else mark} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweeps", type=Path, nargs="+", help="duo sweep dirs")
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--write", action="store_true", help=f"keep the rows in {DATA.name}")
    p.add_argument("--add", action="store_true",
                   help=f"add the sweeps' rows to those {DATA.name} holds (theirs win)")
    args = p.parse_args()
    data = rows(args.sweeps, args.alpha)
    if args.add:
        data = merged(read(), data)
    if args.write:
        write(data, args.alpha)
    print(table(data, args.alpha))
    labels = marks(data)
    for r, mark in zip(data, labels, strict=True):
        if mark == "best":
            print(f"{r['task']} seed {r['seed']}: best set {r['set']}")
    print("dominated on no task and seed:", ", ".join(undominated(data)))


if __name__ == "__main__":
    main()

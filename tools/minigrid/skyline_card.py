"""The skyline card: the MiniGrid skyline's learning curves and the budget they give.

Each curve is one ``duo train --type coord benchmark=yrc_minigrid env.task=TASK
algorithm=skyline_obs_hidden_dist coordination.alphas=null
coordination.expert_query_cost_weight=ALPHA seed=SEED algorithm.eval_every=10`` run (64
envs x 64 steps per iteration, conf/algorithm/base/skyline_variant.yaml; val_true evaluated
every 40,960 steps). The curves of the earlier 16 envs x 256 steps, fp32 skyline are kept
under ``curves/16x256_fp32/`` (the before of the README's learning comparison). ``--copy RUNS``
copies the evaluation rows of the run dirs ``RUNS/<task>/a<alpha>/s<seed>`` into
``checkpoints/minigrid/skyline/curves/`` (data, a few KB); the script then writes
``checkpoints/minigrid/skyline/curves.png`` and prints the card's table and the budget.

The budget is issue 22's rule: per curve run to 1.5M steps, the first evaluated step whose
val_true reward is not below the 95% CI of its 1.5M evaluation; the budget is the largest
of them. A late dip lowers a curve's 1.5M value, so the script also checks what stopping
at the budget costs each curve: its best evaluation up to the budget (the checkpoint the
skyline's val_true choice can keep) against its best overall must lie within the latter's
CI. The table also gives each curve's first step within the CI of its best evaluation.

    .venv/bin/python tools/minigrid/skyline_card.py [--copy /work/curves] [--copy-sweep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "checkpoints" / "minigrid" / "skyline"
KEYS = ("global_step", "eval/val_true/reward_mean", "eval/val_true/reward_ci95",
        "eval/val_true/expert_frac")
#: the skyline training the curves measure (env.num_envs, algorithm.num_steps, policy.bf16):
#: the skyline_*.yaml must train the same (tests/test_skyline_card.py)
CURVES_SHAPE = (64, 64, True)
FULL = 1_499_136  # the last iteration boundary at or below 1.5M (batches of 4,096 steps)
#: the feature sets with curves to 1.5M, and where their curves are: obs_hidden_dist (the
#: skyline's features, whose curves set the budget, issue 22's item 3), obs_dist (the
#: best set at seed 0 in the feature-set comparison at that budget, item 4), obs and
#: hidden_obs (the suite's default sets: dominated on no task over two seeds); the curves
#: of the sets the suite trains check that the budget fits them too
SETS = {"obs_hidden_dist": OUT / "curves", "obs_dist": OUT / "curves" / "obs_dist",
        "obs": OUT / "curves" / "obs", "hidden_obs": OUT / "curves" / "hidden_obs"}
BUDGET_SET = "obs_hidden_dist"


def copy_curves(runs: Path, feature_set: str = BUDGET_SET) -> None:
    """The evaluation rows of every finished or running curve under ``runs``."""
    SETS[feature_set].mkdir(parents=True, exist_ok=True)
    for metrics in sorted(runs.glob("*/a*/s*/metrics.jsonl")):
        seed, alpha, task = metrics.parent.name, metrics.parent.parent.name, metrics.parents[2].name
        _copy_evals(metrics, SETS[feature_set] / f"{task}_{alpha}_{seed}.jsonl")


def _copy_evals(metrics: Path, name: Path) -> None:
    """The evaluation rows (``KEYS``) of a run's ``metrics.jsonl`` into ``name``, if any."""
    rows = [json.loads(line) for line in open(metrics)]
    evals = [{k: r[k] for k in KEYS if k in r} for r in rows if KEYS[1] in r]
    if evals:  # else not evaluated yet
        name.write_text("".join(json.dumps(r) + "\n" for r in evals))


def copy_sweep_curves(sweep: Path) -> None:
    """The evaluation rows of a ``yrc_minigrid`` sweep's skyline jobs (every α of the
    grid, ``<job>/alpha_<a>/metrics.jsonl``), for the curves not already in the card."""
    import yaml

    (OUT / "curves").mkdir(parents=True, exist_ok=True)
    for config in sorted(sweep.glob("*/.hydra/config.yaml")):
        cfg = yaml.safe_load(config.read_text())
        if cfg.get("coordination", {}).get("train_setting") != "test":
            continue  # not a skyline job
        task, seed = cfg["env"]["task"], int(cfg["seed"])
        for metrics in sorted(config.parents[1].glob("alpha_*/metrics.jsonl")):
            alpha = float(metrics.parent.name.removeprefix("alpha_"))
            name = OUT / "curves" / f"{task}_a{alpha:.1f}_s{seed}.jsonl"
            if not name.exists():
                _copy_evals(metrics, name)


def curves(where: Path = OUT / "curves") -> dict[tuple[str, float, int], list[dict]]:
    out = {}
    for path in sorted(where.glob("*.jsonl")):
        task, alpha, seed = path.stem.split("_")
        out[(task, float(alpha[1:]), int(seed[1:]))] = [json.loads(x) for x in open(path)]
    return out


def all_curves() -> dict[str, dict[tuple[str, float, int], list[dict]]]:
    """Every feature set's curves (``SETS``)."""
    return {name: curves(where) for name, where in SETS.items()}


def plateau_step(rows: list[dict], ref: dict | None = None) -> int:
    """The first evaluated step whose val_true reward is not below the 95% CI of ``ref``
    (by default the run's best evaluation): from there on, training longer cannot give
    the skyline (the checkpoint chosen on val_true) a better choice beyond that CI. The
    best is the default reference rather than the last evaluation, which PPO's late dips
    and collapses make a poor one (see the card); ``ref=rows[-1]`` is the issue's rule."""
    ref = ref or max(rows, key=lambda r: r[KEYS[1]])
    lo = ref[KEYS[1]] - ref[KEYS[2]]
    return next(r["global_step"] for r in rows if r[KEYS[1]] >= lo)


def full_length(rows: list[dict]) -> bool:
    """Whether a curve ran to the benchmark's 1.5M steps."""
    return rows[-1]["global_step"] >= FULL


def budget(data: dict) -> int:
    """The suite's budget: the largest step, over the curves run to 1.5M, at which a curve
    first comes within the CI of its 1.5M value (issue 22's rule)."""
    return max(plateau_step(rows, rows[-1]) for rows in data.values() if full_length(rows))


def gap_at_budget(rows: list[dict], steps: int) -> tuple[float, float, dict]:
    """What stopping at ``steps`` costs a curve: ``(gap, best up to steps, best row)``, the
    gap between its best evaluation overall and its best up to ``steps`` (the checkpoint
    the val_true choice can keep)."""
    best = max(rows, key=lambda r: r[KEYS[1]])
    early = max(r[KEYS[1]] for r in rows if r["global_step"] <= steps)
    return best[KEYS[1]] - early, early, best


def table(data: dict) -> str:
    lines = ["| task | α | seed | steps run | val_true reward at 41k / 205k / 410k / 819k / "
             "last | last ± 95% CI | best (step) | expert frac (last) | plateau vs best | "
             "plateau vs 1.5M |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (task, alpha, seed), rows in sorted(data.items()):
        at = {r["global_step"]: r[KEYS[1]] for r in rows}
        picks = [at.get(s) for s in (40960, 204800, 409600, 819200)]
        shown = " / ".join("-" if v is None else f"{v:.3f}" for v in picks)
        last = rows[-1]
        best = max(rows, key=lambda r: r[KEYS[1]])
        frac = f"{last[KEYS[3]]:.3f}" if KEYS[3] in last else "-"
        vs_last = f"{plateau_step(rows, last):,}" if full_length(rows) else "-"
        lines.append(f"| {task} | {alpha:g} | {seed} | {last['global_step']:,} | {shown} / "
                     f"{last[KEYS[1]]:.3f} | {last[KEYS[1]]:.3f} ± {last[KEYS[2]]:.3f} | "
                     f"{best[KEYS[1]]:.3f} ({best['global_step']:,}) | {frac} | "
                     f"{plateau_step(rows):,} | {vs_last} |")
    return "\n".join(lines)


def plot(data: dict, budget: int, feature_set: str = BUDGET_SET) -> Path:
    """val_true reward (± 95% CI, top row) and expert fraction (bottom row) per task; one
    colour per α, solid seed 0, dashed seed 1; the budget marked. ``curves.png`` for
    obs_hidden_dist, ``curves_<set>.png`` for another set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({k[0] for k in data})
    alphas = sorted({k[1] for k in data})
    colours = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 7.5), squeeze=False,
                             sharex="col")
    for col, task in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        for (t, alpha, seed), rows in sorted(data.items()):
            if t == task:
                style = {"color": colours(alphas.index(alpha) / max(1, len(alphas) - 1)),
                         "ls": "-" if seed == 0 else "--"}
                _curve(top, bottom, rows, f"α={alpha:g} seed {seed}", style)
        for ax in (top, bottom):
            ax.axvline(budget, color="k", ls=":", lw=1.5, label=f"budget {budget:,}")
            ax.grid(alpha=0.3)
        top.set_title(f"{task}: skyline ({feature_set}) val_true reward")
        bottom.set_title(f"{task}: expert fraction on val_true")
        bottom.set_xlabel("coordinator env steps")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path = OUT / ("curves.png" if feature_set == BUDGET_SET else f"curves_{feature_set}.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _curve(top, bottom, rows: list[dict], label: str, style: dict) -> None:
    x = [r["global_step"] for r in rows]
    y = [r[KEYS[1]] for r in rows]
    ci = [r[KEYS[2]] for r in rows]
    top.plot(x, y, marker="o", ms=2, lw=1.2, label=label, **style)
    top.fill_between(x, [a - c for a, c in zip(y, ci, strict=True)],
                     [a + c for a, c in zip(y, ci, strict=True)], alpha=0.12,
                     color=style["color"])
    frac = [(r["global_step"], r[KEYS[3]]) for r in rows if KEYS[3] in r]
    if frac:  # the earliest curves predate the logged expert fraction
        bottom.plot(*zip(*frac, strict=True), marker="o", ms=2, lw=1.2, **style)


#: the steps the before/after comparison reads (every curve is evaluated at each)
COMPARE_AT = (204_800, 409_600, 819_200, 1_228_800, FULL)


def compare(before: dict, after: dict) -> str:
    """Markdown: val_true reward before and after at the same steps, on every curve run to
    1.5M in both, and the mean difference per step (after - before)."""
    keys = sorted(k for k in after if k in before and full_length(after[k])
                  and full_length(before[k]))
    head = " | ".join(f"{s:,}" for s in COMPARE_AT)
    lines = [f"| task | α | seed | {head} | best |", "|" + " --- |" * (len(COMPARE_AT) + 4)]
    diffs = [[] for _ in (*COMPARE_AT, 'best')]
    for key in keys:
        at = [{r["global_step"]: r[KEYS[1]] for r in rows} for rows in (before[key], after[key])]
        cells = []
        for i, step in enumerate(COMPARE_AT):
            diffs[i].append(at[1][step] - at[0][step])
            cells.append(f"{at[0][step]:.3f} → {at[1][step]:.3f}")
        best = [max(a.values()) for a in at]
        lines.append(f"| {key[0]} | {key[1]:g} | {key[2]} | {' | '.join(cells)} | "
                     f"{best[0]:.3f} → {best[1]:.3f} |")
        diffs[-1].append(best[1] - best[0])
    # mean and median: one collapse (reward 0 or below) swings a mean by more than the
    # differences the comparison is after
    both = " | ".join(f"{statistics.mean(d):+.3f} ({statistics.median(d):+.3f})" for d in diffs)
    lines.append(f"| after - before, mean (median) over {len(keys)} curves | | | {both} |")
    return "\n".join(lines)


def sets_at_budget(sets: dict[str, dict], steps: int) -> str:
    """Markdown: per task, α and seed, each set's best val_true reward up to ``steps`` (what
    the skyline's val_true choice keeps at the budget), on its curves run to 1.5M."""
    names = list(sets)
    keys = sorted(k for k in set.union(*(set(data) for data in sets.values()))
                  if any(k in data and full_length(data[k]) for data in sets.values()))
    lines = [f"| task | α | seed | {' | '.join(names)} |", "|" + " --- |" * (len(names) + 3)]
    for key in keys:
        cells = []
        for name in names:
            rows = [r for r in sets[name].get(key, []) if r["global_step"] <= steps]
            if not rows or not full_length(sets[name][key]):
                cells.append("-")  # not run (to 1.5M) for this set
                continue
            best = max(rows, key=lambda r: r[KEYS[1]])
            cells.append(f"{best[KEYS[1]]:.3f} ± {best[KEYS[2]]:.3f}")
        lines.append(f"| {key[0]} | {key[1]:g} | {key[2]} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--copy", type=Path, help="run dirs RUNS/<task>/a<alpha>/s<seed> to copy")
    p.add_argument("--set", default=BUDGET_SET, choices=sorted(SETS),
                   help="the feature set the --copy runs trained")
    p.add_argument("--copy-sweep", type=Path, help="a yrc_minigrid sweep dir: its skyline "
                   "jobs' curves (every alpha), where the card has none yet")
    p.add_argument("--compare", type=Path, help="a folder of earlier curves: print them "
                   "against the card's at the same steps")
    args = p.parse_args()
    if args.copy:
        copy_curves(args.copy, args.set)
    if args.copy_sweep:
        copy_sweep_curves(args.copy_sweep)
    sets = all_curves()
    if args.compare:
        print(compare(curves(args.compare), sets[BUDGET_SET]), end="\n\n")
    steps = budget(sets[BUDGET_SET])
    for name, data in sets.items():
        if not data:
            continue
        print(f"## {name}\n\n{table(data)}\n")
        _report_budget(data, steps, name)
        print(f"plot: {plot(data, steps, name)}\n")
    print(f"the suite's budget ({BUDGET_SET}'s curves, the issue's rule): {steps:,}\n")
    print(sets_at_budget(sets, steps))


def _report_budget(data: dict, steps: int, name: str) -> None:
    """A set's own budget by the rule, the stricter rule's, and what stopping at ``steps``
    (the suite's budget) costs each of its curves run to 1.5M."""
    full = {k: rows for k, rows in data.items() if full_length(rows)}
    if not full:
        return
    print(f"{name}: budget (the issue's rule, {len(full)} curves run to 1.5M) "
          f"{budget(data):,}; the stricter rule (vs each curve's best): "
          f"{max(map(plateau_step, full.values())):,}")
    for (task, alpha, seed), rows in sorted(full.items()):
        gap, early, best = gap_at_budget(rows, steps)
        inside = "within" if gap <= best[KEYS[2]] else "OUTSIDE"
        print(f"{task} α={alpha:g} seed {seed}: best up to the budget {early:.3f}, overall "
              f"{best[KEYS[1]]:.3f} ± {best[KEYS[2]]:.3f} at {best['global_step']:,}: gap "
              f"{gap:.3f} ({inside} its CI)")


if __name__ == "__main__":
    main()

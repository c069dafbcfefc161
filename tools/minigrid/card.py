"""Tables and learning curves for the MiniGrid model card (``checkpoints/minigrid/README.md``).

Reads ``checkpoints/minigrid/evaluations.json`` (written by ``ship.py``) and the training
runs' ``metrics.jsonl`` (copied to ``checkpoints/minigrid/training/``), writes
``checkpoints/minigrid/curves.png`` and prints the markdown tables of the card.

    .venv/bin/python tools/minigrid/card.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repo root (this file: tools/minigrid/card.py)
CKPT = ROOT / "checkpoints" / "minigrid"  # the shipped agents and their card
RUNS = ROOT / "runs" / "minigrid_agents"
TASKS = ("DistShift", "DoorKey", "LavaGap")
SPLITS = ("train", "val_sim", "val_true", "test")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def copy_metrics() -> None:
    out = CKPT / "training"
    out.mkdir(exist_ok=True)
    for task in TASKS:
        for role in ("novice", "expert"):
            src = RUNS / task / role / "metrics.jsonl"
            if src.is_file():
                shutil.copyfile(src, out / f"{task}_{role}_metrics.jsonl")


def curves() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, task in zip(axes, TASKS, strict=True):
        offset = 0
        for role, style in (("novice", "-"), ("expert", "--")):
            path = CKPT / "training" / f"{task}_{role}_metrics.jsonl"
            if not path.is_file():
                continue
            rows = _rows(path)
            for split, color in (("val_sim", "tab:blue"), ("val_true", "tab:red")):
                pts = [(r["global_step"] + offset, r[f"eval/{split}/reward_mean"]) for r in rows
                       if f"eval/{split}/reward_mean" in r]
                if pts:
                    x, y = zip(*pts, strict=True)
                    ax.plot(x, y, style, color=color, label=f"{role} {split}")
            offset += rows[-1]["global_step"]
        ax.set_title(task)
        ax.set_xlabel("env steps (expert run continues the novice's)")
        ax.set_ylim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean reward (128 episodes)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(CKPT / "curves.png", dpi=110)


def tables() -> None:
    data = json.loads((CKPT / "evaluations.json").read_text())
    print("| task | agent | " + " | ".join(SPLITS) + " | ep len (test) |")
    print("| --- | --- | " + " | ".join("---" for _ in SPLITS) + " | --- |")
    for task in TASKS:
        if task not in data:
            continue
        for role in ("sim_novice", "novice", "expert"):
            res = data[task][role]
            cells = [f"{res[s]['reward_mean']:.3f} ± {res[s]['reward_ci95']:.3f}" for s in SPLITS]
            print(f"| {task} | {role} | " + " | ".join(cells)
                  + f" | {res['test']['episode_length_mean']:.1f} |")
    print()
    for task in TASKS:
        if task in data:
            sel = data[task]["sim_novice_selection"]
            print(f"- {task}: BP {data[task]['expert']['bp']:.5f}; sim_novice = step "
                  f"{sel['chosen_step']:,} (val_sim {sel['chosen_val_sim']:.3f}; target: the "
                  f"novice's val_true {sel['target_val_true_of_novice']:.3f})")


if __name__ == "__main__":
    copy_metrics()
    curves()
    tables()

"""``duo serve --summarize RUN_DIR``: the served log's table per status and its learning curve.

The learning curve has one point per model version, in the order the versions first
appear in the log: the return (mean, normal 95% CI) and expert fraction of the complete
(``ended``, ``truncated``) episodes those weights started.  An episode belongs to the version
of its first step's choice (the record's ``model_version`` for logs without per-step
versions).  It is printed as a table and drawn into ``learning_curve.png`` in the run dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from duo_cli.errors import DuoError
from duo_cli.evaluation.statistics import mean_ci95
from duo_cli.serve.store import COMPLETE, StepColumns, read_episodes, summarize_log
from duo_cli.tables import fmt, fmt_ci, print_eval_table

PNG_NAME = "learning_curve.png"


def episode_version(record: dict[str, Any]) -> str:
    """The model version that started the episode."""
    first = next((v for v in StepColumns.from_dict(record.get("steps") or {}).model_version
                  if v is not None), None)
    return str(first if first is not None else record.get("model_version", "?"))


def learning_curve(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model version: episodes, return (mean, CI), expert fraction, length."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_version.setdefault(episode_version(r), []).append(r)
    rows = []
    for version, recs in by_version.items():
        done = [r for r in recs if r["status"] in COMPLETE]
        ret = np.array([float(r["return"]) for r in done])
        steps = sum(int(r["length"]) for r in done)
        mean, ci = mean_ci95(ret)
        rows.append({
            "model_version": version, "episodes": len(done), "incomplete": len(recs) - len(done),
            "return_mean": mean, "return_ci95": ci,
            "base_return_mean": mean_ci95(np.array([float(r["base_return"]) for r in done]))[0],
            "expert_frac": sum(int(r["expert_steps"]) for r in done) / steps if steps else
            float("nan"),
            "length_mean": steps / len(done) if done else float("nan"),
        })
    return rows


def print_curve(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("#", "model version", "episodes", "return ± 95% CI", "base return",
                "expert frac", "ep len mean", "incomplete"):
        table.add_column(col, justify="left" if col == "model version" else "right")
    for i, r in enumerate(rows):
        table.add_row(str(i), r["model_version"], str(r["episodes"]),
                      fmt_ci(r["return_mean"], r["return_ci95"]), fmt(r["base_return_mean"]),
                      fmt(r["expert_frac"]), fmt(r["length_mean"], 1), str(r["incomplete"]))
    console.print(table)


def plot_curve(rows: list[dict[str, Any]], path: Path) -> Path:
    """Return (95% CI band) and expert fraction per model version, written atomically."""
    x = np.arange(len(rows))
    mean = np.array([r["return_mean"] for r in rows], dtype=np.float64)
    ci = np.array([r["return_ci95"] for r in rows], dtype=np.float64)
    frac = np.array([r["expert_frac"] for r in rows], dtype=np.float64)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_r, ax_e = fig.subplots(1, 2)
    ax_r.errorbar(x, mean, yerr=np.nan_to_num(ci), marker="o", capsize=3)
    ax_r.set(title="return per model version (95% CI)", xlabel="model version", ylabel="return")
    ax_e.plot(x, frac, marker="o", color="tab:orange")
    ax_e.set(title="expert fraction per model version", xlabel="model version",
             ylabel="expert steps / steps", ylim=(-0.02, 1.02))
    labels = [str(r["model_version"])[:12] for r in rows]
    for ax in (ax_r, ax_e):
        ax.set_xticks(x, labels, rotation=30 if len(rows) > 4 else 0, ha="right"
                      if len(rows) > 4 else "center")
        ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def summarize_run(path: str, console: Console) -> Path | None:
    """Print the log's tables; a run dir also gets :data:`PNG_NAME`. Returns the PNG's path."""
    src = Path(path)
    try:
        records = read_episodes(src)
    except (OSError, ValueError) as exc:
        raise DuoError(f"cannot read episode log {path}: {exc}") from None
    print_eval_table(console, summarize_log(records), title=f"served episodes: {path}")
    if not records:
        return None
    rows = learning_curve(records)
    print_curve(console, rows, "learning curve: complete episodes per model version")
    if not src.is_dir():
        return None
    png = plot_curve(rows, src / PNG_NAME)
    console.print(f"learning curve: {png}", soft_wrap=True)
    return png

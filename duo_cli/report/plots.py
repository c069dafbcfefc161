"""PNG plots of a sweep summary: per task (reward vs alpha with CIs, expert fraction vs
alpha, reward vs expert fraction) and one figure across tasks (ratio to the skyline, or
to the task's reference, per task and method, with 95% CIs)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from duo_cli.summaries import SKYLINE

#: 20 colours: matplotlib's tab20, its ten dark shades (distinct hues) first, then the light ones
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
#: 20 markers: the 15 filled ones, then five drawn with lines
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h", "d", "8", "H",
           "x", "+", "1", "2", "3")


def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Per method its ``(colour, marker)``, by its rank among the sorted names: the first
    20 methods each get their own colour and their own marker, and no two of up to 400
    share both.  One map for every plot of a summary (:func:`summary_styles`) keeps a
    method's style across tasks and plots."""
    n = len(COLOURS)
    return {m: (COLOURS[i % n], MARKERS[(i + i // n) % n])
            for i, m in enumerate(sorted(set(methods)))}


def summary_styles(summary: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """:func:`method_styles` of every method of every task of ``summary``."""
    return method_styles(m for r in summary["tasks"].values() for m in r["methods"])


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path


def _nan(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else np.nan


def plot_task(path: Path, name: str, result: Mapping[str, Any],
              styles: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Reward (95% CI), expert fraction and reward vs expert fraction over alpha; each
    method in its own colour and marker (``styles``, default :func:`method_styles` of the
    task's methods), the skyline dashed, the legend outside the axes on the right."""
    methods = result["methods"]
    styles = styles or method_styles(methods)
    fig = _figure(18.5, max(4.3, 0.27 * len(methods) + 1.3))
    ax_r, ax_e, ax_x = fig.subplots(1, 3)
    for method, m in methods.items():
        pts = m["points"]
        a = np.array([p["alpha"] for p in pts])
        r = np.array([_nan(p["reward_mean"]) for p in pts])
        lo = np.array([_nan((p["reward_ci95"] or [np.nan])[0]) for p in pts])
        hi = np.array([_nan((p["reward_ci95"] or [np.nan, np.nan])[1]) for p in pts])
        e = np.array([_nan(p["expert_frac"]) for p in pts])
        colour, marker = styles[method]
        kw = {"ls": "--" if m["role"] == SKYLINE else "-", "color": colour, "marker": marker,
              "ms": 5}
        ax_r.plot(a, r, label=f"{method} (AUC {m['auc']:.3g})", **kw)
        ax_r.fill_between(a, lo, hi, alpha=0.12, color=colour)
        ax_e.plot(a, e, **kw)
        ax_x.plot(e, r, **kw)
    ax_r.set(title=f"{name}: test reward (95% CI)", xlabel="alpha (expert query cost weight)",
             ylabel="test reward")
    ax_e.set(title="expert fraction", xlabel="alpha", ylabel="fraction of steps by the expert",
             ylim=(-0.03, 1.03))
    ax_x.set(title="reward vs expert fraction (one point per alpha)",
             xlabel="fraction of steps by the expert", ylabel="test reward", xlim=(-0.03, 1.03))
    if methods:
        fig.legend(loc="outside right upper", fontsize=8, title="method (skyline dashed)",
                   title_fontsize=8)
    for ax in (ax_r, ax_e, ax_x):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ratios(path: Path, summary: Mapping[str, Any],
                styles: Mapping[str, tuple[str, str]] | None = None) -> Path | None:
    """Grouped bars: per task, each method's AUC over the task's reference AUC (the plain
    AUC for a task without a positive reference); each method in its colour of ``styles``
    (default :func:`summary_styles`), the legend outside on the right."""
    styles = styles or summary_styles(summary)
    refs = {t: r or {"method": "none: AUC", "auc": 1.0}
            for t, r in summary["aggregate"]["references"].items()}
    tasks = list(refs)
    if not tasks:
        return None
    skylines = {m for t in tasks for m, v in summary["tasks"][t]["methods"].items()
                if v["role"] == SKYLINE}
    methods = sorted({m for t in tasks for m in summary["tasks"][t]["methods"]} - skylines)
    if not methods:
        return None
    fig = _figure(max(6.0, 1.2 * len(tasks) * max(1, len(methods)) / 3 + 3) + 3,
                  max(4.5, 0.24 * len(methods) + 1.2))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(tasks))
    for i, m in enumerate(methods):
        vals, err = [], [[], []]
        for t in tasks:
            ref = refs[t]["auc"]
            v = summary["tasks"][t]["methods"].get(m)
            val = np.nan if v is None else v["auc"] / ref
            ci = None if v is None or not v["auc_ci95"] else [c / ref for c in v["auc_ci95"]]
            if (v is not None and refs[t]["method"] == summary["tasks"][t]["skyline"]
                    and v.get("skyline_ratio_ci95")):
                val, ci = v["skyline_ratio"], v["skyline_ratio_ci95"]
            vals.append(val)
            err[0].append(0 if ci is None else max(val - ci[0], 0))
            err[1].append(0 if ci is None else max(ci[1] - val, 0))
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
               label=m, color=styles[m][0])
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{t}\n(/{refs[t]['method']})" for t in tasks])
    ax.set_ylabel("AUC / reference AUC (95% CI)")
    ax.set_title("ratio to the skyline (or to the best single agent) per task and method")
    fig.legend(loc="outside right upper", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


#: the three bars per task of :func:`plot_skyline_ratios`
RATIO_BARS = (("val_sim", "best non-RL, YRC-0 validator"),
              ("val_true", "best non-RL, oracle validator"),
              ("oracle_proposer", "oracle proposer (skyline's PPO, YRC-0)"))


def plot_skyline_ratios(path: Path, summary: Mapping[str, Any]) -> Path | None:
    """The benchmark's figure: per task three bars (best non-RL AUC / skyline AUC under the
    simulated and the oracle validator, oracle proposer / skyline) with 95% CIs."""
    tasks = [t for t, r in summary["tasks"].items() if r.get("skyline_ratios")]
    if not tasks:
        return None
    fig = _figure(max(6.0, 1.6 * len(tasks) + 3), 4.5)
    ax = fig.subplots()
    width = 0.8 / len(RATIO_BARS)
    x = np.arange(len(tasks))
    for i, (key, label) in enumerate(RATIO_BARS):
        vals, err = [], [[], []]
        for t in tasks:
            r = summary["tasks"][t]["skyline_ratios"].get(key) or {}
            val, ci = _nan(r.get("ratio")), r.get("ratio_ci95")
            vals.append(val)
            err[0].append(0 if not ci or not np.isfinite(val) else max(val - ci[0], 0))
            err[1].append(0 if not ci or not np.isfinite(val) else max(ci[1] - val, 0))
        ax.bar(x + (i - (len(RATIO_BARS) - 1) / 2) * width, vals, width, yerr=err, capsize=3,
               label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{t}\n(/{summary['tasks'][t]['skyline_ratios']['skyline']})"
                      for t in tasks])
    ax.set_ylabel("AUC / skyline AUC (95% CI)")
    ax.set_title("ratio to the skyline: validator choice vs proposer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_all(sweep_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """``plot_<task>.png`` per task, ``plot_summary.png`` and ``plot_skyline_ratios.png``
    (one method style map for all); returns the paths written."""
    styles = summary_styles(summary)
    out = [plot_task(sweep_dir / f"plot_{safe(name)}.png", name, result, styles)
           for name, result in summary["tasks"].items()]
    ratios = plot_ratios(sweep_dir / "plot_summary.png", summary, styles)
    sky = plot_skyline_ratios(sweep_dir / "plot_skyline_ratios.png", summary)
    return out + [p for p in (ratios, sky) if p]

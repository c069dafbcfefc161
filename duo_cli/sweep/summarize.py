"""Summarise a sweep dir from its job dirs on disk (so remote launchers work too):
``sweep_summary.json``, ``sweep_summary.csv``, ``report.md``, PNG plots and the
console tables.  ``duo sweep --summarize DIR`` re-renders them."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from duo_cli import report
from duo_cli.config import ConfigError
from duo_cli.report import plots, stats, tables
from duo_cli.report.markdown import write_report
from duo_cli.rundir import write_json
from duo_cli.sweep.jobs import Job, JobsFailed, _label, _rel, collect_jobs, swept_keys, varying_keys

REPORT_FILES = ("sweep_summary.json", "sweep_summary.csv", "report.md")


def build_summary(sweep_dir: Path, jobs: Sequence[Job], n_boot: int = stats.N_BOOT,
                  seed: int = stats.BOOT_SEED) -> dict[str, Any]:
    """The content of ``sweep_summary.json``."""
    built = report.build([p for j in jobs for p in j.points], n_boot, seed)
    counts = {k: sum(j.status == k for j in jobs) for k in ("ok", "failed", "invalid",
                                                            "incomplete")}
    return {
        "sweep_dir": str(sweep_dir),
        "definitions": report.DEFINITIONS,
        "bootstrap": {"resamples": n_boot, "numpy_seed": seed, "interval": "percentile",
                      "level": stats.LEVEL},
        "jobs": {"total": len(jobs), **counts},
        "tasks": built["tasks"],
        "aggregate": built["aggregate"],
        "wins": built["wins"],
        "notes": built["notes"],
        "failed_jobs": [
            {"job": j.num, "dir": _rel(j.dir, sweep_dir), "status": j.status,
             "overrides": j.overrides, "error": j.error}
            for j in jobs if j.status != "ok"
        ],
    }


CSV_FIELDS = ("task", "beta", "method", "alpha", "reward_mean", "reward_ci95_lo",
              "reward_ci95_hi", "expert_frac", "base_reward_mean", "seeds", "episodes", "auc",
              "auc_ci95_lo", "auc_ci95_hi", "auc_area", "skyline_ratio")


def write_csv(path: Path, summary: Mapping[str, Any]) -> None:
    """One row per task / method / alpha."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for group in summary["tasks"].values():
            for method, m in group["methods"].items():
                auc_ci = m["auc_ci95"] or ["", ""]
                for p in m["points"]:
                    r_ci = p["reward_ci95"] or ["", ""]
                    writer.writerow({
                        "task": group["task"], "beta": group["beta"], "method": method,
                        "alpha": p["alpha"], "reward_mean": p["reward_mean"],
                        "reward_ci95_lo": r_ci[0], "reward_ci95_hi": r_ci[1],
                        "expert_frac": p["expert_frac"], "base_reward_mean": p["base_reward_mean"],
                        "seeds": " ".join(str(s) for s in p["seeds"]),
                        "episodes": p["episodes"], "auc": m["auc"], "auc_ci95_lo": auc_ci[0],
                        "auc_ci95_hi": auc_ci[1], "auc_area": m["auc_area"],
                        "skyline_ratio": m.get("skyline_ratio", ""),
                    })
    tmp.replace(path)


def summarize(sweep_dir: Path, console, n_boot: int = stats.N_BOOT) -> dict[str, Any]:
    """Print the tables; write ``sweep_summary.{json,csv}``, ``report.md`` and the plots."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(
            f"no Hydra jobs in {sweep_dir} (expected job dirs holding .hydra/); "
            "is it a duo sweep dir?"
        )
    summary = build_summary(sweep_dir, jobs, n_boot)
    write_json(sweep_dir / "sweep_summary.json", summary)
    write_csv(sweep_dir / "sweep_summary.csv", summary)
    written = plots.plot_all(sweep_dir, summary)
    by_name = {f"plot_{plots.safe(n)}.png": n for n in summary["tasks"]}
    links = {by_name.get(p.name, p.stem.removeprefix("plot_")): p.name for p in written}
    write_report(sweep_dir / "report.md", summary, links)
    keys = swept_keys(sweep_dir)
    if keys is None:
        keys = varying_keys([j.overrides for j in jobs])
    tables.print_summary(console, summary, lambda overrides: _label(overrides, keys))
    console.print(f"wrote {', '.join([*REPORT_FILES, *(p.name for p in written)])}")
    path = sweep_dir / "report.md"
    if not path.is_absolute() or path.is_relative_to(Path.cwd()):
        path = Path(os.path.relpath(path))
    console.print(f"report: {path}", overflow="fold", highlight=False)
    return summary


def summarize_dir(path: str | os.PathLike, console) -> Path:
    """``duo sweep --summarize DIR``: re-render the summary of an existing sweep dir.

    :raises JobsFailed: (after writing the summary) when some jobs have no valid result.
    """
    sweep_dir = Path(path).expanduser()
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep dir {sweep_dir} does not exist")
    summary = summarize(sweep_dir, console)
    jobs = summary["jobs"]
    if jobs["ok"] < jobs["total"]:
        raise JobsFailed(f"{jobs['total'] - jobs['ok']} of {jobs['total']} job(s) in "
                         f"{sweep_dir} without a valid result (listed above)")
    return sweep_dir

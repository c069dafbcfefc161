"""Console tables of a sweep summary that fit the terminal (80 columns and up).

Wide dimensions (the alpha grid) are split into chunks of columns that fit; long
cells fold onto a second line.  Numbers are never cut (no ellipsis): every column
folds instead of truncating.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

CELL = 6  # widest number num() prints for |v| < 1000, e.g. "-0.954" or "-12.3"


def num(value: Any, signed: bool = False) -> str:
    """A number in at most 6 characters below 1000: 3 significant digits, fixed point."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    v = float(value)
    a = abs(v)
    text = (f"{v:.3g}" if a >= 1000 else f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10
            else f"{v:.2f}" if a >= 1 else f"{v:.3f}")
    return f"+{text}" if signed and v > 0 else text


def ci(lo_hi: Sequence[float] | None) -> str:
    return "-" if not lo_hi else f"[{num(lo_hi[0])}, {num(lo_hi[1])}]"


def half(lo_hi: Sequence[float] | None) -> str:
    return "" if not lo_hi else f"±{num((lo_hi[1] - lo_hi[0]) / 2)}"


def bound_warning(task: str, v: Mapping[str, Any]) -> str:
    """The sentence of one bound violation (:func:`duo_cli.report.yrc.bound_violations`)."""
    how = ("beyond its 95% CI" if v["beyond_ci"]
           else "with no CI to check it (per-episode rewards missing)")
    return (f"WARNING: the skyline is not an upper bound on {task}: {v['method']}'s AUC / "
            f"the skyline's ({v['skyline']}) = {num(v['ratio'])} {ci(v['ratio_ci95'])} "
            f"under the {v['validator_name']} ({v['validator']}): above 1 {how}.")


def single_layout_note(task: str) -> str:
    """The caveat of a task whose test levels are one layout, as its env declared."""
    return (f"Note: {task}'s test levels are a single layout (every seed is the same grid): "
            "its CIs cover only the agents' own randomness, not a level distribution.")


def warnings(summary: Mapping[str, Any]) -> list[str]:
    """Every bound violation of the sweep, one sentence each."""
    return [bound_warning(t, v) for t, r in summary["tasks"].items()
            for v in r.get("bound_violations") or []]


class _Titled(Table):
    """A table whose title and caption are printed as plain paragraphs around it (so
    they wrap at the console width, not at the table's)."""

    def __init__(self, title: str, caption: str | None) -> None:
        super().__init__(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        self.heading, self.note = title, caption


def _table(title: str, caption: str | None = None) -> _Titled:
    return _Titled(title, caption)


def _print(console: Console, table: _Titled) -> None:
    console.print(table.heading, style="bold", highlight=False, overflow="fold")
    console.print(table)
    if table.note:
        console.print(table.note, highlight=False, overflow="fold")
    console.print()


def _col(table: Table, name: str, right: bool = True) -> None:
    table.add_column(name, justify="right" if right else "left", overflow="fold")


def _ranked(result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return sorted(result["methods"].items(),
                  key=lambda kv: (-kv[1]["auc"] if math.isfinite(kv[1]["auc"]) else math.inf))


def _alpha_tables(console: Console, name: str, result: Mapping[str, Any], what: str,
                  cell) -> None:
    alphas = result["alphas"]
    ranked = _ranked(result)
    mw = max([len("method"), *(len(m) for m, _ in ranked)])
    per = max(1, (console.width - mw - 2) // (CELL + 2))
    for start in range(0, len(alphas), per):
        part = alphas[start:start + per]
        more = f" ({start // per + 1}/{math.ceil(len(alphas) / per)})" if len(alphas) > per else ""
        table = _table(f"{name}: {what} vs alpha{more}")
        _col(table, "method", right=False)
        for a in part:
            _col(table, f"α={a:g}")
        for m, v in ranked:
            by = {p["alpha"]: p for p in v["points"]}
            table.add_row(m, *[cell(by[a]) if a in by else "-" for a in part])
        _print(console, table)


def print_task(console: Console, name: str, result: Mapping[str, Any]) -> None:
    """Reward and expert fraction per alpha, the AUC table and the comparisons."""
    _alpha_tables(console, name, result, "test reward (mean, ±95% CI half-width)",
                  lambda p: f"{num(p['reward_mean'])}\n{half(p['reward_ci95'])}")
    _alpha_tables(console, name, result, "expert fraction",
                  lambda p: num(p["expert_frac"]))
    has_sky = any("skyline_ratio" in v for v in result["methods"].values())
    table = _table(
        f"{name}: AUC over alpha (mean reward over the alpha range; area = the "
        "benchmark's unnormalised trapezoid area)",
        f"* winner (ties: the paired 95% CI of the AUC difference to the best includes 0). "
        f"Best non-learned baseline: {result['best_baseline'] or '-'}")
    for col in ("method", "AUC [95% CI]", "area", *(["/ skyline [95% CI]"] if has_sky else [])):
        _col(table, col, right=col != "method")
    for m, v in _ranked(result):
        star = "*" if m in result["winners"] else ""
        row = [f"{m}{star}", f"{num(v['auc'])} {ci(v['auc_ci95'])}", num(v["auc_area"])]
        if has_sky:
            row.append(f"{num(v.get('skyline_ratio'))} {ci(v.get('skyline_ratio_ci95'))}"
                       if "skyline_ratio" in v else "-")
        table.add_row(*row)
    _print(console, table)
    _comparisons(console, name, result)
    if result.get("single_layout"):
        console.print(single_layout_note(name), style="yellow", highlight=False,
                      overflow="fold")
        console.print()


def _comparisons(console: Console, name: str, result: Mapping[str, Any]) -> None:
    roles = ("always_novice", "always_expert", "best_baseline")
    table = _table(f"{name}: paired comparisons (AUC difference [95% CI], "
                   "P = probability of a higher AUC on the same level)")
    _col(table, "method", right=False)
    for r in roles:
        _col(table, f"vs {r}")
    for m, v in _ranked(result):
        cells = []
        for r in roles:
            hit = [(b, c) for b, c in v.get("comparisons", {}).items() if r in c["roles"]]
            if not hit:
                cells.append("-")
                continue
            b, c = hit[0]
            who = f"{b}: " if r == "best_baseline" else ""
            cells.append(f"{who}{num(c['auc_diff'], signed=True)} {ci(c['auc_diff_ci95'])}\n"
                         f"P {num(c['prob_improvement'])}")
        table.add_row(m, *cells)
    _print(console, table)


def print_aggregate(console: Console, summary: Mapping[str, Any]) -> None:
    """IQM / mean of the normalised score across tasks, P(improvement) and wins."""
    agg = summary["aggregate"]
    wins = summary["wins"]
    refs = sorted({r["method"] for r in agg["references"].values() if r})
    table = _table(
        f"across {len(summary['tasks'])} tasks: normalised score (AUC / "
        f"{' or '.join(refs) or 'reference'} AUC), stratified bootstrap 95% CIs",
        "P>nov, P>exp: probability of improvement over always_novice / always_expert, "
        "averaged over tasks. wins: tasks won (ties included), sole wins in brackets; "
        "bench / paired: wins among the non-RL methods under the benchmark's rule (strictly "
        "the highest mean AUC) and under the paired one (CI to the runner-up excludes 0)")
    for col in ("method", "IQM [95% CI]", "mean [95% CI]", "P>nov", "P>exp", "wins", "bench",
                "paired"):
        _col(table, col, right=col != "method")
    names = sorted(set(agg["methods"]) | set(wins),
                   key=lambda m: -agg["methods"].get(m, {}).get("iqm", -math.inf))
    for m in names:
        a = agg["methods"].get(m, {})
        p = a.get("prob_improvement", {})
        w = wins.get(m)
        table.add_row(
            m, f"{num(a.get('iqm'))} {ci(a.get('iqm_ci95'))}",
            f"{num(a.get('mean'))} {ci(a.get('mean_ci95'))}",
            num(p.get("always_novice", {}).get("value")),
            num(p.get("always_expert", {}).get("value")),
            f"{w['wins']} ({w['sole_wins']})" if w else "-",
            *(str(w[k]["wins"]) if w and k in w else "-" for k in ("benchmark", "paired")))
    _print(console, table)


def print_skyline_ratios(console: Console, summary: Mapping[str, Any]) -> None:
    """Per task the three ratios to the skyline (the benchmark's figure) with 95% CIs."""
    rows = [(t, r["skyline_ratios"]) for t, r in summary["tasks"].items()
            if r.get("skyline_ratios")]
    if not rows:
        return
    table = _table("ratio to the skyline: best non-RL AUC / skyline AUC under the YRC-0 and "
                   "the oracle validator; oracle proposer / skyline (95% CIs)")
    for col in ("task", "YRC-0", "oracle val.", "proposer"):
        _col(table, col, right=col != "task")
    for t, r in rows:
        cells = []
        for k in ("val_sim", "val_true", "oracle_proposer"):
            v = r.get(k) or {}
            cells.append("-" if v.get("ratio") is None else
                         f"{num(v['ratio'])} {ci(v.get('ratio_ci95'))}\n{v['method']}")
        table.add_row(f"{t}\n/{r['skyline']}", *cells)
    _print(console, table)


def print_failed(console: Console, failed: Sequence[Mapping[str, Any]], label) -> None:
    if not failed:
        return
    table = _table(f"{len(failed)} job(s) without a result (details in <job dir>/error.txt)")
    for col in ("job", "status", "overrides", "error"):
        _col(table, col, right=col == "job")
    for f in failed:
        table.add_row(str(f["job"] if f["job"] is not None else f["dir"]), f["status"],
                      label(f["overrides"]), f["error"] or "-")
    _print(console, table)


def print_summary(console: Console, summary: Mapping[str, Any], label=" ".join) -> None:
    """Every table of a sweep summary; ``label`` shows a failed job's overrides."""
    for name, result in summary["tasks"].items():
        print_task(console, name, result)
    if summary["tasks"]:
        print_aggregate(console, summary)
        print_skyline_ratios(console, summary)
        for line in warnings(summary):
            console.print(line, style="bold red", highlight=False, overflow="fold")
    print_failed(console, summary["failed_jobs"], label)
    jobs = summary["jobs"]
    bad = {k: jobs[k] for k in ("failed", "invalid", "incomplete") if jobs.get(k)}
    n_warn = len(warnings(summary))
    console.print(f"{jobs['ok']}/{jobs['total']} job(s) finished"
                  + "".join(f", {n} {k}" for k, n in bad.items())
                  + (f"; {n_warn} WARNING(s): the skyline is not an upper bound (above)"
                     if n_warn else ""))

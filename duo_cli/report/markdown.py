"""``report.md``: the sweep's tables (full CIs, no width limit), definitions and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from duo_cli.report.tables import bound_warning, ci, num, single_layout_note, warnings
from duo_cli.summaries import SKYLINE


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _kind(v: Mapping[str, Any]) -> str:
    """What the method is, as its jobs declared (``traits``): skyline, learned or non-RL."""
    return "skyline" if v["role"] == SKYLINE else "learned" if v["learned"] else "non-RL"


def _task(name: str, r: Mapping[str, Any], plot: str | None) -> list[str]:
    ranked = sorted(r["methods"].items(), key=lambda kv: -kv[1]["auc"])
    alphas = r["alphas"]
    out = [f"## {name}", "", *_warnings([bound_warning(name, v)
                                         for v in r.get("bound_violations") or []])]
    if r.get("single_layout"):
        out += [f"> {single_layout_note(name)}", ""]
    rows = []
    for m, v in ranked:
        by = {p["alpha"]: p for p in v["points"]}
        rows.append([m, *(f"{num(by[a]['reward_mean'])} {ci(by[a]['reward_ci95'])} "
                          f"(exp {num(by[a]['expert_frac'])})" if a in by else "-"
                          for a in alphas)])
    out += ["Test reward [95% CI] (expert fraction) per alpha:", ""]
    out += _table(["method", *(f"α={a:g}" for a in alphas)], rows)
    has_sky = any("skyline_ratio" in v for v in r["methods"].values())
    rows = []
    for m, v in ranked:
        row = [m + (" **(winner)**" if m in r["winners"] else ""), _kind(v),
               f"{num(v['auc'])} {ci(v['auc_ci95'])}",
               f"{num(v['auc_area'])} {ci(v['auc_area_ci95'])}",
               " ".join(map(str, v["seeds"])) or "-", str(v["episodes_per_seed"])]
        if has_sky:
            row.append(f"{num(v.get('skyline_ratio'))} {ci(v.get('skyline_ratio_ci95'))}")
        rows.append(row)
    out += _table(["method", "kind", "AUC [95% CI]", "area [95% CI]", "seeds", "levels/seed",
                   *(["AUC / skyline [95% CI]"] if has_sky else [])], rows)
    rows = []
    for m, v in ranked:
        for b, c in v.get("comparisons", {}).items():
            rows.append([m, f"{b} ({', '.join(c['roles'])})",
                         f"{num(c['auc_diff'], signed=True)} {ci(c['auc_diff_ci95'])}",
                         f"{num(c['prob_improvement'])} {ci(c['prob_improvement_ci95'])}"])
    out += ["Paired comparisons:", ""]
    out += _table(["method", "vs", "AUC difference [95% CI]", "P(improvement) [95% CI]"], rows)
    out += [f"Winner(s): {', '.join(r['winners']) or '-'}; best non-learned baseline: "
            f"{r['best_baseline'] or '-'}.", ""]
    out += _validators(ranked)
    rw = r.get("rule_winners") or {}
    if rw.get("top"):
        out += [f"Among the non-RL methods: top {rw['top']}, runner-up {rw['runner_up'] or '-'} "
                f"(AUC difference {num(rw['auc_diff'], signed=True)} {ci(rw['auc_diff_ci95'])})"
                f"; winner under the benchmark's rule: {rw['benchmark'] or 'none (tie)'}, under "
                f"the paired rule: {rw['paired'] or 'none (CI includes 0)'}.", ""]
    notes = [f"{m}: {n}" for m, v in ranked for n in v.get("notes", [])]
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    if plot:
        out += [f"![{name}]({plot})", ""]
    return out


def _warnings(lines: Sequence[str]) -> list[str]:
    """Warnings as a quoted block, each line bold, so none can be overlooked."""
    out = [q for line in lines for q in (f"> **{line}**", ">")]
    return [*out[:-1], ""] if out else []


def _validators(ranked: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    rows = []
    for m, v in ranked:
        val = v.get("validators") or {}
        if not all(k in val for k in ("val_sim", "val_true")):
            continue
        gap = val.get("gap") or {}
        fb = [k for k in ("val_sim", "val_true") if val[k].get("fallback")]
        rows.append([m, *(f"{num(val[k]['auc'])} {ci(val[k]['auc_ci95'])}"
                          for k in ("val_sim", "val_true")),
                     f"{num(gap.get('auc_diff'), signed=True)} {ci(gap.get('auc_diff_ci95'))}",
                     f"{num(gap.get('prob_improvement'))}",
                     ("= test: " + ", ".join(fb)) if fb else "-"])
    if not rows:
        return []
    return ["AUC of each validator's choice and the validator gap (val_true - val_sim, paired):",
            "", *_table(["method", "val_sim (YRC-0) [95% CI]", "val_true (oracle) [95% CI]",
                         "gap [95% CI]", "P(gap > 0)", "fallback"], rows)]


def _ratio_cell(r: Mapping[str, Any] | None) -> str:
    if not r or r.get("ratio") is None:
        return "-"
    return f"{num(r['ratio'])} {ci(r.get('ratio_ci95'))} ({r['method']})"


def _skyline_ratios(summary: Mapping[str, Any], plot: str | None) -> list[str]:
    rows = [[t, f"{r['skyline_ratios']['skyline']} ({num(r['skyline_ratios']['skyline_auc'])})",
             *(_ratio_cell(r["skyline_ratios"].get(k)) for k in
               ("val_sim", "val_true", "oracle_proposer"))]
            for t, r in summary["tasks"].items() if r.get("skyline_ratios")]
    if not rows:
        return []
    single = [t for t, r in summary["tasks"].items() if r.get("single_layout")]
    unbound = [t for t, r in summary["tasks"].items() if r.get("bound_violations")]
    out = ["## Ratio to the skyline", "",
           *([f"**The skyline is not an upper bound on {', '.join(unbound)}** (the warnings "
              "at the top).", ""] if unbound else []),
           "Best non-RL method's AUC / the skyline's AUC with each method chosen by the "
           "simulated validator (YRC-0) and by the oracle validator, and the oracle proposer "
           "(the skyline's coordinator chosen by the simulated validator) / the skyline; "
           "paired 95% CIs:", "",
           *_table(["task", "skyline (AUC)", "YRC-0 [95% CI] (method)",
                    "oracle validator [95% CI] (method)", "oracle proposer [95% CI]"], rows)]
    out += [f"- {single_layout_note(t)}" for t in single] + ([""] if single else [])
    if plot:
        out += [f"![ratios to the skyline]({plot})", ""]
    return out


def _aggregate(summary: Mapping[str, Any]) -> list[str]:
    agg, wins = summary["aggregate"], summary["wins"]
    refs = ", ".join(f"{t}: {r['method']} ({num(r['auc'])})" if r else f"{t}: none"
                     for t, r in agg["references"].items())
    rows = []
    for m in sorted(set(agg["methods"]) | set(wins)):
        a = agg["methods"].get(m, {})
        p = a.get("prob_improvement", {})
        w = wins.get(m, {"wins": 0, "sole_wins": 0, "tasks_won": []})
        rule = [(f"{w[k]['wins']} ({', '.join(w[k]['tasks']) or '-'})" if k in w else "-")
                for k in ("benchmark", "paired")]
        rows.append([m, f"{num(a.get('iqm'))} {ci(a.get('iqm_ci95'))}",
                     f"{num(a.get('mean'))} {ci(a.get('mean_ci95'))}",
                     *(f"{num(p[b]['value'])} {ci(p[b]['ci95'])}" if b in p else "-"
                       for b in ("always_novice", "always_expert")),
                     f"{w['wins']} ({w['sole_wins']} alone)",
                     ", ".join(w["tasks_won"]) or "-", *rule])
    return ["## Across tasks", "", f"References: {refs}.", "",
            "wins: tasks won with CI ties included; benchmark rule: strictly the highest mean "
            "AUC among the non-RL methods; paired rule: the highest with the paired 95% CI of "
            "its difference to the runner-up excluding 0 (tasks in brackets).", "",
            *_table(["method", "IQM [95% CI]", "mean [95% CI]", "P > always_novice",
                     "P > always_expert", "wins", "tasks won", "wins (benchmark rule)",
                     "wins (paired rule)"], rows)]


def write_report(path: Path, summary: Mapping[str, Any], plots: Mapping[str, str]) -> Path:
    """Write ``report.md`` atomically; ``plots`` maps a task (or ``"summary"``) to its PNG."""
    jobs = summary["jobs"]
    lines = ["# duo sweep report", "", f"Sweep dir: `{summary['sweep_dir']}`. Jobs: "
             + ", ".join(f"{n} {k}" for k, n in jobs.items()) + ".", "",
             *_warnings(warnings(summary)), "## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary["definitions"].items()] + [""]
    for name, r in summary["tasks"].items():
        lines += _task(name, r, plots.get(name))
    if summary["tasks"]:
        lines += _aggregate(summary)
        if "summary" in plots:
            lines += [f"![ratio to the reference per task]({plots['summary']})", ""]
        lines += _skyline_ratios(summary, plots.get("skyline_ratios"))
    if summary["failed_jobs"]:
        lines += ["## Jobs without a result", ""]
        lines += _table(["job", "status", "overrides", "error"], [
            [str(f["job"]), f["status"], " ".join(f["overrides"]), f["error"] or "-"]
            for f in summary["failed_jobs"]])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path

"""The benchmark's figures from hand-made job summaries: both validators and the validator
gap, the three ratios to the skyline, and wins under the benchmark's rule and ours."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from artifacts import write_sweep_dir
from rich.console import Console

from duo_cli import report, sweep
from duo_cli.report import stats
from duo_cli.report.records import SummaryError, read_points


def _test(rewards) -> dict:
    r = np.asarray(rewards, dtype=float)
    return {"reward_mean": float(r.mean()), "reward_ci95": 0.0, "expert_frac": 0.5,
            "base_reward_mean": float(r.mean()), "episodes": r.size, "rewards": r.tolist()}


def _job(task, method, by_alpha, learned=False, skyline=False):
    """An alpha-grid job summary; ``by_alpha``: ``{alpha: (test, val_sim, val_true)}``
    rewards (``None`` validators: an entry without ``validators``); ``learned`` and
    ``skyline``: its declared traits."""
    entries = []
    for alpha, (test, sim, true) in by_alpha.items():
        e = {"alpha": alpha, "beta": 0.0, "test": _test(test)}
        if sim is not None:
            e["validators"] = {"val_sim": {"index": 0, "selected": {}, "test": _test(sim)},
                               "val_true": {"index": 1, "selected": {}, "test": _test(true)}}
        entries.append(e)
    traits = {"learns": learned, "shares_rollouts": not learned,
              "role": "skyline" if skyline else "method"}
    return {"method": method, "task": task, "seed": 0, "traits": traits,
            "alphas": list(by_alpha), "beta": 0.0, "per_alpha": entries}


A0, A1 = [1, 1, 0, 0], [0, 0, 0, 0]       # val_sim's choice: per-level AUC .5 .5 0 0
B0, B1 = [1, 1, 1, 0], [1, 0, 1, 0]       # val_true's choice: per-level AUC 1 .5 1 0
SKY = [1, 1, 1, 1]                        # the skyline (its val_true choice): AUC 1
PROP0, PROP1 = [1, 1, 1, 1], [1, 1, 0, 1]  # oracle proposer: per-level 1 1 .5 1 -> .875


def _suite() -> list[dict]:
    return [
        _job("T", "ood_x", {0.0: (A0, A0, B0), 1.0: (A1, A1, B1)}),
        _job("T", "always_novice", {0.0: ([0] * 4, None, None), 1.0: ([0] * 4, None, None)}),
        _job("T", "random_half", {0.0: ([0, 1, 0, 1], None, None),
                                  1.0: ([0, 1, 0, 1], None, None)}),
        _job("T", "skyline_a", {0.0: (SKY, PROP0, SKY), 1.0: (SKY, PROP1, SKY)}, learned=True,
             skyline=True),
        _job("T", "skyline_b", {0.0: ([0, 1, 1, 0], PROP0, [0, 1, 1, 0]),
                                1.0: ([0, 1, 1, 0], PROP1, [0, 1, 1, 0])}, learned=True,
             skyline=True),
    ]




@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    sweep_dir = write_sweep_dir(tmp_path_factory.mktemp("yrc") / "sw", _suite())
    sweep.summarize_dir(sweep_dir, Console(file=io.StringIO(), width=100))
    out = json.loads((sweep_dir / "sweep_summary.json").read_text())
    out["_dir"] = str(sweep_dir)
    return out


def test_both_validators_and_the_gap_from_a_fake_suite(summary):
    ood = summary["tasks"]["T"]["methods"]["ood_x"]
    v = ood["validators"]
    # "the" result is the val_sim choice
    assert ood["auc"] == pytest.approx(0.25) == v["val_sim"]["auc"]
    assert v["val_true"]["auc"] == pytest.approx(0.625)
    assert not v["val_sim"]["fallback"] and not v["val_true"]["fallback"]
    gap = v["gap"]
    # the gap is the paired difference of the two choices on the same levels
    diff = np.array([[0.5, 0.0, 1.0, 0.0]])
    assert gap["paired"] and gap["auc_diff"] == pytest.approx(0.375)
    assert gap["auc_diff"] == pytest.approx(v["val_true"]["auc"] - v["val_sim"]["auc"])
    assert gap["auc_diff_ci95"] == pytest.approx(list(stats.bootstrap_ci(
        [diff], n_boot=stats.N_BOOT, seed=stats.BOOT_SEED)))
    assert gap["prob_improvement"] == pytest.approx(0.75)  # 1, 1/2 (tie), 1, 1/2
    lo, hi = v["val_true"]["auc_ci95"]
    assert lo <= 0.625 <= hi
    # a job without validators: both are its own result, marked as a fallback
    nov = summary["tasks"]["T"]["methods"]["always_novice"]["validators"]
    assert nov["val_sim"]["fallback"] and nov["val_true"]["fallback"]
    assert nov["gap"]["auc_diff"] == 0
    report_md = (Path(summary["_dir"]) / "report.md").read_text()
    assert "val_true (oracle)" in report_md and "+0.375" in report_md


def test_three_ratios_to_the_best_skyline_variant(summary):
    t = summary["tasks"]["T"]
    assert t["skyline"] == "skyline_a"  # AUC 1 beats skyline_b's 0.5
    r = t["skyline_ratios"]
    assert r["skyline"] == "skyline_a" and r["skyline_auc"] == pytest.approx(1.0)
    # YRC-0: best non-RL is random_half (0.5 > ood_x 0.25 > always_novice 0)
    assert r["val_sim"]["method"] == "random_half"
    assert r["val_sim"]["ratio"] == pytest.approx(0.5)
    # oracle validator: ood_x's val_true choice (0.625) beats random_half (0.5)
    assert r["val_true"]["method"] == "ood_x"
    assert r["val_true"]["ratio"] == pytest.approx(0.625)
    lv_true = np.array([[1.0, 0.5, 1.0, 0.0]])
    assert r["val_true"]["ratio_ci95"] == pytest.approx(list(stats.bootstrap_ci(
        [lv_true, np.ones((1, 4))], stats.ratio, n_boot=stats.N_BOOT, seed=stats.BOOT_SEED)))
    assert r["oracle_proposer"]["ratio"] == pytest.approx(0.875)
    assert r["oracle_proposer"]["method"] == "skyline_a (val_sim)"
    # per-method ratios are to the best variant too; skyline variants never win
    assert t["methods"]["ood_x"]["skyline_ratio"] == pytest.approx(0.25)
    assert t["winners"] and all(t["methods"][w]["role"] == "method" for w in t["winners"])
    sky = summary["tasks"]["T"]["methods"]["skyline_a"]["validators"]
    assert sky["val_sim"]["auc"] == pytest.approx(0.875)  # the proposer: YRC-0 choice
    assert (Path(summary["_dir"]) / "plot_skyline_ratios.png").stat().st_size > 1000
    md = (Path(summary["_dir"]) / "report.md").read_text()
    assert "## Ratio to the skyline" in md and "plot_skyline_ratios.png" in md
    assert "| skyline_a | skyline |" in md and "| ood_x **(winner)** | non-RL |" in md  # kinds


def test_wins_under_both_rules(summary):
    w = summary["wins"]
    # random_half has strictly the highest AUC but its paired CI to ood_x includes 0
    assert w["random_half"]["benchmark"] == {"wins": 1, "tasks": ["T"]}
    assert w["random_half"]["paired"] == {"wins": 0, "tasks": []}
    assert "skyline_a" not in w and "skyline_b" not in w  # role skyline: never counted
    rw = summary["tasks"]["T"]["rule_winners"]
    assert (rw["top"], rw["runner_up"], rw["benchmark"], rw["paired"]) == (
        "random_half", "ood_x", "random_half", None)
    assert rw["auc_diff"] == pytest.approx(0.25)


def _flat(task, method, rewards, learned=False):
    return _job(task, method, {0.0: (rewards, None, None), 1.0: (rewards, None, None)},
                learned)


def test_wins_rules_on_hand_made_tasks():
    ones, zeros = [1.0] * 32, [0.0] * 32
    half = [0.0, 1.0] * 16
    jobs = [
        # clear: logit beats every level -> a win under both rules
        _flat("clear", "logit", ones), _flat("clear", "always_novice", zeros),
        _flat("clear", "ppo", [2.0] * 32, learned=True),  # RL: not a contender
        # tie at the top: no win under either rule
        _flat("tie", "logit", half), _flat("tie", "always_novice", half),
        # close: highest by mean, paired CI includes 0 -> benchmark win only
        _flat("close", "logit", [1.0] * 17 + [0.0] * 15), _flat("close", "always_novice", half),
    ]
    built = report.build([p for j in jobs for p in read_points(j)], n_boot=500)
    w = built["wins"]
    assert w["logit"]["benchmark"] == {"wins": 2, "tasks": ["clear", "close"]}
    assert w["logit"]["paired"] == {"wins": 1, "tasks": ["clear"]}
    assert w["always_novice"]["benchmark"]["wins"] == 0
    assert "benchmark" not in w.get("ppo", {})
    assert built["tasks"]["tie"]["rule_winners"]["benchmark"] is None
    assert built["tasks"]["clear"]["rule_winners"]["auc_diff_ci95"] == [1.0, 1.0]
    assert built["tasks"]["clear"]["skyline_ratios"] is None  # no skyline


def test_bad_validator_entry_is_refused():
    job = _job("T", "ood_x", {0.0: (A0, A0, B0)})
    job["per_alpha"][0]["validators"]["val_true"]["test"] = {"rewards": [1]}
    with pytest.raises(SummaryError, match=r"per_alpha\[0\]\.validators\.val_true: missing key "
                                           "'reward_mean'"):
        read_points(job)

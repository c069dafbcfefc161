"""Sweep summaries from fake job results: AUC, paired comparisons, winners, skyline
ratios, the across-task aggregate, several seeds, per_alpha summaries and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from duo_cli import report
from duo_cli.report.records import SummaryError, read_points

ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TRAITS = {"learns": False, "shares_rollouts": True, "role": "method"}


def traits(learned=False, skyline=False):
    """A job's declared traits (what the report reads, never the method's name)."""
    return {"learns": learned, "shares_rollouts": not learned,
            "role": "skyline" if skyline else "method"}


def fake(task, method, alpha, seed, rewards, frac=0.0, beta=0.0, learned=False, skyline=False):
    r = np.asarray(rewards, dtype=float)
    return {"method": method, "task": task, "alpha": alpha, "beta": beta, "seed": seed,
            "traits": traits(learned, skyline), "train": {},
            "test": {"reward_mean": float(r.mean()), "reward_ci95": 0.0,
                     "base_reward_mean": float(r.mean()), "expert_frac": frac,
                     "episodes": r.size, "rewards": r.tolist(), "base_rewards": r.tolist()}}


def points(summaries):
    return [p for s in summaries for p in read_points(s)]


def test_always_novice_auc_ci_matches_its_per_alpha_ci():
    levels = np.random.default_rng(0).choice([0.0, 10.0], size=128)
    built = report.build(points(fake("coinrun", "always_novice", a, 0, levels)
                                for a in ALPHAS))
    m = built["tasks"]["coinrun"]["methods"]["always_novice"]
    assert m["paired"] and m["auc"] == pytest.approx(levels.mean())
    auc_half = (m["auc_ci95"][1] - m["auc_ci95"][0]) / 2
    for p in m["points"]:
        half = (p["reward_ci95"][1] - p["reward_ci95"][0]) / 2
        assert auc_half == pytest.approx(half, rel=0.2)
    assert m["auc_area"] == pytest.approx(m["auc"])  # alpha range 1


def _suite():
    rng = np.random.default_rng(1)
    nov = rng.choice([0.0, 1.0], size=64)
    exp = np.ones(64)
    runs = []
    for task, shift in (("A", 0.0), ("B", 0.5)):
        for a in (0.0, 1.0):
            runs += [fake(task, "always_novice", a, 0, nov),
                     fake(task, "always_expert", a, 0, exp - a * 0.8, 1.0),
                     fake(task, "logit", a, 0, np.maximum(nov, exp - a) + shift, 0.5),
                     fake(task, "logit_twin", a, 0, np.maximum(nov, exp - a) + shift, 0.5),
                     fake(task, "skyline", a, 0, exp + 1, 0.5, learned=True, skyline=True)]
    return runs


def test_comparisons_winners_skyline_and_aggregate():
    built = report.build(points(_suite()))
    a = built["tasks"]["A"]
    logit = a["methods"]["logit"]
    # logit >= novice on every level -> positive difference, P(improvement) > 1/2
    c = logit["comparisons"]["always_novice"]
    assert c["roles"] == ["always_novice"] and c["paired"]
    assert c["auc_diff"] == pytest.approx(logit["auc"] - a["methods"]["always_novice"]["auc"])
    assert c["auc_diff_ci95"][0] > 0 and c["prob_improvement"] > 0.5
    assert "always_expert" in logit["comparisons"]
    # identical twins tie (paired CI of the difference is [0, 0]); the skyline is no rival
    assert a["winners"] == ["logit", "logit_twin"]
    assert a["best_baseline"] == "logit"  # highest AUC among the non-learned methods
    assert logit["comparisons"]["logit_twin"]["roles"] == ["best_baseline"]
    twin = logit["comparisons"]["logit_twin"]
    assert twin["auc_diff"] == 0 and twin["prob_improvement"] == 0.5
    # ratio to the skyline: paired, and equal to the ratio of AUCs
    sky = a["methods"]["skyline"]["auc"]
    assert logit["skyline_ratio"] == pytest.approx(logit["auc"] / sky)
    lo, hi = logit["skyline_ratio_ci95"]
    assert lo <= logit["skyline_ratio"] <= hi
    assert a["methods"]["skyline"]["learned"] and not logit["learned"]
    assert a["methods"]["skyline"]["role"] == "skyline" and logit["role"] == "method"
    # across tasks: references, IQM / mean of AUC / skyline AUC, P(improvement), wins
    agg = built["aggregate"]
    assert agg["references"]["A"]["method"] == "skyline"
    lm = agg["methods"]["logit"]
    ratio_b = built["tasks"]["B"]["methods"]["logit"]["skyline_ratio"]
    assert lm["mean"] == pytest.approx((logit["skyline_ratio"] + ratio_b) / 2)
    assert lm["iqm_ci95"][0] <= lm["iqm"] <= lm["iqm_ci95"][1]
    assert lm["tasks"] == ["A", "B"] and lm["prob_improvement"]["always_novice"]["value"] > 0.5
    w = built["wins"]["logit"]
    assert (w["wins"], w["sole_wins"], w["tasks_won"]) == (2, 0, ["A", "B"])
    # the twins tie at the top: no win under the benchmark's rule nor under the paired one
    assert w["benchmark"] == w["paired"] == {"wins": 0, "tasks": []}
    assert built["wins"]["always_novice"]["wins"] == 0 and "skyline" not in built["wins"]


def test_several_seeds_are_resampled_as_seeds():
    runs = []
    for seed, level in ((0, 0.0), (1, 1.0)):
        for a in (0.0, 1.0):
            runs.append(fake("A", "random", a, seed, [level] * 32))
    m = report.build(points(runs))["tasks"]["A"]["methods"]["random"]
    assert m["seeds"] == [0, 1] and m["auc"] == pytest.approx(0.5)
    assert m["auc_ci95"] == [0.0, 1.0]  # seed-to-seed variation, not a zero width


def test_per_alpha_summary_reads_like_separate_jobs():
    rewards = {a: [a, 1.0 - a, 0.5] for a in (0.0, 0.5, 1.0)}
    separate = [fake("A", "logit", a, 3, r, frac=a) for a, r in rewards.items()]
    one = {"method": "logit", "task": "A", "seed": 3, "traits": TRAITS, "train": {},
           "per_alpha": [{"alpha": s["alpha"], "beta": 0.0, "test": s["test"],
                          "val_sim": s["test"], "selected": {"threshold": 1}}
                         for s in separate]}
    assert len(read_points(one)) == 3
    a = report.build(points([one]))["tasks"]
    b = report.build(points(separate))["tasks"]
    assert a == b


@pytest.mark.parametrize("bad,message", [
    ({"method": "x", "alpha": 0, "beta": 0, "seed": 0, "traits": TRAITS,
      "test": {"reward_mean": 1}}, "missing key 'task'"),
    ({"task": "t", "method": "x", "alpha": "abc", "beta": 0, "seed": 0, "traits": TRAITS,
      "test": {"reward_mean": 1}}, "alpha 'abc' is not a number"),
    ({"task": "t", "method": "x", "alpha": 0, "beta": 0, "seed": 0, "traits": TRAITS},
     "missing key 'test'"),
    ({"task": "t", "method": "x", "seed": 0, "traits": TRAITS,
      "per_alpha": [{"alpha": 0, "test": {}}]}, "per_alpha[0].missing key 'beta'"),
    ({"task": "t", "method": "x", "alpha": 0, "beta": 0, "seed": 0,
      "test": {"reward_mean": 1}}, "missing key 'traits'"),
    ({"task": "t", "method": "x", "alpha": 0, "beta": 0, "seed": 0,
      "traits": {**TRAITS, "role": "oracle"}, "test": {"reward_mean": 1}},
     "traits.role 'oracle' is not one of method, skyline"),
    ({"task": "t", "method": "x", "alpha": 0, "beta": 0, "seed": 0,
      "traits": {"role": "method", "shares_rollouts": True}, "test": {"reward_mean": 1}},
     "traits.missing key 'learns'"),
    ([1, 2], "not a JSON object"),
])
def test_bad_summaries_are_refused_with_one_line(bad, message):
    with pytest.raises(SummaryError) as info:
        read_points(bad)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_what_a_method_is_comes_from_its_traits_not_its_name():
    """A learned method named like a baseline and without ``train.global_step`` is
    learned; a job whose role is skyline is the skyline whatever its name; a method
    named ``skyline...`` whose role is method is a contender."""
    rng = np.random.default_rng(2)
    nov = rng.choice([0.0, 1.0], size=64)
    runs = []
    for a in (0.0, 1.0):
        runs += [fake("A", "always_novice", a, 0, nov),
                 fake("A", "logit", a, 0, np.maximum(nov, 0.5), 0.5),
                 # learned, no global_step anywhere, the best AUC: never a non-RL method
                 fake("A", "policy_net", a, 0, nov + 0.9, 0.5, learned=True),
                 # the skyline by role: the upper bound, never a contender
                 fake("A", "oracle_coordinator", a, 0, nov + 2, 0.5, learned=True,
                      skyline=True),
                 # named like a skyline, declared a method: a contender
                 fake("A", "skyline_lookalike", a, 0, nov + 0.1, 0.5)]
    assert all("global_step" not in str(r) for r in runs)
    built = report.build(points(runs), n_boot=200)
    t = built["tasks"]["A"]
    m = t["methods"]
    assert m["policy_net"]["learned"] and not m["logit"]["learned"]
    assert t["skyline"] == "oracle_coordinator" and m["oracle_coordinator"]["role"] == "skyline"
    assert m["skyline_lookalike"]["role"] == "method"
    assert m["logit"]["skyline_ratio"] == pytest.approx(
        m["logit"]["auc"] / m["oracle_coordinator"]["auc"])
    assert built["aggregate"]["references"]["A"]["method"] == "oracle_coordinator"
    # the learned method wins the task (it is a contender) but not among the non-RL methods
    assert t["winners"] == ["policy_net"]
    assert t["best_baseline"] == "logit"
    assert t["skyline_ratios"]["val_sim"]["method"] == "logit"  # best non-RL: not policy_net
    assert t["rule_winners"]["top"] == "logit"
    assert t["rule_winners"]["runner_up"] == "skyline_lookalike"
    w = built["wins"]
    assert "benchmark" not in w["policy_net"] and w["policy_net"]["wins"] == 1
    assert "benchmark" in w["logit"] and "benchmark" in w["skyline_lookalike"]
    assert "oracle_coordinator" not in w

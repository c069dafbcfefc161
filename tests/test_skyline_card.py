"""The skyline card (``tools/minigrid/skyline_card.py``): its budget rule on hand-made
curves, and the shipped data it holds the suite to: curves to 1.5M steps, two seeds at
α ∈ {0.2, 0.6, 1.0} on every task, for the skyline's features (whose curves set the budget)
and for every feature set the suite trains by default, every ``skyline_*.yaml``
training the card's budget with the rollout shape and precision the curves were run with,
and the suite's default sets being those its feature-set comparison finds dominated on no
task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from duo_cli.config import compose, group_options

ROOT = Path(__file__).resolve().parents[1]


def _card(name: str = "skyline_card"):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "tools" / "minigrid" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(step: int, reward: float, ci: float) -> dict:
    return {"global_step": step, "eval/val_true/reward_mean": reward,
            "eval/val_true/reward_ci95": ci}


def test_plateau_step_budget_and_gap_on_hand_made_curves():
    # plain Python floats and the shipped JSON numbers, no BLAS: the same on every CPU; the
    # one rounded value (0.95 - 0.85) is compared to 6 decimals, the rest are steps
    card = _card()
    end = card.FULL
    rows = [_row(1, 0.5, 0.1), _row(2, 0.85, 0.05), _row(3, 0.95, 0.05), _row(end, 0.7, 0.1)]
    assert card.plateau_step(rows) == 3  # best 0.95 ± 0.05: 0.85 (step 2) is below 0.90
    assert card.plateau_step(rows, rows[-1]) == 2  # a late dip to 0.7 ± 0.1: 0.85 >= 0.6
    short = rows[:3]  # not run to 1.5M: no part in the budget
    assert card.budget({"a": rows, "b": short}) == 2
    gap, early, best = card.gap_at_budget(rows, 2)  # stopping at step 2 keeps 0.85 of 0.95
    assert (round(gap, 6), early, best["global_step"]) == (0.1, 0.85, 3)


def _suite_skylines() -> list[str]:
    suite = yaml.safe_load((ROOT / "conf" / "benchmark" / "yrc_minigrid.yaml").read_text())
    return [a.removeprefix("skyline_")
            for a in suite["hydra"]["sweeper"]["params"]["algorithm"].split(",")
            if a.startswith("skyline_")]


def test_the_suite_trains_the_sets_dominated_on_no_task():
    sets = _card("feature_sets")
    data = sets.read()
    # the comparison covers the seven sets on every task at three seeds
    assert {(r["task"], r["seed"]) for r in data} == {
        (t, s) for t in ("DistShift", "DoorKey", "LavaGap") for s in (0, 1, 2)}
    assert len({r["set"] for r in data}) == 7 and len(data) == 63
    assert sorted(_suite_skylines()) == sets.undominated(data)


def test_dominated_means_below_the_best_by_more_than_its_ci():
    sets = _card("feature_sets")
    data = [{"task": "T", "seed": 0, "set": s, "val_true": v, "val_true_ci": 0.1}
            for s, v in (("a", 0.9), ("b", 0.81), ("c", 0.79))]
    data += [{"task": "U", "seed": 0, "set": s, "val_true": v, "val_true_ci": 0.01}
             for s, v in (("b", 0.5), ("a", 0.45), ("c", 0.495))]
    assert sets.marks(data) == ["best", "within CI", "dominated", "best", "dominated",
                                "within CI"]
    assert sets.undominated(data) == ["b"]  # a: dominated on U; c: on T


def test_the_card_has_full_curves_and_the_yamls_train_its_budget():
    card = _card()
    sets = card.all_curves()
    trained = _suite_skylines()
    assert trained and all(name in sets for name in trained), trained
    for name in {card.BUDGET_SET, *trained}:  # the budget's set and the sets the suite trains
        for task in ("DistShift", "DoorKey", "LavaGap"):
            for alpha in (0.2, 0.6, 1.0):
                full = [s for (t, a, s), rows in sets[name].items()
                        if (t, a) == (task, alpha) and card.full_length(rows)]
                assert len(full) >= 2, (name, task, alpha, full)
    names = [n for n in group_options("algorithm") if n.startswith("skyline_")]
    assert len(names) == 7  # the benchmark's seven feature sets
    steps = card.budget(sets[card.BUDGET_SET])  # the skyline's features (issue 22, item 3)
    for name in names:
        cfg = compose(["env=minigrid", f"algorithm={name}"], "coord")
        assert cfg.algorithm.total_timesteps == steps, name
        # the training the curves measured: their rollout shape and the bf16 obs encoder
        shape = (cfg.env.num_envs, cfg.algorithm.num_steps, cfg.policy.bf16)
        assert shape == card.CURVES_SHAPE, name


def test_adding_a_seed_keeps_the_other_rows_and_replaces_its_own():
    sets = _card("feature_sets")
    row = {"task": "T", "seed": 0, "set": "a", "val_true": 0.5, "val_true_ci": 0.1}
    kept = [row, {**row, "set": "b", "val_true": 0.4}]
    new = [{**row, "val_true": 0.7}, {**row, "seed": 1}]
    out = sets.merged(kept, new)
    assert [(r["set"], r["seed"], r["val_true"]) for r in out] == [
        ("a", 0, 0.7), ("b", 0, 0.4), ("a", 1, 0.5)]

"""When the skyline is not an upper bound the report says so; a task whose test levels are
one layout (declared by its env) carries a caveat; every method has its own plot style."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from artifacts import write_sweep_dir
from rich.console import Console

from duo_cli import sweep
from duo_cli.config import compose
from duo_cli.envs import single_layout
from duo_cli.envs.minigrid import SINGLE_LAYOUT, TASKS, VARIANTS, MiniGridVecEnv
from duo_cli.report.plots import COLOURS, MARKERS, method_styles, summary_styles
from duo_cli.report.yrc import bound_violations
from duo_cli.summaries import JobSummary, SummaryError

SKY = [0.5] * 8


def _test(rewards, per_episode: bool = True) -> dict:
    r = np.asarray(rewards, dtype=float)
    out = {"reward_mean": float(r.mean()), "expert_frac": 0.5}
    return {**out, "rewards": r.tolist()} if per_episode else out


def _job(task, method, rewards, skyline=False, single=None, per_episode=True) -> dict:
    """An alpha-grid job summary with the same test rewards at alpha 0 and 1 (no
    validators: both validators fall back to them)."""
    data = {"method": method, "task": task, "seed": 0,
            "traits": {"learns": skyline, "shares_rollouts": not skyline,
                       "role": "skyline" if skyline else "method"},
            "alphas": [0.0, 1.0], "beta": 0.0,
            "per_alpha": [{"alpha": a, "beta": 0.0, "test": _test(rewards, per_episode)}
                          for a in (0.0, 1.0)]}
    if single is not None:
        data["test_single_layout"] = single
    return data


def _summarize(root: Path, jobs: list[dict]) -> tuple[dict, str, str]:
    """``(sweep_summary.json, report.md, console output)`` of a sweep dir of ``jobs``."""
    write_sweep_dir(root, jobs)
    out = io.StringIO()
    sweep.summarize_dir(root, Console(file=out, width=200))
    return (json.loads((root / "sweep_summary.json").read_text()),
            (root / "report.md").read_text(), out.getvalue())


def test_a_method_above_the_skyline_beyond_the_ci_is_a_warning(tmp_path):
    # always_expert's per-level AUC 1 on every level vs the skyline's 0.5: ratio 2 [2, 2]
    summary, md, console = _summarize(tmp_path, [
        _job("T", "always_expert", [1.0] * 8), _job("T", "always_novice", [0.0] * 8),
        _job("T", "sky", SKY, skyline=True)])
    v = summary["tasks"]["T"]["bound_violations"]
    assert [x["validator"] for x in v] == ["val_sim", "val_true"]
    assert all(x["method"] == "always_expert" and x["beyond_ci"] for x in v)
    assert v[0]["ratio"] == pytest.approx(2.0) and v[0]["ratio_ci95"] == pytest.approx([2, 2])
    for validator in ("YRC-0 (simulated) validator (val_sim)", "oracle validator (val_true)"):
        line = ("WARNING: the skyline is not an upper bound on T: always_expert's AUC / the "
                f"skyline's (sky) = 2.00 [2.00, 2.00] under the {validator}: above 1 beyond "
                "its 95% CI.")
        assert f"> **{line}**" in md and line in console
    head = md.split("## Definitions")[0]  # at the top of the report, before anything else
    assert head.count("> **WARNING") == 2
    assert "2 WARNING(s): the skyline is not an upper bound" in console


def test_no_warning_within_the_ci_or_below_the_skyline(tmp_path):
    # ratio 1.05 with a CI that includes 1 (levels 1 0 1 0 ...), and 0.8 below
    summary, md, console = _summarize(tmp_path, [
        _job("T", "logit", [1, 0, 1, 0, 1, 0, 1, 0.2]), _job("T", "always_expert", [0.4] * 8),
        _job("T", "sky", SKY, skyline=True)])
    r = summary["tasks"]["T"]["skyline_ratios"]["val_sim"]
    assert r["method"] == "logit" and r["ratio"] == pytest.approx(1.05)
    assert r["ratio_ci95"][0] < 1 < r["ratio_ci95"][1]
    assert summary["tasks"]["T"]["bound_violations"] == []
    assert "WARNING" not in md and "WARNING" not in console


def test_the_rule_on_hand_made_ratios():
    def ratios(value, ci):
        r = {"method": "m", "ratio": value, "ratio_ci95": ci}
        return {"skyline": "sky", "val_sim": r, "val_true": {**r, "ratio": None},
                "oracle_proposer": {"method": "sky (val_sim)", "ratio": 9.0,
                                    "ratio_ci95": [8.0, 9.5]}}

    assert bound_violations(ratios(1.2, [1.0, 1.3])) == []  # lower bound 1: within the CI
    assert bound_violations(ratios(0.9, None)) == []
    assert bound_violations(None) == []
    (v,) = bound_violations(ratios(1.2, [1.01, 1.3]))  # the proposer is not checked
    assert v["validator"] == "val_sim" and v["beyond_ci"]
    (v,) = bound_violations(ratios(1.1, None))  # above 1 with nothing to check it against
    assert not v["beyond_ci"] and v["ratio_ci95"] is None


def test_a_ratio_above_one_without_a_ci_is_reported(tmp_path):
    summary, md, _ = _summarize(tmp_path, [
        _job("T", "always_expert", [1.0] * 8, per_episode=False),
        _job("T", "sky", SKY, skyline=True, per_episode=False)])
    assert len(summary["tasks"]["T"]["bound_violations"]) == 2
    assert "above 1 with no CI to check it (per-episode rewards missing)" in md


def test_single_layout_note_only_for_the_declared_task(tmp_path):
    jobs = [_job("DistShift", "always_expert", [1.0, 0.9] * 4, single=True),
            _job("DistShift", "sky", [1.0] * 8, skyline=True, single=True),
            _job("DoorKey", "always_expert", [1.0, 0.9] * 4, single=False),
            _job("DoorKey", "sky", [1.0] * 8, skyline=True, single=False),
            _job("LavaGap", "always_expert", [1.0, 0.9] * 4)]  # an older summary: not recorded
    summary, md, console = _summarize(tmp_path, jobs)
    assert {t: r["single_layout"] for t, r in summary["tasks"].items()} == {
        "DistShift": True, "DoorKey": False, "LavaGap": None}
    note = ("Note: {}'s test levels are a single layout (every seed is the same grid): its "
            "CIs cover only the agents' own randomness, not a level distribution.")
    assert note.format("DistShift") in md and note.format("DistShift") in console
    for task in ("DoorKey", "LavaGap"):
        assert note.format(task) not in md and note.format(task) not in console
    assert "WARNING" not in md


def test_the_summary_field_round_trips_and_is_checked():
    data = _job("T", "m", [1.0], single=True)
    assert JobSummary.from_json(data).test_single_layout is True
    assert JobSummary.from_json(data).to_json()["test_single_layout"] is True
    assert "test_single_layout" not in JobSummary.from_json(_job("T", "m", [1.0])).to_json()
    with pytest.raises(SummaryError, match="test_single_layout 'yes' is not true or false"):
        JobSummary.from_json({**data, "test_single_layout": "yes"})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_declared_single_layout_matches_the_env(task):
    """The declaration is what the env does: the test pool's grids over 32 levels."""
    cfg = compose(["env=minigrid", f"env.task={task}"]).env
    env = MiniGridVecEnv(task, 16, "hard", cfg.test.start_level, cfg.test.num_levels, seed=3)
    grids = set()
    for seed in (0, 1):
        env.reset(seed=seed)
        for e in env.env.envs:
            u = e.unwrapped
            grids.add((u.grid.encode().tobytes(), tuple(u.agent_pos), u.agent_dir))
    env.close()
    assert single_layout(cfg, "test") == (len(grids) == 1)
    assert single_layout(cfg, "test") == (task == "DistShift")
    assert single_layout(cfg, "train") == (TASKS[task][VARIANTS.index("easy")] in SINGLE_LAYOUT)
    one = compose(["env=minigrid", f"env.task={task}", "env.test.num_levels=1"]).env
    assert single_layout(one, "test")  # a pool of one level is one layout in any env


def test_seventeen_methods_each_have_their_own_colour_and_marker():
    names = [f"method_{i:02d}" for i in range(17)]
    styles = method_styles(reversed(names))
    assert len({c for c, _ in styles.values()}) == 17
    assert len({m for _, m in styles.values()}) == 17
    assert styles == method_styles(names)  # by name, not by the order given
    assert styles["method_00"] == (COLOURS[0], MARKERS[0])
    many = method_styles(f"m{i:03d}" for i in range(400))
    assert len(set(many.values())) == 400  # no two share both beyond 20 either
    # one map per summary: a method keeps its style on every task's plot
    summary = {"tasks": {"A": {"methods": {"x": {}, "sky": {}}}, "B": {"methods": {"x": {}}}}}
    assert summary_styles(summary) == method_styles(["sky", "x"])

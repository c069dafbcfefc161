"""One job over an α grid: shared rollouts give the numbers of one job per α."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from duo_cli.checkpoint import load_checkpoint
from duo_cli.config import ConfigError, compose
from duo_cli.coordination.alpha_grid import alpha_key, rescore
from duo_cli.report.records import read_points

ALPHAS = [0.0, 0.5, 2.0]


def _run(overrides, run_dir: Path, console) -> dict:
    from duo_cli.commands.train_coord import train_coord

    cfg = compose([*overrides, f"run_dir={run_dir}"], "coord")
    return json.loads((train_coord(cfg, console) / "summary.json").read_text())


def test_rescore_hand_computed():
    result = {"base_rewards": [1.0, 0.0, 2.0], "expert_steps": [2, 0, 4], "switches": [1, 0, 3],
              "lengths": [5, 3, 8], "steps": 16}
    out = rescore(result, alpha=0.5, beta=1.0, bp=0.1)
    # 1 - 0.5*0.1*2 - 0.1*1 = 0.8 ; 0 ; 2 - 0.05*4 - 0.1*3 = 1.5
    assert np.allclose(out["rewards"], [0.8, 0.0, 1.5])
    assert out["reward_mean"] == pytest.approx(2.3 / 3)
    assert out["expert_frac"] == pytest.approx(6 / 16)
    assert out["switches_mean"] == pytest.approx(4 / 3)
    assert out["base_reward_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize("method", [
    ["algorithm=random", "algorithm.probs=[0,0.5,1]"],
    ["algorithm=logit", "algorithm.percentiles=[0,50,100]", "algorithm.fit_steps=4"],
])
def test_grid_matches_one_job_per_alpha(method, tiny_agents, tmp_path, quiet_console):
    base = [*tiny_agents["overrides"], *method, "coordination.switch_agent_cost_weight=0.3"]
    grid = _run([*base, f"coordination.alphas={ALPHAS}"], tmp_path / "grid", quiet_console)
    assert [e["alpha"] for e in grid["per_alpha"]] == ALPHAS
    assert grid["validation_rollouts"] == 2 * len(grid["candidates"])  # once per split
    assert grid["traits"] == {"learns": False, "shares_rollouts": True, "role": "method"}
    assert [p.alpha for p in read_points(grid)] == ALPHAS
    for entry in grid["per_alpha"]:
        a = entry["alpha"]
        one = _run([*base, f"coordination.expert_query_cost_weight={a}"],
                   tmp_path / alpha_key(a), quiet_console)
        assert entry["selected"] == one["selected"]
        assert np.allclose(entry["test"]["rewards"], one["test"]["rewards"], atol=1e-5)
        assert entry["test"]["expert_frac"] == pytest.approx(one["test"]["expert_frac"])
        assert entry["val_sim"]["reward_mean"] == pytest.approx(one["val_sim"]["reward_mean"])
        ckpt = load_checkpoint(tmp_path / "grid" / alpha_key(a) / "best_val_sim.pt")
        assert ckpt["metadata"]["run_config"]["coordination"]["expert_query_cost_weight"] == a
        for split in ("val_sim", "val_true"):
            assert entry["validators"][split]["test"]["reward_mean"] == pytest.approx(
                rescore(_test_of(grid, entry, split, tmp_path, base, quiet_console), a, 0.3,
                        0.1)["reward_mean"], abs=1e-6)


def _test_of(grid, entry, split, tmp_path, base, console):
    """Test rollouts of the candidate a validator chose, from a single-α run selecting on it."""
    run = _run([*base, f"coordination.expert_query_cost_weight={entry['alpha']}",
                f"coordination.selection_split={split}"],
               tmp_path / f"{split}-{alpha_key(entry['alpha'])}", console)
    assert run["selected"] == entry["validators"][split]["selected"]
    return run["test"]


def test_learned_method_trains_once_per_alpha(tiny_agents, tmp_path, quiet_console):
    tiny_ppo = ["algorithm=ppo", "algorithm.total_timesteps=64", "algorithm.num_steps=16",
                "algorithm.num_minibatches=2", "algorithm.eval_every=1"]
    grid = _run([*tiny_agents["overrides"], *tiny_ppo, "coordination.alphas=[0,1]"],
                tmp_path / "ppo", quiet_console)
    assert [e["alpha"] for e in grid["per_alpha"]] == [0.0, 1.0]
    assert grid["traits"] == {"learns": True, "shares_rollouts": False, "role": "method"}
    assert all(p.learned and not p.skyline for p in read_points(grid))
    assert all(e["train"]["global_step"] == 64 for e in grid["per_alpha"])  # sub-runs kept
    for a in (0, 1):
        assert (tmp_path / "ppo" / alpha_key(a) / "summary.json").is_file()


@pytest.mark.parametrize("bad", ["[]", "[0,-1]", "[0,0]", "[0,nan]"])
def test_bad_alphas_refused(bad, tiny_agents, tmp_path, quiet_console):
    with pytest.raises(ConfigError, match="coordination.alphas"):
        _run([*tiny_agents["overrides"], "algorithm=always_novice", f"coordination.alphas={bad}"],
             tmp_path / "bad", quiet_console)
    assert not (tmp_path / "bad").exists()

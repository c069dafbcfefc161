"""Real coordination runs: Procgen (bossfight) with the tiny agent checkpoints of ``tiny_agents``.

Each method is trained once per module (in-process, ``train_coord``) and its run dir
is shared by the tests below; ``duo eval`` and user errors go through the CLI.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import assert_one_line_error

from duo_cli.checkpoint import load_checkpoint, save_checkpoint
from duo_cli.config import ConfigError, compose

REPO = Path(__file__).resolve().parents[1]

TINY_PPO = ["algorithm.total_timesteps=64", "algorithm.num_steps=16",
            "algorithm.num_minibatches=2", "algorithm.eval_every=1"]
METHODS = {
    "always_novice": ["algorithm=always_novice"],
    "always_expert": ["algorithm=always_expert"],
    "random": ["algorithm=random", "algorithm.probs=[0,1]"],
    "logit": ["algorithm=logit", "algorithm.percentiles=[0,100]", "algorithm.fit_steps=4",
              "policy.metric=entropy"],
    "ask_every_k": ["algorithm=ask_every_k", "algorithm.candidates=[5]"],
    "ood": ["algorithm=ood", "algorithm.percentiles=[50]", "algorithm.fit_steps=8"],
    "ppo": ["algorithm=ppo", *TINY_PPO],
    "skyline": ["algorithm=skyline", *TINY_PPO],
}
SEARCH_METHODS = ["always_novice", "always_expert", "random", "logit", "ask_every_k", "ood"]
RESULT_KEYS = ("reward_mean", "reward_ci95", "base_reward_mean", "expert_frac", "episodes")
ALPHA = 0.4  # coordination.expert_query_cost_weight default
BP = 0.1  # written by the tiny_agents fixture


def duo(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("DUO_CONF_DIR", None)
    return subprocess.run([sys.executable, "-m", "duo_cli.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def train(overrides: list[str], run_dir: Path, console) -> Path:
    from duo_cli.commands.train_coord import train_coord

    cfg = compose([*overrides, f"run_dir={run_dir}"], "coord")
    return train_coord(cfg, console)


@pytest.fixture(scope="module")
def coord_run(tiny_agents, tmp_path_factory):
    """``coord_run(method) -> run dir``: each method trained once per module."""
    import io

    from rich.console import Console

    root = tmp_path_factory.mktemp("coord_runs")
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            console = Console(file=io.StringIO(), width=150)
            done[method] = train([*tiny_agents["overrides"], *METHODS[method]],
                                 root / method, console)
        return done[method]

    return get


def check_result(res: dict, episodes: int = 4) -> None:
    for key in RESULT_KEYS:
        assert key in res, key
    assert res["episodes"] == episodes
    assert 0.0 <= res["expert_frac"] <= 1.0
    assert math.isfinite(res["reward_mean"]) and math.isfinite(res["reward_ci95"])


# -- every method completes ---------------------------------------------------------------


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_search_method_completes(coord_run, method):
    run_dir = coord_run(method)
    summary = read_json(run_dir / "summary.json")
    assert summary["method"] == method
    assert summary["task"] == "bossfight"
    assert summary["selection_split"] == "val_sim"
    assert summary["bp"] == pytest.approx(BP)
    check_result(summary["test"])
    check_result(summary["val_sim"])
    assert "selected" in summary and summary["selected"]
    best = run_dir / "best_val_sim.pt"
    assert best.is_file() and summary["checkpoint"] == str(best)
    ckpt = load_checkpoint(best)
    assert ckpt["kind"] == "coord"
    assert ckpt["metadata"]["selected"] == summary["selected"]
    assert ckpt["metadata"]["selected_on"] == "val_sim"
    assert not (run_dir / "best_test.pt").exists()  # selection never uses test
    assert (run_dir / "config.yaml").is_file()
    # the selection-split score of the chosen candidate is reproduced after reloading it
    assert summary["val_sim"]["reward_mean"] == pytest.approx(
        summary["train"]["best"]["val_sim"]["result"]["reward_mean"])
    # both validators' splits are scored (never test); the selection split's choice is "the" one
    assert set(summary["train"]["best"]) == {"val_sim", "val_true"}
    assert set(summary["validators"]) == {"val_sim", "val_true"}
    assert summary["validators"]["val_sim"]["test"]["reward_mean"] == summary["test"]["reward_mean"]


def test_always_expert_and_always_novice(coord_run):
    expert = read_json(coord_run("always_expert") / "summary.json")
    novice = read_json(coord_run("always_novice") / "summary.json")
    assert expert["selected"] == {"agent": "expert"}
    assert novice["selected"] == {"agent": "novice"}
    for split in ("val_sim", "test"):
        assert expert[split]["expert_frac"] == 1.0
        assert novice[split]["expert_frac"] == 0.0
        # the novice is free; every expert step costs alpha * BP
        assert novice[split]["reward_mean"] == pytest.approx(novice[split]["base_reward_mean"])
        e = expert[split]
        assert e["reward_mean"] == pytest.approx(
            e["base_reward_mean"] - ALPHA * BP * e["episode_length_mean"], abs=1e-5)
    assert novice["test"]["switches_mean"] == 0.0 and expert["test"]["switches_mean"] == 0.0


def test_selected_parameters_come_from_the_candidates(coord_run):
    rnd = read_json(coord_run("random") / "summary.json")
    assert rnd["selected"]["p"] in (0.0, 1.0)
    assert rnd["test"]["expert_frac"] == rnd["selected"]["p"]

    logit = read_json(coord_run("logit") / "summary.json")
    assert logit["selected"]["metric"] == "entropy"
    assert isinstance(logit["selected"]["threshold"], float)

    k = read_json(coord_run("ask_every_k") / "summary.json")
    assert k["selected"] == {"k": 5}
    # asks at steps 0, 5, 10, ... of every episode: at least 1/5 of the steps
    assert k["test"]["expert_frac"] >= 0.2 - 1e-9

    ood = read_json(coord_run("ood") / "summary.json")
    assert set(ood["selected"]) == {"threshold", "feature"}
    assert ood["traits"] == {"learns": False, "shares_rollouts": True, "role": "method"}
    ckpt = load_checkpoint(coord_run("ood") / "best_val_sim.pt")
    assert ckpt["state_dict"]["fit_features"].shape[0] == 8 * 2  # fit_steps x env.num_envs


@pytest.mark.parametrize("method", ["ppo", "skyline"])
def test_ppo_coordinator_and_skyline_complete(coord_run, method):
    run_dir = coord_run(method)
    summary = read_json(run_dir / "summary.json")
    selection = "val_true" if method == "skyline" else "val_sim"
    assert summary["selection_split"] == selection
    check_result(summary["test"])
    check_result(summary[selection])
    assert "selected" in summary
    assert (run_dir / f"best_{selection}.pt").is_file()
    assert summary["checkpoint"] == str(run_dir / f"best_{selection}.pt")
    assert (run_dir / "last.pt").is_file()
    rows = (run_dir / "metrics.jsonl").read_text().strip().splitlines()
    assert len(rows) == 64 // (2 * 16)
    assert summary["train"]["global_step"] == 64
    # declared by PPO and the config (the skyline trains on the test distribution)
    assert summary["traits"] == {"learns": True, "shares_rollouts": False,
                                 "role": "skyline" if method == "skyline" else "method"}
    ckpt = load_checkpoint(run_dir / f"best_{selection}.pt")
    assert ckpt["kind"] == "coord"
    assert selection in ckpt["metadata"]["eval"]
    # both validators' choices from the same training: for the skyline, val_sim's choice is
    # the "oracle proposer" (PPO on the test distribution, chosen by the simulated validator)
    assert set(summary["validators"]) == {"val_sim", "val_true"}
    assert (run_dir / "best_val_sim.pt").is_file() and (run_dir / "best_val_true.pt").is_file()


def test_ppo_coordinator_without_periodic_eval_completes(tiny_agents, tmp_path, quiet_console):
    overrides = [*tiny_agents["overrides"], "algorithm=ppo", *TINY_PPO[:-1],
                 "algorithm.eval_every=0"]
    run_dir = train(overrides, tmp_path / "run", quiet_console)
    check_result(read_json(run_dir / "summary.json")["test"])


# -- duo eval reproduces the run's test numbers ---------------------------------------------


@pytest.mark.parametrize(
    "method", ["random", pytest.param("ood", marks=pytest.mark.slow), "ppo"])
def test_eval_reproduces_train_test_numbers(coord_run, tmp_path, method):
    """Contract: ``duo eval <run>/best_val_sim.pt`` scores what the run reported (same seed).

    ``random`` is evaluated without ``run_dir=``: the checkpoint's run_config names the
    training run dir, which eval must neither refuse nor write into.
    """
    run_dir = coord_run(method)
    trained_text = (run_dir / "summary.json").read_text()
    explicit = method != "random"
    args = [f"run_dir={tmp_path / 'eval'}"] if explicit else []
    proc = duo("eval", str(run_dir / "best_val_sim.pt"), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: "), last
    if explicit:
        assert last == f"run dir: {tmp_path / 'eval'}"
    eval_dir = (tmp_path / last.removeprefix("run dir: ")).resolve()
    assert eval_dir != run_dir.resolve()
    assert eval_dir.is_relative_to(tmp_path.resolve())  # runs/eval/... under the cwd
    assert (run_dir / "summary.json").read_text() == trained_text  # the run is untouched

    trained = json.loads(trained_text)
    evaluated = read_json(eval_dir / "summary.json")
    assert evaluated["kind"] == "coord"
    assert evaluated["selected"] == trained["selected"]
    assert set(evaluated) >= {"val_sim", "val_true", "test"} and "train" not in evaluated
    for split in ("test", "val_sim"):  # same seed, same levels, same agents' sampling
        for key in ("reward_mean", "expert_frac", "base_reward_mean", "episodes", "steps"):
            assert evaluated[split][key] == trained[split][key], (split, key)
    assert evaluated["test"]["rewards"] == trained["test"]["rewards"]


# -- selection never uses test ----------------------------------------------------------------


def test_selection_on_test_is_refused(tiny_agents, tmp_path):
    overrides = [*tiny_agents["overrides"], "algorithm=always_novice",
                 "coordination.selection_split=test"]
    with pytest.raises(ConfigError, match="val_sim"):
        compose(overrides, "coord")
    run_dir = tmp_path / "run"
    proc = duo("train", "--type", "coord", *overrides, f"run_dir={run_dir}")
    assert_one_line_error(proc, "selection_split", "val_sim", "val_true", "test")
    assert not run_dir.exists()


# -- BP ------------------------------------------------------------------------------------


def _without_bp(src: Path, dst: Path) -> Path:
    ckpt = load_checkpoint(src)
    del ckpt["metadata"]["bp"]
    save_checkpoint(dst, ckpt)
    return dst


def _with_expert(overrides: list[str], expert: Path) -> list[str]:
    return [o for o in overrides if not o.startswith("agents.expert=")] + [
        f"agents.expert={expert}"]


def test_missing_bp_is_a_one_line_error(tiny_agents, tmp_path):
    expert = _without_bp(tiny_agents["paths"]["expert"], tmp_path / "expert_nobp.pt")
    overrides = _with_expert(tiny_agents["overrides"], expert)
    proc = duo("train", "--type", "coord", *overrides, "algorithm=always_novice",
               f"run_dir={tmp_path / 'run'}")
    line = assert_one_line_error(proc, str(expert), "evaluation.write_bp=true",
                                 "coordination.base_penalty")
    assert "duo eval" in line


def test_base_penalty_override_replaces_checkpoint_bp(tiny_agents, tmp_path, quiet_console):
    expert = _without_bp(tiny_agents["paths"]["expert"], tmp_path / "expert_nobp.pt")
    overrides = _with_expert(tiny_agents["overrides"], expert)
    run_dir = train([*overrides, "algorithm=always_expert", "coordination.base_penalty=0.25"],
                    tmp_path / "run", quiet_console)
    summary = read_json(run_dir / "summary.json")
    assert summary["bp"] == 0.25
    t = summary["test"]
    assert t["reward_mean"] == pytest.approx(
        t["base_reward_mean"] - ALPHA * 0.25 * t["episode_length_mean"], abs=1e-5)


def test_missing_bp_leaves_no_run_dir(tiny_agents, tmp_path, quiet_console):
    expert = _without_bp(tiny_agents["paths"]["expert"], tmp_path / "expert_nobp.pt")
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="write_bp"):
        train([*_with_expert(tiny_agents["overrides"], expert), "algorithm=always_novice"],
              run_dir, quiet_console)
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_non_positive_bp_is_a_config_error(tiny_agents, tmp_path, quiet_console):
    # the CLI turns ConfigError into a one-line error with exit code 2
    with pytest.raises(ConfigError, match="base_penalty"):
        train([*tiny_agents["overrides"], "algorithm=always_novice",
               "coordination.base_penalty=0"], tmp_path / "run", quiet_console)


def test_eval_write_bp_refuses_non_positive_bp(tiny_agents, tmp_path):
    # a random agent scores 0 on bossfight: its BP would be 0, which is refused
    ckpt_path = _without_bp(tiny_agents["paths"]["expert"], tmp_path / "expert.pt")
    before = ckpt_path.read_bytes()
    proc = duo("eval", str(ckpt_path), "evaluation.splits=[test]", "evaluation.write_bp=true",
               "env.task=bossfight", "evaluation.num_episodes=2", "evaluation.num_envs=2",
               "torch_threads=1", "progress=false", f"run_dir={tmp_path / 'eval'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "not positive" in proc.stderr and "Traceback" not in proc.stderr
    assert ckpt_path.read_bytes() == before


def test_eval_write_bp_stores_bp_in_checkpoint(tiny_agents, tmp_path):
    # starpilot: a random agent scores points, so the measured BP is positive
    ckpt_path = _without_bp(tiny_agents["paths"]["expert"], tmp_path / "expert.pt")
    before = load_checkpoint(ckpt_path)
    eval_dir = tmp_path / "eval"
    proc = duo("eval", str(ckpt_path), "evaluation.splits=[test]", "evaluation.write_bp=true",
               "env.task=starpilot", "evaluation.num_episodes=4", "evaluation.num_envs=2",
               "torch_threads=1", "progress=false", f"run_dir={eval_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"run dir: {eval_dir}"
    summary = read_json(eval_dir / "summary.json")
    assert summary["kind"] == "agent"
    t = summary["test"]
    assert summary["bp"] == pytest.approx(t["reward_mean"] / t["episode_length_mean"])
    after = load_checkpoint(ckpt_path)
    assert after["metadata"]["bp"] == summary["bp"]
    assert "test split" in after["metadata"]["bp_source"]
    assert after["kind"] == "agent" and after["config"] == before["config"]
    assert after["state_dict"].keys() == before["state_dict"].keys()
    for key, value in before["state_dict"].items():
        assert after["state_dict"][key].equal(value), key
    # the original checkpoint of the fixture is untouched
    assert load_checkpoint(tiny_agents["paths"]["expert"])["metadata"]["bp"] == BP

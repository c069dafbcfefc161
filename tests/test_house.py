"""The house rules that a layout must keep: small files and functions, one play per candidate."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import pytest

from duo_cli.config import compose
from duo_cli.evaluation.evaluator import Evaluator

PACKAGE = Path(__file__).resolve().parents[1] / "duo_cli"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_file_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_80_lines():
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.fixture
def played(monkeypatch):
    """Counts the episodes every Evaluator plays, per split."""
    episodes: Counter = Counter()
    evaluate = Evaluator.evaluate

    def counting(self, policy):
        result = evaluate(self, policy)
        episodes[self.split] += result["episodes"]
        return result

    monkeypatch.setattr(Evaluator, "evaluate", counting)
    return episodes


def _train(tiny_agents, tmp_path, console, *overrides: str) -> Path:
    from duo_cli.commands.train_coord import train_coord

    cfg = compose([*tiny_agents["overrides"], *overrides, f"run_dir={tmp_path / 'run'}"], "coord")
    return train_coord(cfg, console)


def test_selection_split_is_played_once_per_candidate(tiny_agents, tmp_path, quiet_console,
                                                      played):
    run = _train(tiny_agents, tmp_path, quiet_console, "algorithm=random",
                 "algorithm.probs=[0,0.5,1]")
    # 3 candidates x 4 episodes on each validator's split; test once per distinct choice
    assert played["val_sim"] == 3 * 4 and played["val_true"] == 3 * 4
    summary = json.loads((run / "summary.json").read_text())
    choices = {str(v["selected"]) for v in summary["validators"].values()}
    assert played["test"] == 4 * len(choices)
    assert json.loads((run / "summary.json").read_text())["val_sim"]["episodes"] == 4


def test_ppo_selection_split_is_played_once_per_evaluation(tiny_agents, tmp_path, quiet_console,
                                                           played):
    run = _train(tiny_agents, tmp_path, quiet_console, "algorithm=ppo",
                 "algorithm.total_timesteps=64", "algorithm.num_steps=16",
                 "algorithm.num_minibatches=2", "algorithm.eval_every=1")
    # 2 iterations, each evaluated on both validators' splits; test once per distinct choice
    assert played["val_sim"] == 2 * 4 and played["val_true"] == 2 * 4
    summary = json.loads((run / "summary.json").read_text())
    choices = {str(v["selected"]) for v in summary["validators"].values()}
    assert played["test"] == 4 * len(choices)

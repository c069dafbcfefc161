"""What runs write and load beyond the commands: strict JSON (null, never NaN), metrics
trimmed back to the step a resume starts from, and plugin classes joining the registry's
closed set."""

from __future__ import annotations

import json
import math

import pytest
import torch


def test_json_outputs_hold_null_not_nan(tmp_path):
    from duo_cli.rundir import RunContext, write_json

    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5],
                                     "c": torch.tensor(float("nan"))})
    strict = {"parse_constant": lambda c: pytest.fail(f"bare {c}")}
    assert json.loads((tmp_path / "s.json").read_text(), **strict) == {
        "a": None, "b": [None, 1.5], "c": None}
    ctx = RunContext(tmp_path / "run", progress=False)
    ctx.log_metrics(1, {"episode_return": float("nan"), "sps": 2.0})
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text(), **strict)
    assert row == {"global_step": 1, "episode_return": None, "sps": 2.0}


def test_trim_metrics_drops_rows_after_the_resumed_step(tmp_path):
    from duo_cli.rundir import RunContext

    ctx = RunContext(tmp_path, progress=False)
    for step in (256, 512, 768, 1024):
        ctx.log_metrics(step, {"x": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"global_step": 12')  # a line cut short by kill -9
    ctx.trim_metrics(512)
    steps = [json.loads(line)["global_step"]
             for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [256, 512]


def test_registered_plugin_classes_are_accepted(tmp_path):
    """A class registered in code joins the closed set; its undeclared kwargs are refused."""
    from duo_cli.models import build_model
    from duo_cli.models.cnn import SmallCNN
    from duo_cli.registry import UnknownTargetError, register_model

    class PluginNet(SmallCNN):
        pass

    register_model("my_plugin.PluginNet", PluginNet)
    model = build_model({"_target_": "my_plugin.PluginNet", "hidden_dim": 8}, num_actions=3)
    assert isinstance(model, PluginNet) and model.logit_dim == 3
    with pytest.raises(UnknownTargetError, match="colour"):
        build_model({"_target_": "my_plugin.PluginNet", "colour": "red"}, num_actions=3)
    with torch.no_grad():
        assert math.isfinite(float(model(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).value))

"""Config composition (Hydra) and its one-line errors."""

from __future__ import annotations

import inspect

import pytest
from omegaconf import DictConfig, OmegaConf

from duo_cli.config import (
    ConfigError,
    compose,
    conf_dir,
    group_options,
    to_yaml,
)


def _groups() -> list[str]:
    return sorted(p.name for p in conf_dir().iterdir() if p.is_dir())


def _group_choices() -> list[tuple[str, str]]:
    return [(g, opt) for g in _groups() for opt in group_options(g)]


def test_conf_dir_has_groups():
    groups = _groups()
    for expected in ("algorithm", "coordination", "env", "evaluation", "model", "policy"):
        assert expected in groups
    for group in groups:
        assert group_options(group), f"conf/{group} has no options"


def test_group_options_of_missing_group_is_empty():
    assert group_options("no_such_group") == []


def _primary_configs() -> list[str]:
    """``config`` (agents) and, when present, ``coord`` (coordination runs)."""
    names = ["config"]
    if (conf_dir() / "coord.yaml").is_file() and "config_name" in inspect.signature(
        compose
    ).parameters:
        names.append("coord")
    return names


def _compose_with(overrides: list[str], config_name: str) -> DictConfig:
    if config_name == "config":
        return compose(overrides)
    return compose(overrides, config_name=config_name)


@pytest.mark.parametrize("config_name", _primary_configs())
@pytest.mark.parametrize(("group", "option"), _group_choices())
def test_every_group_option_composes(group, option, config_name):
    cfg = _compose_with([f"{group}={option}"], config_name)
    assert isinstance(cfg, DictConfig)
    assert group in cfg
    for node in cfg.values():
        if isinstance(node, DictConfig) and isinstance(node.get("_target_"), str):
            from duo_cli.registry import resolve

            assert callable(resolve(node._target_)), node._target_
    # the keys `duo config` must always show
    for key in ("coordination.expert_query_cost_weight", "coordination.switch_agent_cost_weight",
                "coordination.temperature", "env.task", "seed"):
        assert OmegaConf.select(cfg, key) is not None, key


def test_default_config_keys():
    cfg = compose([])
    assert cfg.seed == 0
    assert cfg.type == "agent"
    assert cfg.env.task == "coinrun"
    coord = cfg.coordination
    assert coord.expert_query_cost_weight == pytest.approx(0.4)
    assert coord.switch_agent_cost_weight == pytest.approx(0.0)
    assert coord.temperature == pytest.approx(1.0)
    assert coord.selection_split in ("val_sim", "val_true")


def test_config_yaml_round_trip_has_keys():
    cfg = compose(["seed=7", "coordination.switch_agent_cost_weight=0.25", "env.task=maze"])
    data = OmegaConf.to_container(OmegaConf.create(to_yaml(cfg)))
    assert data["seed"] == 7
    assert data["env"]["task"] == "maze"
    coord = data["coordination"]
    for key in ("expert_query_cost_weight", "switch_agent_cost_weight", "temperature"):
        assert key in coord
    assert coord["switch_agent_cost_weight"] == 0.25


def test_value_overrides_apply():
    cfg = compose(["coordination.expert_query_cost_weight=1", "coordination.temperature=0",
                   "algorithm.learning_rate=1"])  # int accepted where a float is expected
    assert cfg.coordination.expert_query_cost_weight == 1
    assert cfg.coordination.temperature == 0


def test_level_pools_of_default_splits_are_disjoint():
    cfg = compose([])
    pools = []
    for split in ("train", "val_sim", "val_true", "test"):
        node = cfg.env[split]
        assert node.num_levels > 0
        pools.append((node.start_level, node.start_level + node.num_levels))
    pools.sort()
    for (_, end), (start, _) in zip(pools, pools[1:], strict=False):
        assert end <= start


def _error(overrides) -> str:
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    msg = str(info.value)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    return msg


def test_unknown_group_option_names_value_and_choices():
    msg = _error(["algorithm=no_such_thing"])
    assert "no_such_thing" in msg
    for option in group_options("algorithm"):
        assert option in msg


def test_unknown_model_option_lists_choices():
    msg = _error(["model=resnet9000"])
    assert "resnet9000" in msg and "small_cnn" in msg and "impala" in msg


def test_unknown_top_level_key():
    msg = _error(["no_such_key=1"])
    assert "no_such_key" in msg
    assert "seed" in msg  # the valid keys at that level


def test_unknown_nested_key():
    msg = _error(["env.train.no_such_key=1"])
    assert "env.train.no_such_key" in msg
    assert "start_level" in msg and "num_levels" in msg


def test_unknown_nested_key_in_group():
    msg = _error(["coordination.alpha=0.3"])
    assert "coordination.alpha" in msg
    assert "expert_query_cost_weight" in msg


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("seed=abc", ("seed", "abc", "int")),
        ("seed=1.5", ("seed", "float", "int")),
        ("progress=maybe", ("progress", "bool")),
        ("coordination.temperature=hot", ("coordination.temperature", "float")),
        ("evaluation.splits=val_sim", ("evaluation.splits", "list")),
    ],
)
def test_wrong_type(override, words):
    msg = _error([override])
    for word in words:
        assert word in msg


def test_overlapping_level_pools():
    msg = _error(["env.val_sim.start_level=0"])
    assert "env.val_sim" in msg and "overlap" in msg


def test_unbounded_train_pool_overlaps_everything():
    msg = _error(["env.train.num_levels=0"])
    assert "overlap" in msg


def test_selection_split_test_is_refused():
    msg = _error(["coordination.selection_split=test"])
    assert "test" in msg and "val_sim" in msg and "val_true" in msg


def test_unknown_split_name():
    msg = _error(["evaluation.splits=[train,nope]"])
    assert "nope" in msg


def test_negative_cost_weight():
    msg = _error(["coordination.switch_agent_cost_weight=-0.1"])
    assert "switch_agent_cost_weight" in msg


def test_override_without_equals():
    msg = _error(["seed"])
    assert "seed" in msg


def test_bad_override_syntax():
    _error(["seed=[1"])


def test_unknown_type():
    msg = _error(["type=robot"])
    assert "robot" in msg and "agent" in msg and "coord" in msg

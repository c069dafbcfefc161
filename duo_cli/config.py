"""Hydra composition of duo's config, with one-line errors for bad input."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SPLITS = ("train", "val_sim", "val_true", "test")


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the bad value and the valid choices."""


def conf_dir() -> Path:
    """The directory holding ``config.yaml`` (``$DUO_CONF_DIR`` overrides)."""
    env = os.environ.get("DUO_CONF_DIR")
    return Path(env) if env else PROJECT_DIR / "conf"


def group_options(group: str) -> list[str]:
    """Options of a config group, e.g. ``group_options('algorithm')``."""
    path = conf_dir() / group
    return sorted(p.stem for p in path.glob("*.yaml")) if path.is_dir() else []


def _compose_raw(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _group_of(override: str) -> tuple[str, str] | None:
    key, sep, value = override.lstrip("+~").partition("=")
    if sep and (conf_dir() / key).is_dir():
        return key, value
    return None


def _keys_at(cfg: DictConfig, dotted: str) -> list[str]:
    parent = dotted.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra ``key=value`` / ``group=option`` overrides.

    ``config_name`` is ``config`` for agents and ``coord`` for coordination.

    :raises ConfigError: for an unknown group option, unknown key, bad syntax,
        or a value whose type does not match the default's.
    """
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    overrides = list(overrides)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"bad override {ov!r}: expected key=value or group=option")
        grp = _group_of(ov)
        if grp is not None:
            group, value = grp
            options = group_options(group)
            if value not in options and not value.startswith("["):
                raise ConfigError(
                    f"unknown {group} {value!r}; valid choices: {', '.join(options)}"
                )
    try:
        cfg = _compose_raw(overrides, config_name)
    except MissingConfigException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    except OverrideParseException as exc:
        raise ConfigError(f"bad override syntax: {str(exc).strip().splitlines()[0]}") from None
    except HydraException as exc:
        msg = str(exc).strip()
        key = _missing_key(msg)
        if key is not None:
            base = _compose_raw([o for o in overrides if _group_of(o) is not None], config_name)
            valid = _keys_at(base, key)
            raise ConfigError(
                f"unknown key {key!r}; valid keys here: {', '.join(valid)}"
            ) from None
        raise ConfigError(msg.splitlines()[0]) from None
    _check_types(cfg, overrides, config_name)
    _check_values(cfg)
    return cfg


def _missing_key(msg: str) -> str | None:
    # Hydra: "Could not override 'foo.bar'.\nTo append to your config use +foo.bar=1 ..."
    # or "Could not append to config. An item is already at 'x'" etc.
    import re

    match = re.search(r"Could not override '([^']+)'", msg)
    if match:
        return match.group(1)
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, ListConfig | list):
        return "list"
    if isinstance(value, DictConfig | dict):
        return "mapping"
    return type(value).__name__


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    d, v = _type_name(default), _type_name(value)
    if d == v:
        return True
    return d == "float" and v == "int"


def _check_types(cfg: DictConfig, overrides: Sequence[str], config_name: str) -> None:
    """A value override must have the type of the value it replaces."""
    value_overrides = [o for o in overrides if _group_of(o) is None and not o.startswith("+")]
    if not value_overrides:
        return
    base = _compose_raw([o for o in overrides if _group_of(o) is not None], config_name)
    for ov in value_overrides:
        key = ov.lstrip("~").partition("=")[0]
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _compatible(default, value):
            raise ConfigError(
                f"bad value for {key}: {value!r} is {_type_name(value)}, "
                f"expected {_type_name(default)} (default {default!r})"
            )


def _check_values(cfg: DictConfig) -> None:
    """Value checks that need no env or model: split names, pools, cost weights."""
    if cfg.type not in ("agent", "coord"):
        raise ConfigError(f"unknown type {cfg.type!r}; valid choices: agent, coord")
    coord = cfg.coordination
    for key in ("expert_query_cost_weight", "switch_agent_cost_weight"):
        if coord[key] < 0:
            raise ConfigError(f"coordination.{key} must be >= 0, got {coord[key]}")
    if coord.selection_split not in ("val_sim", "val_true"):
        raise ConfigError(
            f"coordination.selection_split {coord.selection_split!r} is not allowed; "
            "valid choices: val_sim, val_true (selection never uses test)"
        )
    for split in chosen_splits(cfg) or []:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    for key in ("splits", "train_splits"):
        for split in cfg.evaluation[key]:
            if split not in SPLITS:
                raise ConfigError(
                    f"unknown split {split!r} in evaluation.{key}; valid choices: "
                    f"{', '.join(SPLITS)}"
                )
    env = cfg.env
    if env.get("name") == "procgen":
        from duo_cli.envs.procgen import DISTRIBUTION_MODES, PROCGEN_GAMES

        if env.task not in PROCGEN_GAMES:
            raise ConfigError(
                f"unknown env.task {env.task!r}; valid choices: {', '.join(PROCGEN_GAMES)}"
            )
        for split in SPLITS:
            mode = env[split].distribution_mode if split in env else None
            if mode is not None and mode not in DISTRIBUTION_MODES:
                raise ConfigError(
                    f"unknown env.{split}.distribution_mode {mode!r}; valid choices: "
                    f"{', '.join(DISTRIBUTION_MODES)}"
                )
    if "train" in env:
        train = env.train
        for split in SPLITS[1:]:
            if split in env and _overlap(train, env[split]):
                raise ConfigError(
                    f"level pools of env.train and env.{split} overlap "
                    f"([{train.start_level}, +{train.num_levels}) vs "
                    f"[{env[split].start_level}, +{env[split].num_levels})); "
                    "choose disjoint start_level/num_levels"
                )


def chosen_splits(cfg: DictConfig) -> list[str] | None:
    """The splits named by ``split=`` (one name or a list), or ``None`` when unset."""
    split = cfg.get("split")
    if split is None:
        return None
    return [split] if isinstance(split, str) else list(split)


def _overlap(a: DictConfig, b: DictConfig) -> bool:
    if a.num_levels == 0 or b.num_levels == 0:
        return True
    return a.start_level < b.start_level + b.num_levels and b.start_level < a.start_level + a.num_levels


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def resolve_path(path: str | os.PathLike) -> Path:
    """A path as given if it exists, else relative to the duo project root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = PROJECT_DIR / p
    return alt if alt.exists() else p


"""Hydra composition of duo's config, checked once, before anything runs.

:func:`compose` builds a config from ``conf/`` and overrides; :func:`validate` checks
every value: each node naming a class (``model``, ``policy``, ``algorithm``, ``env``)
against that class's declared settings, looked up in the registry that
:mod:`duo_cli.catalog` fills, and the class-less groups against their dataclasses
(:mod:`duo_cli.groups`).  Bad input is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Sequence
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

import duo_cli.catalog  # noqa: F401 - fills the registry with duo's classes and plugins
from duo_cli.errors import CheckpointError, ConfigError, first_line
from duo_cli.groups import ServeSettings
from duo_cli.paths import PROJECT_DIR, conf_dir, resolve_path
from duo_cli.registry import check_kwargs, params, resolve
from duo_cli.settings import (
    SPLITS,
    VALIDATION_SPLITS,
    check_bool,
    check_choice,
    check_number,
    parse_settings,
    type_name,
)
from duo_cli.threads import check_torch_threads

__all__ = ["PROJECT_DIR", "SPLITS", "VALIDATION_SPLITS", "ConfigError", "chosen_splits",
           "compose", "conf_dir", "first_line", "group_options", "resolve_path", "to_yaml",
           "validate"]


def group_options(group: str) -> list[str]:
    """Options of a config group, e.g. ``group_options('algorithm')``."""
    path = conf_dir() / group
    return sorted(p.stem for p in path.glob("*.yaml")) if path.is_dir() else []


def _compose_raw(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


@functools.lru_cache(maxsize=64)
def _compose_defaults(group_overrides: tuple[str, ...], config_name: str, conf: str) -> DictConfig:
    """The config of the chosen group options before value overrides (read-only, cached:
    the reference :func:`_check_types` compares value overrides against)."""
    cfg = _compose_raw(group_overrides, config_name)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _base(overrides: Sequence[str], config_name: str) -> DictConfig:
    return _compose_defaults(tuple(o for o in overrides if _group_of(o) is not None),
                             config_name, str(conf_dir()))


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
    overrides = list(overrides)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"bad override {ov!r}: expected key=value or group=option")
        if not ov.lstrip("+~").partition("=")[0].strip():
            raise ConfigError(f"bad override {ov!r}: the key before '=' is empty")
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
        raise ConfigError(first_line(exc)) from None
    except OverrideParseException as exc:
        raise ConfigError(f"bad override syntax: {first_line(exc)}") from None
    except HydraException as exc:
        msg = str(exc).strip()
        key = _missing_key(msg)
        if key is not None:
            valid = _keys_at(_base(overrides, config_name), key)
            raise ConfigError(
                f"unknown key {key!r}; valid keys here: {', '.join(valid)}"
            ) from None
        raise ConfigError(msg.splitlines()[0]) from None
    _check_types(cfg, overrides, config_name)
    validate(cfg)
    return cfg


def _missing_key(msg: str) -> str | None:
    # Hydra: "Could not override 'foo.bar'.\nTo append to your config use +foo.bar=1 ..."
    # or "Could not append to config. An item is already at 'x'" etc.
    match = re.search(r"Could not override '([^']+)'", msg)
    if match:
        return match.group(1)
    return None


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    d, v = type_name(default), type_name(value)
    if d == v:
        return True
    return d == "float" and v == "int"


def _check_types(cfg: DictConfig, overrides: Sequence[str], config_name: str) -> None:
    """A value override must have the type of the value it replaces."""
    value_overrides = [o for o in overrides if _group_of(o) is None and not o.startswith("+")]
    if not value_overrides:
        return
    base = _base(overrides, config_name)
    for ov in value_overrides:
        key = ov.lstrip("~").partition("=")[0]
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _compatible(default, value):
            raise ConfigError(
                f"bad value for {key}: {value!r} is {type_name(value)}, "
                f"expected {type_name(default)} (default {default!r})"
            )


def validate(cfg: DictConfig) -> None:
    """Check every value once (types, ranges, finiteness, choices) before anything runs.

    Called by :func:`compose` and on configs read from files (a coordinator's
    ``run_config``): classes are looked up in :mod:`duo_cli.registry` and their
    settings parsed into their declared :attr:`Settings` (the algorithm's then checked
    against the run by ``check_settings``); env settings by the env module's ``validate``
    hook.

    :raises ConfigError: one line naming the bad key, its value and what is valid.
    """
    _finite_everywhere(cfg, "")
    if cfg.get("type") not in ("agent", "coord"):
        raise ConfigError(f"unknown type {cfg.get('type')!r}; valid choices: agent, coord")
    check_number(cfg, "seed", integer=True, low=0)
    check_torch_threads(cfg.get("torch_threads"))
    device = cfg.get("device")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", device):
        raise ConfigError(f"unknown device {device!r}; valid choices: cpu, cuda, cuda:N, mps")
    for key in ("resume", "overwrite", "tensorboard", "progress"):
        check_bool(cfg, key)
    run_dir = cfg.get("run_dir")
    if run_dir is not None and (not isinstance(run_dir, str) or not run_dir.strip()):
        raise ConfigError(f"bad value for run_dir: {run_dir!r}; expected a path or null")
    _check_coordination(cfg)
    _check_evaluation(cfg)
    _check_env(cfg)
    _check_classes(cfg)


def _check_coordination(cfg: DictConfig) -> None:
    for key in ("expert_query_cost_weight", "switch_agent_cost_weight", "temperature"):
        check_number(cfg, f"coordination.{key}", low=0)
    check_number(cfg, "coordination.base_penalty", low=0, low_open=True, nullable=True)
    check_bool(cfg, "coordination.open_expert")
    if cfg.coordination.get("train_setting") is not None:  # absent in older run_configs
        check_choice(cfg, "coordination.train_setting", ("sim", "test"))
    check_number(cfg, "coordination.cost_decimals", integer=True, low=0, nullable=True)
    _check_alphas(cfg.coordination.get("alphas"))
    if cfg.coordination.selection_split not in VALIDATION_SPLITS:
        raise ConfigError(
            f"coordination.selection_split {cfg.coordination.selection_split!r} is not allowed; "
            "valid choices: val_sim, val_true (selection never uses test)"
        )
    for role in ("novice", "expert", "sim_novice"):
        path = OmegaConf.select(cfg, f"agents.{role}")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"bad value for agents.{role}: {path!r}; expected a checkpoint path")


def _check_alphas(alphas: Any) -> None:
    """``coordination.alphas``: null, or a non-empty list of distinct finite numbers >= 0."""
    if alphas is None:
        return
    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise ConfigError(f"coordination.alphas must be a list of numbers, got {alphas!r}") from None
    if not values or any(not math.isfinite(a) or a < 0 for a in values) or len(set(values)) < len(values):
        raise ConfigError(
            f"coordination.alphas must be distinct finite numbers >= 0, got {list(alphas)}"
        )


def _check_evaluation(cfg: DictConfig) -> None:
    for key in ("num_episodes", "num_envs", "train_num_episodes"):
        check_number(cfg, f"evaluation.{key}", integer=True, low=1)
    check_number(cfg, "evaluation.temperature", low=0)
    check_bool(cfg, "evaluation.write_bp")
    split = cfg.get("split")
    if split is not None and not isinstance(split, str | ListConfig):
        raise ConfigError(f"bad value for split: {split!r}; expected a split name or a list")
    for split in chosen_splits(cfg) or []:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    for key in ("splits", "train_splits"):
        value = cfg.evaluation.get(key)
        if not isinstance(value, ListConfig):
            raise ConfigError(f"bad value for evaluation.{key}: {value!r}; expected a list")
        for split in value:
            if split not in SPLITS:
                raise ConfigError(
                    f"unknown split {split!r} in evaluation.{key}; valid choices: "
                    f"{', '.join(SPLITS)}"
                )


def _check_env(cfg: DictConfig) -> None:
    env = cfg.get("env")
    if not isinstance(env, DictConfig):
        raise ConfigError(f"bad value for env: {env!r}; expected a mapping")
    check_number(cfg, "env.num_envs", integer=True, low=1)
    factory = resolve(env.get("_target_"), "env", "env._target_")
    hook = getattr(inspect.getmodule(factory), "validate", None)
    if hook is not None:
        hook(env)  # the env module knows its tasks, modes and pool rules
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


def _check_classes(cfg: DictConfig) -> None:
    """``model``, ``policy`` and ``algorithm`` name known classes, each node's keys and values
    are the ones its class declares (the model's by its ``__init__``, the others' by their
    :attr:`Settings`), and the algorithm's settings fit the run."""
    for kind in ("model", "policy", "algorithm"):
        if not isinstance(cfg.get(kind), DictConfig):
            raise ConfigError(f"bad value for {kind}: {cfg.get(kind)!r}; expected a mapping")
    model = resolve(cfg.model.get("_target_"), "model", "model._target_")
    check_kwargs(model, {**params(cfg.model), "num_actions": 1}, "model")
    policy = resolve(cfg.policy.get("_target_"), "policy", "policy._target_")
    parse_settings(policy.Settings, cfg.policy, "policy")
    algorithm = resolve(cfg.algorithm.get("_target_"), "algorithm", "algorithm._target_")
    algorithm.check_settings(parse_settings(algorithm.Settings, cfg.algorithm, "algorithm"),
                             num_envs=int(cfg.env.num_envs))
    if "serve" in cfg:  # absent in the run_config of older coordinator checkpoints
        parse_settings(ServeSettings, cfg.serve, "serve")


def _finite_everywhere(node: Any, prefix: str) -> None:
    if isinstance(node, DictConfig):
        for key in node.keys():
            _finite_everywhere(node.get(key), f"{prefix}{key}.")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _finite_everywhere(item, f"{prefix[:-1]}[{i}].")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"bad value for {prefix[:-1]}: {node} is not a finite number")


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


#: keys a command sets for itself, never taken from a stored setting
RUN_KEYS = ("run_dir", "overwrite", "resume", "progress")


def checkpoint_config(cli_cfg: DictConfig, run_config: Any, where: str,
                      overrides: Sequence[str] | None, groups: Sequence[str] = ()) -> DictConfig:
    """The setting a coordinator checkpoint stores (``metadata.run_config``), rebuilt and
    validated like a composed config: the one way ``duo eval``, ``duo serve`` and anything
    embedding the server turn a checkpoint into a config.

    A coordinator runs in the setting it was trained in, plus ``key=value`` overrides; the
    command's own keys (:data:`RUN_KEYS`) and ``groups`` (e.g. ``serve``) come from
    ``cli_cfg``.

    :raises ConfigError: a group override, or a stored or overridden value that is bad.
    :raises CheckpointError: a stored setting that is not a config at all.
    """
    overrides = list(overrides or [])
    chosen = [o for o in overrides if _group_of(o) is not None]
    if chosen:
        method = (run_config.get("algorithm") or {}).get("name") if isinstance(
            run_config, dict) else None
        raise ConfigError(f"a coordinator checkpoint takes key=value overrides only, not "
                          f"{chosen[0]!r}: {where} was trained with algorithm={method}")
    try:
        # serve keys added since the checkpoint was written take today's values (a stored
        # serve node only matters to duo serve, which replaces it with its own)
        base = {"serve": cli_cfg.serve} if "serve" in cli_cfg else {}
        cfg = OmegaConf.merge(base, OmegaConf.create(run_config),
                              {g: cli_cfg[g] for g in groups},
                              OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
        for key in RUN_KEYS:
            cfg[key] = cli_cfg[key]
    except Exception as exc:  # noqa: BLE001 - a stored setting that is not a config
        raise CheckpointError(f"{where}: bad metadata.run_config ({first_line(exc)})") from None
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: metadata.run_config or overrides: {exc}") from None
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)

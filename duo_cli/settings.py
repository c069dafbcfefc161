"""Typed settings and value checks: the bottom layer every config check goes through.

A class declares its settings once, as a frozen dataclass whose fields carry their
type (the annotation) and their range or choices (:func:`setting`); the YAML file
gives the values.  :func:`parse_settings` turns a config node into that dataclass
or refuses it with one line naming the key, the bad value and what is allowed::

    @dataclass(frozen=True)
    class Settings:
        p: float = setting(low=0, high=1, doc="probability of querying the expert")

Imports nothing of duo's but :mod:`duo_cli.errors`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from duo_cli.errors import ConfigError

SPLITS = ("train", "val_sim", "val_true", "test")
#: the splits a validator may select on (YRC-0's simulated one, the oracle); never test
VALIDATION_SPLITS = ("val_sim", "val_true")
#: keys of a config node that are not settings: the class it names and its label
IDENTITY_KEYS = ("_target_", "name")

_MISSING = object()


def setting(*, low: float | None = None, high: float | None = None, low_open: bool = False,
            choices: Sequence[Any] | None = None, doc: str = "") -> Any:
    """A settings field: its range (``[low, high]``, ``(low, ...`` with ``low_open``) or
    its ``choices``; for a list, every item's.  The value comes from the YAML."""
    return dataclasses.field(metadata={"low": low, "high": high, "low_open": low_open,
                                       "choices": tuple(choices) if choices else None,
                                       "doc": doc})


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a class that has none."""


def settings_fields(cls: type) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(name, type, metadata)`` of every declared setting of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)]


def parse_settings(cls: type, node: Mapping[str, Any] | None, where: str) -> Any:
    """The dataclass ``cls`` filled from ``node``; every key declared, every value checked.

    :param where: the node's dotted path in messages (``"policy"``, ``"algorithm"``).
    :raises ConfigError: one line naming the key, the bad value and what is allowed.
    """
    data = _plain(node or {})
    declared = {name for name, _, _ in settings_fields(cls)}
    unknown = sorted(k for k in data if k not in declared and k not in IDENTITY_KEYS)
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys here: {valid}")
    values = {}
    for name, hint, meta in settings_fields(cls):
        value = data.get(name, _MISSING)
        if value is _MISSING:
            raise ConfigError(f"missing key {where}.{name}; expected {describe(hint, meta)}")
        values[name] = check_value(f"{where}.{name}", value, hint, meta)
    return cls(**values)


def describe(hint: Any, meta: Mapping[str, Any]) -> str:
    """What a setting allows, in words (``"a number in [0, 1]"``)."""
    optional, base = _split_optional(hint)
    origin = typing.get_origin(base)
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(base)[:1] or (Any,)
        text = f"a list of {_describe_one(item, meta, plural=True)}"
    elif _is_union(base):
        text = " or ".join(_describe_one(a, meta) for a in typing.get_args(base))
    else:
        text = _describe_one(base, meta)
    return f"{text} or null" if optional else text


def check_value(key: str, value: Any, hint: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against the type ``hint`` and ``meta``'s range/choices; returns it
    as that type (an int where a float is declared becomes a float)."""
    meta = meta or {}
    optional, base = _split_optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"bad value for {key}: null; expected {describe(hint, meta)}")
    origin = typing.get_origin(base)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"bad value for {key}: {value!r} is {type_name(value)}, "
                              f"expected {describe(hint, meta)}")
        (item,) = typing.get_args(base)[:1] or (Any,)
        return [check_value(f"{key}[{i}]", v, item, meta) for i, v in enumerate(value)]
    if _is_union(base):  # e.g. str | list[str]: the first alternative that takes it
        for alt in typing.get_args(base):
            try:
                return check_value(key, value, alt, meta)
            except ConfigError:
                continue
        raise ConfigError(f"bad value for {key}: {value!r}; expected {describe(hint, meta)}")
    return _check_scalar(key, value, base, meta)


def _check_scalar(key: str, value: Any, typ: Any, meta: Mapping[str, Any]) -> Any:
    expected = _describe_one(typ, meta)
    if typ is Any:
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"bad value for {key}: {value!r}; expected true or false")
        return value
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                typ is int and not isinstance(value, int)):
            raise ConfigError(f"bad value for {key}: {value!r} is {type_name(value)}, "
                              f"expected {expected}")
        _check_range(key, value, meta)
        return typ(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"bad value for {key}: {value!r} is {type_name(value)}, "
                              f"expected {expected}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"unknown {key} {value!r}; valid choices: {', '.join(choices)}")
        return value
    if typing.get_origin(typ) in (dict, Mapping) or typ in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"bad value for {key}: {value!r} is {type_name(value)}, "
                              "expected a mapping")
        return dict(value)
    raise TypeError(f"{key}: settings of type {typ!r} are not supported")


def _check_range(key: str, value: float, meta: Mapping[str, Any]) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"bad value for {key}: {value} is not a finite number")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        raise ConfigError(f"bad value for {key}: {value}; must be "
                          f"{'>' if meta.get('low_open') else '>='} {low}")
    if high is not None and value > high:
        raise ConfigError(f"bad value for {key}: {value}; must be <= {high}")


def _describe_one(typ: Any, meta: Mapping[str, Any], plural: bool = False) -> str:
    if typ is bool:
        return "true or false"
    if typ in (int, float):
        noun = ("ints" if plural else "an int") if typ is int else ("numbers" if plural
                                                                     else "a number")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and high is not None:
            return f"{noun} in {'(' if meta.get('low_open') else '['}{low}, {high}]"
        if low is not None:
            return f"{noun} {'>' if meta.get('low_open') else '>='} {low}"
        return f"{noun} <= {high}" if high is not None else noun
    if typ is str:
        choices = meta.get("choices")
        return f"one of {', '.join(choices)}" if choices else ("strings" if plural else "a string")
    return "a mapping" if typing.get_origin(typ) in (dict, Mapping) or typ in (dict, Mapping) \
        else str(typ)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _split_optional(hint: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``X | None``; ``(False, hint)`` otherwise."""
    if not _is_union(hint):
        return False, hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    if len(args) == 1:
        return optional, args[0]
    return optional, Union[tuple(args)]  # noqa: UP007 - built from a runtime tuple


def _plain(node: Any) -> dict[str, Any]:
    """A config node as plain Python containers (OmegaConf nodes resolved)."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


# -- value checks of single keys (the groups without a class: seed, env pools, ...) ------


_YAML_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
               (Mapping, "mapping"), (Sequence, "list"))


def type_name(value: Any) -> str:
    """The YAML name of ``value``'s type (bool, int, float, str, list, mapping)."""
    for typ, name in _YAML_TYPES:  # bool before int: a bool is an int in Python
        if isinstance(value, typ):
            return name
    return type(value).__name__


def _get(cfg: Any, key: str) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key, default=None)
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_number(cfg: Any, key: str, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 nullable: bool = False, where: str = "") -> None:
    """``cfg.<key>`` is a finite number (an int if ``integer``) within ``[low, high]``.

    ``where`` prefixes the key in the message (``"env.train."``).
    """
    hint = int if integer else float
    check_value(where + key, _get(cfg, key), hint | None if nullable else hint,
                {"low": low, "high": high, "low_open": low_open})


def check_bool(cfg: Any, key: str, where: str = "") -> None:
    check_value(where + key, _get(cfg, key), bool)


def check_choice(cfg: Any, key: str, choices: Sequence[str], where: str = "") -> None:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"unknown {where + key} {value!r}; valid choices: {', '.join(choices)}")


def check_pools(env_cfg: Any, min_levels: int) -> None:
    """Every split's level pool: ``start_level`` and ``seed`` ints >= 0, ``num_levels`` >= ``min_levels``."""
    for split in SPLITS:
        if split in env_cfg:
            where = f"env.{split}."
            check_number(env_cfg[split], "start_level", integer=True, low=0, where=where)
            check_number(env_cfg[split], "num_levels", integer=True, low=min_levels, where=where)
            check_number(env_cfg[split], "seed", integer=True, low=0, where=where)

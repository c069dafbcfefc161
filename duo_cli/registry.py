"""Resolve the ``_target_`` of a config node to a class.

A config node names its class by import path (``_target_: pkg.module.Class``),
so a new method is one class plus one YAML file.  Code that prefers short
names can register them with :func:`register` (or the ``register_algorithm``
/ ``register_policy`` / ``register_model`` aliases).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

_REGISTRY: dict[str, type] = {}


def register(name: str, cls: type) -> type:
    """Make ``_target_: name`` resolve to ``cls``."""
    _REGISTRY[name] = cls
    return cls


register_algorithm = register_policy = register_model = register


def resolve(target: str) -> type:
    """Return the class named by ``target`` (a registered name or an import path)."""
    if target in _REGISTRY:
        return _REGISTRY[target]
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ValueError(f"unknown _target_ {target!r}: not registered and not an import path")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import _target_ {target!r}: {exc}") from None


def params(node: Mapping[str, Any]) -> dict[str, Any]:
    """The node's keys other than ``_target_`` and ``name``, as plain Python values."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {k: v for k, v in dict(data).items() if k not in ("_target_", "name")}

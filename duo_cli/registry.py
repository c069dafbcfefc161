"""The closed set of classes a config or a file may name with ``_target_``: a lookup table.

A config node names its class (``_target_: duo_cli.models.cnn.SmallCNN``), so a
new method is one class plus one YAML file.  The name is *looked up*, never
imported: the table holds what was registered into it, by kind.  duo's own
models, policies, algorithms and env factories, and what installed packages
declare under the entry point groups ``duo_cli.models``, ``duo_cli.policies``,
``duo_cli.algorithms`` and ``duo_cli.envs``, are registered by
:mod:`duo_cli.catalog`, which sits above the classes; this module imports nothing
of duo's but the errors, so a checkpoint or a summary cannot make duo import a
module or call a function it did not already know.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from duo_cli.errors import UnknownTargetError
from duo_cli.settings import IDENTITY_KEYS

KINDS = ("model", "policy", "algorithm", "env")

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def qualified_name(obj: Any) -> str:
    """The name a built-in class or factory is registered under (``module.QualName``)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def register(kind: str, obj: Any, name: str | None = None) -> Any:
    """Make ``_target_: name`` (default: :func:`qualified_name`) resolve to ``obj``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid choices: {', '.join(KINDS)}")
    if kind == "env" and not callable(obj) or kind != "env" and not isinstance(obj, type):
        raise TypeError(f"cannot register {obj!r} as a {kind}")
    _REGISTRY[kind].setdefault(name or qualified_name(obj), obj)
    return obj


def register_model(name: str, cls: type) -> type:
    return register("model", cls, name)


def register_policy(name: str, cls: type) -> type:
    return register("policy", cls, name)


def register_algorithm(name: str, cls: type) -> type:
    return register("algorithm", cls, name)


def register_env(name: str, factory: Callable) -> Callable:
    """An env factory ``factory(env_cfg, split, num_envs)``; its module may define ``validate``."""
    return register("env", factory, name)


def known(kind: str) -> list[str]:
    """The names ``_target_`` may take for ``kind`` (model, policy, algorithm, env)."""
    return sorted(_REGISTRY[kind])


def registered(kind: str) -> dict[str, Any]:
    """name -> class (or env factory) of every registered ``kind``."""
    return dict(_REGISTRY[kind])


def resolve(target: Any, kind: str | None = None, where: str = "_target_") -> Any:
    """Look ``target`` up among the known classes of ``kind`` (any kind if None); never imports.

    :param where: names the value in the error, e.g. ``"model._target_ in novice.pt"``.
    :raises UnknownTargetError: when ``target`` is not a known name of that kind.
    """
    if kind is None:
        kind = next((k for k in KINDS if isinstance(target, str) and target in _REGISTRY[k]),
                    "model")
    if isinstance(target, str) and target in _REGISTRY[kind]:
        return _REGISTRY[kind][target]
    other = [k for k in KINDS if k != kind and isinstance(target, str) and target in _REGISTRY[k]]
    hint = f" (it is a {other[0]}, not a {kind})" if other else ""
    raise UnknownTargetError(
        f"{where} {target!r} is not a known {kind}{hint}; valid choices: "
        f"{', '.join(known(kind))} (plugins register through the entry point group "
        f"duo_cli.{kind}s)"
    )


def check_kwargs(cls: Any, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``kwargs`` if ``cls.__init__`` declares each of them by name, else a one-line error."""
    sig = inspect.signature(cls.__init__ if isinstance(cls, type) else cls)
    declared = [
        name for name, p in sig.parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(declared))
    if unknown:
        raise UnknownTargetError(
            f"{where}: {cls.__name__} takes no argument {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(declared)}"
        )
    return dict(kwargs)


def params(node: Mapping[str, Any]) -> dict[str, Any]:
    """The node's keys other than ``_target_`` and ``name``, as plain Python values."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {k: v for k, v in dict(data).items() if k not in IDENTITY_KEYS}

"""The closed set of classes a config or a file may name with ``_target_``.

A config node names its class (``_target_: duo_cli.models.cnn.SmallCNN``), so a
new method is one class plus one YAML file.  The name is *looked up*, never
imported: the set holds duo's own models, policies, algorithms and env
factories, what code registered with :func:`register`, and what installed
packages declare under the entry point groups ``duo_cli.models``,
``duo_cli.policies``, ``duo_cli.algorithms`` and ``duo_cli.envs``.  The set is
complete before any file is read, so a checkpoint or a summary cannot make duo
import a module or call a function it did not already know.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from duo_cli.config import ConfigError

KINDS = ("model", "policy", "algorithm", "env")

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_LOADED = False


class UnknownTargetError(ConfigError):
    """A ``_target_`` outside the closed set, of the wrong kind, or with undeclared arguments."""


def register(name: str, cls: Any, kind: str | None = None) -> Any:
    """Make ``_target_: name`` resolve to ``cls`` (kind inferred from its base class)."""
    kind = kind or _kind_of(cls)
    if kind not in KINDS:
        raise ValueError(f"cannot register {name!r}: {cls!r} is not a model, policy or algorithm")
    _REGISTRY[kind][name] = cls
    return cls


def register_model(name: str, cls: type) -> type:
    return register(name, cls, "model")


def register_policy(name: str, cls: type) -> type:
    return register(name, cls, "policy")


def register_algorithm(name: str, cls: type) -> type:
    return register(name, cls, "algorithm")


def register_env(name: str, factory: Callable) -> Callable:
    """An env factory ``factory(env_cfg, split, num_envs)``; its module may define ``validate``."""
    return register(name, factory, "env")


def _kind_of(cls: Any) -> str | None:
    from torch import nn

    from duo_cli.algorithms.base import Algorithm
    from duo_cli.policies.base import Policy

    if not isinstance(cls, type):
        return None
    for kind, base in (("model", nn.Module), ("policy", Policy), ("algorithm", Algorithm)):
        if issubclass(cls, base):
            return kind
    return None


def _builtins() -> tuple[list[type], list[Callable]]:
    from duo_cli.algorithms.ppo import PPO
    from duo_cli.algorithms.search import Always, AskEveryKSearch, LogitSearch, OODSearch, RandomSearch
    from duo_cli.envs.minigrid import make_minigrid
    from duo_cli.envs.procgen import make_procgen
    from duo_cli.models.cnn import ImpalaCNN, SmallCNN
    from duo_cli.models.grid import GridCNN
    from duo_cli.policies.agent import AgentPolicy
    from duo_cli.policies.always import AlwaysPolicy
    from duo_cli.policies.ask_every_k import AskEveryKPolicy
    from duo_cli.policies.coord_ppo import CoordPPOPolicy
    from duo_cli.policies.logit import LogitPolicy
    from duo_cli.policies.ood import OODPolicy
    from duo_cli.policies.random import RandomPolicy

    return [
        SmallCNN, ImpalaCNN, GridCNN,
        AgentPolicy, AlwaysPolicy, AskEveryKPolicy, CoordPPOPolicy, LogitPolicy, OODPolicy,
        RandomPolicy,
        PPO, Always, AskEveryKSearch, LogitSearch, OODSearch, RandomSearch,
    ], [make_procgen, make_minigrid]


def _load() -> None:
    """Fill the set once: duo's own classes, then installed plugins' entry points."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    classes, envs = _builtins()
    for obj in classes:
        _REGISTRY[_kind_of(obj)].setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    for obj in envs:
        _REGISTRY["env"].setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    from importlib.metadata import entry_points

    for kind in KINDS:
        for ep in entry_points(group=f"duo_cli.{kind}s"):
            # the name in files is the entry point's name; loading imports installed code only
            _REGISTRY[kind].setdefault(ep.name, ep.load())


def known(kind: str) -> list[str]:
    """The names ``_target_`` may take for ``kind`` (model, policy, algorithm, env)."""
    _load()
    return sorted(_REGISTRY[kind])


def resolve(target: Any, kind: str | None = None, where: str = "_target_") -> Any:
    """Look ``target`` up among the known classes of ``kind`` (any kind if None); never imports.

    :param where: names the value in the error, e.g. ``"model._target_ in novice.pt"``.
    :raises UnknownTargetError: when ``target`` is not a known name of that kind.
    """
    _load()
    if kind is None:
        kind = next((k for k in KINDS if isinstance(target, str) and target in _REGISTRY[k]),
                    "model")
    if not isinstance(target, str) or target not in _REGISTRY[kind]:
        other = [k for k in KINDS if k != kind and isinstance(target, str) and target in _REGISTRY[k]]
        hint = f" (it is a {other[0]}, not a {kind})" if other else ""
        raise UnknownTargetError(
            f"{where} {target!r} is not a known {kind}{hint}; valid choices: "
            f"{', '.join(known(kind))} (plugins register through the entry point group "
            f"duo_cli.{kind}s)"
        )
    obj = _REGISTRY[kind][target]
    if kind == "env" and not callable(obj) or kind != "env" and _kind_of(obj) != kind:
        raise UnknownTargetError(f"{where} {target!r} is registered but is not a {kind}")
    return obj


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
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {k: v for k, v in dict(data).items() if k not in ("_target_", "name")}

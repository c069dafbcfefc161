"""Base environments. Each env config names its factory with ``_target_``."""

from __future__ import annotations

import inspect
from typing import Any

from duo_cli.registry import resolve


def make_env(env_cfg: Any, split: str, num_envs: int) -> Any:
    """Build the vector env of ``split`` (train, val_sim, val_true, test)."""
    return resolve(env_cfg.get("_target_"), "env", "env._target_")(env_cfg, split, int(num_envs))


def single_layout(env_cfg: Any, split: str) -> bool:
    """Whether every level of ``split`` is the same layout: a pool of one level, or what the
    env module's ``single_layout(env_cfg, split)`` hook declares (e.g. MiniGrid DistShift)."""
    factory = resolve(env_cfg.get("_target_"), "env", "env._target_")
    hook = getattr(inspect.getmodule(factory), "single_layout", None)
    one = int(env_cfg[split].get("num_levels", 0)) == 1
    return one or bool(hook is not None and hook(env_cfg, split))

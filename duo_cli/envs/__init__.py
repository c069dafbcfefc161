"""Base environments. Each env config names its factory with ``_target_``."""

from __future__ import annotations

from typing import Any

from duo_cli.registry import resolve


def make_env(env_cfg: Any, split: str, num_envs: int) -> Any:
    """Build the vector env of ``split`` (train, val_sim, val_true, test)."""
    return resolve(env_cfg.get("_target_"), "env", "env._target_")(env_cfg, split, int(num_envs))

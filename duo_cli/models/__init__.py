"""Models: actor-critic networks exposing logits, value and hidden features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duo_cli.models.base import Model, ModelOutput
from duo_cli.registry import check_kwargs, params, resolve

__all__ = ["Model", "ModelOutput", "build_model"]


def build_model(cfg: Mapping[str, Any], where: str = "model", **kwargs: Any) -> Model:
    """Instantiate the model a config node describes, e.g. ``build_model(cfg.model, num_actions=15)``.

    The class comes from the closed set of :mod:`duo_cli.registry` and gets only
    the keyword arguments its ``__init__`` declares.
    """
    cls = resolve(cfg.get("_target_"), "model", f"{where}._target_")
    return cls(**check_kwargs(cls, {**params(cfg), **kwargs}, where))

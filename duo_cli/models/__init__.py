"""Models: actor-critic networks exposing logits, value and hidden features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duo_cli.models.base import Model, ModelOutput
from duo_cli.registry import params, resolve

__all__ = ["Model", "ModelOutput", "build_model"]


def build_model(cfg: Mapping[str, Any], **kwargs: Any) -> Model:
    """Instantiate the model a config node describes, e.g. ``build_model(cfg.model, num_actions=15)``."""
    cls = resolve(cfg["_target_"])
    return cls(**{**params(cfg), **kwargs})

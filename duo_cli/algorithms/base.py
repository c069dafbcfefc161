"""The Algorithm interface: an algorithm learns (or selects) a policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duo_cli.run import RunContext


class Algorithm:
    """Base class: ``Algorithm(cfg, ctx).train(policy, env, evaluators)``.

    :param cfg: the ``algorithm`` config node.
    :param ctx: run dir, device, seed and console of this run.
    """

    def __init__(self, cfg: Mapping[str, Any], ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> dict[str, Any]:
        """Improve ``policy`` on ``env``; ``evaluators`` (split -> Evaluator) score it."""
        raise NotImplementedError

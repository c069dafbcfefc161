"""The Algorithm interface, its result, and the keeper of the best policy per split."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duo_cli.checkpoint import load_checkpoint, save_policy
from duo_cli.evaluation.statistics import without_episodes
from duo_cli.rundir import RunContext
from duo_cli.settings import NoSettings, parse_settings


@dataclass
class Selected:
    """The best policy found on one validation split.

    :param result: its evaluation on that split (per-episode lists dropped).
    :param params: ``policy.get_params()`` of that policy (a copy).
    :param selected: what was selected (a global step, a candidate's parameters).
    :param path: the ``best_<split>.pt`` it was saved to.
    """

    split: str
    result: dict[str, Any]
    params: dict[str, Any]
    selected: dict[str, Any]
    path: Path


@dataclass
class AlgorithmResult:
    """What :meth:`Algorithm.train` hands back to the runner.

    :param best: split -> the best policy on it (the runner scores it on test without
        re-playing the selection split).
    :param summary: plain data for ``train_result.json`` / a summary's ``train`` entry.
    """

    best: dict[str, Selected] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class BestKeeper:
    """Keeps the best policy per split: saves ``best_<split>.pt`` and remembers it.

    :param run_dir: where the checkpoints go.
    :param metadata: plain data stored in every checkpoint (the run's metadata).
    """

    def __init__(self, run_dir: Path, metadata: Mapping[str, Any]):
        self.run_dir = Path(run_dir)
        self.metadata = dict(metadata)
        self.best: dict[str, Selected] = {}

    def offer(self, split: str, result: Mapping[str, Any], policy: Any,
              selected: dict[str, Any], **meta: Any) -> bool:
        """Keep ``policy`` if ``result`` beats the best on ``split`` so far; True if kept."""
        best = self.best.get(split)
        if best is not None and not result["reward_mean"] > best.result["reward_mean"]:
            return False
        summary = without_episodes(dict(result))
        path = self.run_dir / f"best_{split}.pt"
        save_policy(path, policy, {**self.metadata, **meta, "eval": {split: summary},
                                   "selected_on": split, "selected": selected})
        self.best[split] = Selected(split, summary, copy.deepcopy(policy.get_params()),
                                    selected, path)
        return True

    def restore(self, splits: list[str], map_location: Any = "cpu") -> None:
        """Re-read the ``best_<split>.pt`` a resumed run saved before its interruption."""
        for split in splits:
            path = self.run_dir / f"best_{split}.pt"
            if split in self.best or not path.is_file():
                continue
            ckpt = load_checkpoint(path, map_location=map_location)
            meta = ckpt["metadata"]
            self.best[split] = Selected(split, dict(meta["eval"][split]), ckpt["state_dict"],
                                        dict(meta.get("selected", {})), path)

    def scores(self) -> dict[str, float]:
        """split -> best ``reward_mean``."""
        return {split: s.result["reward_mean"] for split, s in self.best.items()}


class Algorithm:
    """Base class: ``Algorithm(cfg, ctx).train(policy, env, evaluators)``.

    :param cfg: the ``algorithm`` config node, parsed into the class's :attr:`Settings`.
    :param ctx: run dir, device, seed and console of this run.
    """

    #: the typed settings of the ``algorithm`` node, checked at compose time
    Settings: type = NoSettings

    #: trains a network (counted among the learned methods in the report, never the non-RL)
    learns: bool = False
    #: plays its candidates once and rescores them for every alpha of a grid (no retraining)
    shares_rollouts: bool = False

    def __init__(self, cfg: Mapping[str, Any], ctx: RunContext):
        self.name = str(cfg.get("name", type(self).__name__))
        self.settings = parse_settings(self.Settings, cfg, "algorithm")
        self.ctx = ctx

    @classmethod
    def check_settings(cls, settings: Any, num_envs: int) -> None:
        """Checks across settings and the run (e.g. a batch size against ``env.num_envs``)."""

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> AlgorithmResult:
        """Improve ``policy`` on ``env``; ``evaluators`` (split -> Evaluator) score it."""
        raise NotImplementedError

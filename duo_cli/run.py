"""The run context handed to algorithms: run dir, device, seed, console, metric sinks."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything an algorithm needs from the outside world (no global state).

    :param run_dir: where checkpoints, metrics and summaries go.
    :param device: torch device for models.
    :param seed: the run's seed.
    :param console: rich console for tables and progress.
    :param resume: continue from ``run_dir/last.pt`` when it exists.
    :param tensorboard: write TensorBoard event files (needs the ``tensorboard`` extra).
    :param metadata: extra plain data stored in every checkpoint of the run.
    """

    run_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    console: Console = field(default_factory=Console)
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    _tb: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                logger.warning("tensorboard is not installed: pip install 'duo-cli[tensorboard]'")

    @property
    def resume_checkpoint(self) -> Path | None:
        """``run_dir/last.pt`` when this run continues from it (``resume`` and it exists)."""
        path = self.run_dir / "last.pt"
        return path if self.resume and path.exists() else None

    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (and TensorBoard scalars)."""
        row = {"global_step": int(step), **metrics}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)

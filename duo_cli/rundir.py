"""The run context handed to algorithms: run dir, device, seed, console, metric sinks."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console

from duo_cli.checkpoint import TMP_SUFFIX, remove_stale_temp_files
from duo_cli.errors import ConfigError

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
        """Append one JSON line to ``metrics.jsonl`` (and TensorBoard scalars); NaN is null."""
        row = {"global_step": int(step), **metrics}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(dumps(row) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def trim_metrics(self, step: int) -> None:
        """Drop ``metrics.jsonl`` rows after ``step`` (logged after the last.pt a run resumes)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["global_step"]) > step:
                    continue
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
            kept.append(line + "\n")
        write_text(path, "".join(kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _finite(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/torch numbers unwrapped, NaN and infinities null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
        if isinstance(value, list):
            return _finite(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def dumps(data: Any, indent: int | None = None) -> str:
    """Strict JSON (no bare NaN / Infinity: they are written as null)."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename); the temp file never stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON atomically (NaN and infinities become null)."""
    write_text(path, dumps(data, indent=2) + "\n")


class RunDirClaim:
    """What one command created in its run dir, so that a failed command can take it back.

    :meth:`take` records the run dir before the command writes; :meth:`undo`
    removes the dir if the command created it, or else only the entries it
    added, and leaves everything once the command has saved a ``last.pt``
    (the run can then be resumed).  Pre-existing files are never touched.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self.created = False
        self.before: dict[str, tuple[int, int]] = {}

    def take(self, run_dir: Path, created: bool) -> None:
        self.path, self.created = Path(run_dir), created
        self.before = {} if created else {p.name: _stamp(p) for p in self.path.iterdir()}

    def undo(self) -> None:
        path = self.path
        if path is None or not path.is_dir():
            return
        last = path / "last.pt"
        if last.is_file() and self.before.get("last.pt") != _stamp(last):
            return  # training progressed: keep the run resumable
        if self.created:
            shutil.rmtree(path, ignore_errors=True)
            return
        for entry in path.iterdir():
            if entry.name not in self.before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _claim_fresh_run_dir(parent: Path, name: str) -> Path:
    """Create and return ``parent/name`` (or ``name-1``, ``name-2``, ...), the first free one.

    Each name is claimed by an exclusive ``mkdir``, so two runs started in the same second
    (two jobs side by side) get a dir each rather than writing into one.
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            run_dir = parent / (name if i == 0 else f"{name}-{i}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            return run_dir
    except OSError as exc:
        raise ConfigError(f"cannot create run dir {parent / name}: {exc.strerror or exc}") from None


def make_run_dir(cfg: DictConfig, command: str, claim: Any = None) -> Path:
    """The run dir: ``cfg.run_dir`` or a fresh timestamped one; refuses to clobber.

    ``resume=true`` continues from ``last.pt``; without one it refuses unless the
    dir is empty.  ``claim`` (a :class:`~duo_cli.rundir.RunDirClaim`) records what
    this command creates, so a failure can remove it.
    """

    if cfg.run_dir:
        run_dir = Path(cfg.run_dir).expanduser()
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"run_dir {run_dir} is a file, not a directory")
        entries = sorted(p.name for p in run_dir.iterdir()
                         if not p.name.endswith(TMP_SUFFIX)) if run_dir.is_dir() else []
        if entries and not cfg.overwrite:
            if not cfg.resume:
                raise ConfigError(
                    f"run dir {run_dir} exists and is not empty; pass resume=true or overwrite=true"
                )
            if "last.pt" not in entries:
                shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
                raise ConfigError(
                    f"resume=true, but run dir {run_dir} has no last.pt to resume from and is "
                    f"not empty ({shown}); choose another run_dir (or overwrite=true)"
                )
        created = not run_dir.exists()
    else:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.env.task}-{cfg.algorithm.name}"
        run_dir, created = _claim_fresh_run_dir(Path("runs") / command, name), True
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run dir {run_dir}: {exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"run dir {run_dir} is not writable")
    if claim is not None:
        claim.take(run_dir, created)
    remove_stale_temp_files(run_dir)  # left by a save that was killed
    return run_dir


def owns_run_dir(fn):
    """Give ``fn`` a :class:`~duo_cli.rundir.RunDirClaim`; a failed call takes its files back."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        claim = RunDirClaim()
        try:
            return fn(*args, claim=claim, **kwargs)
        except BaseException:
            claim.undo()
            raise

    return wrapper

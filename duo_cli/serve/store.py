"""The episode log of ``duo serve``: research data, one JSON line per episode plus observations.

A run dir holds:

* ``episodes.jsonl``: one JSON object per finished (``ended``, ``truncated``), reaped
  (``abandoned``) or ``interrupted`` episode: its sums, status, ``training_enabled``, the
  served setting (alpha, beta, BP, temperature, checkpoint) and its per-step columns
  (:class:`StepColumns`);
* ``observations.bin``: the base observation of every step, raw C-order rows of the
  dtype and shape in ``observations.json``, appended as the steps are served; a step's
  ``obs_row`` is its row there (what reproduces the coordinator's observation: the novice's
  features are recomputed from it by the same novice).

Each JSON line is written whole and fsynced, after the observation rows it names, before
the call that finished the episode is answered; a crash loses at most the episodes still
in flight. A torn last line (a crash mid-write) is skipped when reading; rows no line
names (an episode in flight at the crash) are never read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from duo_cli.errors import DuoError
from duo_cli.evaluation.statistics import summarize_episodes

logger = logging.getLogger(__name__)

LOG_NAME = "episodes.jsonl"
OBS_NAME = "observations.bin"
OBS_HEADER = "observations.json"
#: the layout of a log record; readers accept older records (missing columns read as null)
SCHEMA = 2
#: statuses of an episode the application finished (its return is complete)
COMPLETE = ("ended", "truncated")


@dataclass
class StepColumns:
    """An episode's steps, one list entry per step (the ``steps`` object of a log record).

    ``actor`` is ``novice`` | ``expert`` (the coordinator chose) | ``application`` (a
    ``log_action`` the application took itself).  ``p_expert`` is the coordinator's
    p(expert) at that step and ``p_choice`` the probability of the actor it chose (the
    behaviour probability); both are null on application steps, which no coordinator
    chose.  ``reward`` is what ``returns`` reported after the step, ``cost`` the step's
    coordination cost, ``model_version`` the weights that chose, ``obs_row`` the step's row
    in ``observations.bin`` (null when no observation came with the step).
    """

    actor: list[str] = field(default_factory=list)
    action: list[int | None] = field(default_factory=list)
    novice_action: list[int | None] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    p_expert: list[float | None] = field(default_factory=list)
    p_choice: list[float | None] = field(default_factory=list)
    model_version: list[str | None] = field(default_factory=list)
    obs_row: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actor)

    def to_dict(self) -> dict[str, list]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepColumns:
        """The columns of a record; a column an older writer did not log reads as nulls."""
        n = len(data.get("actor", []))
        cols = {f.name: list(data.get(f.name) or [None] * n) for f in fields(cls)}
        if any(len(v) != n for v in cols.values()):
            raise ValueError(f"step columns of unequal length: "
                             f"{ {k: len(v) for k, v in cols.items()} }")
        return cls(**cols)


class EpisodeLog:
    """Append-only JSONL file and observation rows; safe to call from several threads.

    :param path: the JSONL file (created with its parent directory).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open)
        self._obs = None
        self.row_bytes = 0
        self.rows = 0
        self.written = 0

    def open_observations(self, dtype: Any, shape: tuple[int, ...]) -> None:
        """Start logging observations of ``dtype`` and ``shape`` beside the JSONL file.

        :raises DuoError: the run dir already logs observations of another layout.
        """
        header = {"file": OBS_NAME, "dtype": np.dtype(dtype).name,
                  "shape": [int(s) for s in shape]}
        head_path = self.path.parent / OBS_HEADER
        if head_path.exists():
            old = json.loads(head_path.read_text())
            if old != header:
                raise DuoError(f"{head_path} logs observations {old}; this server's are {header}")
        else:
            tmp = head_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(header) + "\n")
            os.replace(tmp, head_path)
        self.row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        obs_path = self.path.parent / OBS_NAME
        self._obs = open(obs_path, "ab")  # noqa: SIM115 (held open)
        size = obs_path.stat().st_size
        if size % self.row_bytes:  # a torn row from a crash: no record names it
            os.truncate(obs_path, size - size % self.row_bytes)
        self.rows = size // self.row_bytes

    def add_observation(self, obs: np.ndarray) -> int | None:
        """Append one observation row; returns its row (``None`` without observation logging).

        Buffered: the rows reach the disk before the record naming them (:meth:`append`).
        """
        if self._obs is None:
            return None
        data = np.ascontiguousarray(obs).tobytes()
        if len(data) != self.row_bytes:
            raise ValueError(f"observation of {len(data)} bytes; rows hold {self.row_bytes}")
        with self._lock:
            self._obs.write(data)
            row = self.rows
            self.rows += 1
        return row

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"episode log {self.path} is closed")
            if self._obs is not None:
                self._obs.flush()
                os.fsync(self._obs.fileno())
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.written += 1

    def close(self) -> None:
        with self._lock:
            for fh in (self._fh, self._obs):
                if fh is not None:
                    fh.close()
            self._fh = self._obs = None


def log_file(path: str | os.PathLike) -> Path:
    """The JSONL file of a run dir (or the file itself)."""
    path = Path(path)
    return path / LOG_NAME if path.is_dir() else path


def read_episodes(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of an episode log (a run dir or the file); a torn last line is skipped."""
    path = log_file(path)
    records = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1 and any(s.strip() for s in lines[i + 1:]):
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
            logger.warning("%s: skipping a torn last line", path)
    return records


def read_observations(run_dir: str | os.PathLike) -> np.ndarray:
    """The logged observation rows of a run dir, memory-mapped read-only ``(rows, *shape)``.

    :raises DuoError: the run dir logs no observations.
    """
    run_dir = Path(run_dir)
    head_path = run_dir / OBS_HEADER
    if not head_path.is_file():
        raise DuoError(f"{run_dir} holds no {OBS_HEADER}: its log has no observations "
                       "(written by duo serve before observations were logged?)")
    head = json.loads(head_path.read_text())
    dtype, shape = np.dtype(head["dtype"]), tuple(head["shape"])
    row = int(np.prod(shape)) * dtype.itemsize
    data = run_dir / head["file"]
    rows = data.stat().st_size // row if data.exists() else 0
    if rows == 0:
        return np.zeros((0, *shape), dtype=dtype)
    return np.memmap(data, dtype=dtype, mode="r", shape=(rows, *shape))


def summarize_log(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``duo eval``-style results per episode status (``ended``, ``abandoned``, ...)."""

    by_status: dict[str, list] = {}
    for k, r in enumerate(records):
        by_status.setdefault(r["status"], []).append(
            (k, 0, float(r["return"]), float(r["base_return"]), int(r["length"]),
             int(r["expert_steps"]), int(r["switches"])))
    return {status: summarize_episodes(rows, len(rows), sum(r[4] for r in rows))
            for status, rows in by_status.items()}

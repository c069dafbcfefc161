"""The episode log of ``duo serve``: one JSON line per finished, abandoned or interrupted episode.

Each line is written whole and fsynced before the call that finished the episode is
answered, so a crash loses at most the episodes still in flight; a torn last line (a crash
mid-write) is skipped when reading. Tables like ``duo eval``'s are printed from it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from duo_cli.evaluation.statistics import summarize_episodes

logger = logging.getLogger(__name__)

LOG_NAME = "episodes.jsonl"


class EpisodeLog:
    """Append-only JSONL file; safe to call from several threads.

    :param path: the file (created with its parent directory).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open)
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"episode log {self.path} is closed")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_episodes(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of an episode log (a run dir or the file); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
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


def summarize_log(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``duo eval``-style results per episode status (``ended``, ``abandoned``, ...)."""

    by_status: dict[str, list] = {}
    for k, r in enumerate(records):
        by_status.setdefault(r["status"], []).append(
            (k, 0, float(r["return"]), float(r["base_return"]), int(r["length"]),
             int(r["expert_steps"]), int(r["switches"])))
    return {status: summarize_episodes(rows, len(rows), sum(r[4] for r in rows))
            for status, rows in by_status.items()}

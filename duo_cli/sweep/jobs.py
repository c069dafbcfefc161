"""The job side of ``duo sweep``: the Hydra task function and reading job dirs back.

Besides Hydra's ``.hydra/`` and the run's own files, a job dir holds ``train.log``
(the run's console output), ``duo_sweep.log`` (its Python logging: Hydra's job
logging, sent to the file only), ``status.json`` (``ok`` | ``failed``, and the torch
threads the job ran with: :mod:`duo_cli.sweep.threads`) and, for a
failed job, ``error.txt`` (a one-line error, then the traceback).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from duo_cli.commands.train_coord import train_coord
from duo_cli.config import ConfigError
from duo_cli.report.records import Point, read_points
from duo_cli.rundir import write_json
from duo_cli.summaries import JobSummary, SummaryError, read_summary
from duo_cli.sweep.args import _parse_overrides
from duo_cli.sweep.threads import job_threads, sweep_size
from duo_cli.threads import available_cores


class JobsFailed(ConfigError):
    """Some jobs of a sweep have no valid result: exit code 2, one line."""


def run_job(cfg) -> dict[str, Any]:
    """Hydra task function of ``duo sweep``: one coordination run in the Hydra job dir.

    Module level and import-only, so any launcher can pickle it.  Never raises for a
    failed run: the error goes to ``error.txt`` and ``status.json`` in the job dir
    and the sweep carries on with the other jobs.  A job dir that already holds a
    ``summary.json`` (a resumed sweep) is skipped.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    num = int(hc.job.num)
    overrides = [str(o) for o in hc.overrides.task]
    label = _label(overrides, swept_keys(Path(hc.sweep.dir)))
    status: dict[str, Any] = {"job": num, "overrides": overrides}
    if _load_summary(job_dir / "summary.json")[0] is not None:
        _say(f"job {num}: already done, skipped ({label})")
        return {**status, "status": "ok", "skipped": True}
    for stale in ("error.txt", "status.json"):
        (job_dir / stale).unlink(missing_ok=True)
    t0 = time.time()
    try:
        from rich.console import Console

        threads, why = job_threads(cfg.get("torch_threads"), hc.launcher, available_cores(),
                                   sweep_size(Path(hc.sweep.dir)))
        with read_write(cfg), open_dict(cfg):
            cfg.torch_threads = threads  # the job's share; recorded in its config.yaml
            cfg.run_dir = str(job_dir)
            # Hydra made the dir (and .hydra/ in it); continue a half-finished PPO run
            cfg.resume = (job_dir / "last.pt").is_file()
            if not cfg.resume:
                (job_dir / "metrics.jsonl").unlink(missing_ok=True)
            cfg.overwrite = True
            cfg.progress = False
        with open(job_dir / "train.log", "a") as log_fh:
            console = Console(file=log_fh, width=120, color_system=None, soft_wrap=True)
            console.print(f"torch threads: {threads} ({why})")
            train_coord(cfg, console)
        summary = read_summary(job_dir / "summary.json")
        status.update(status="ok", wall_time_s=time.time() - t0,
                      torch_threads=torch.get_num_threads())
        _say(f"job {num}: done in {time.time() - t0:.0f}s with {threads} thread(s), "
             f"{_result_line(summary)} ({label})")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed job must not stop the sweep
        line = error_line(exc)
        (job_dir / "error.txt").write_text(line + "\n\n" + traceback.format_exc())
        status.update(status="failed", error=line, wall_time_s=time.time() - t0)
        _say(f"job {num}: FAILED: {line} ({label})")
    write_json(job_dir / "status.json", status)
    return status


def _result_line(summary: JobSummary) -> str:
    """Test reward and expert fraction of a job, per alpha for an alpha-grid job."""
    if summary.grid:
        return "test reward by alpha " + " ".join(
            f"{r.alpha:g}:{_num(r.test.get('reward_mean'))}" for r in summary.results)
    test = summary.results[0].test
    return (f"test reward {_num(test.get('reward_mean'))}, "
            f"expert frac {_num(test.get('expert_frac'))}")


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def _say(line: str) -> None:
    print(f"[duo sweep] {line}", flush=True)


def _label(overrides: Sequence[str], keys: set[str] | None) -> str:
    """The overrides that vary between jobs (all of them when unknown)."""
    shown = [o for o in overrides if keys is None or _okey(o) in keys]
    return " ".join(shown) if shown else "-"


def _okey(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def varying_keys(override_lists: Sequence[Sequence[str]]) -> set[str] | None:
    """Keys whose value differs between jobs (``None``, i.e. all, for a single job)."""
    if len(override_lists) < 2:
        return None
    values: dict[str, set[str]] = {}
    for overrides in override_lists:
        for o in overrides:
            values.setdefault(_okey(o), set()).add(o.partition("=")[2])
    n = len(override_lists)
    return {k for k, v in values.items()
            if len(v) > 1 or sum(k in map(_okey, ol) for ol in override_lists) < n}


def swept_keys(sweep_dir: Path) -> set[str] | None:
    """Keys swept by a multirun (command-line sweeps and ``hydra.sweeper.params``, e.g. a
    benchmark suite's), read from Hydra's ``multirun.yaml`` in its sweep dir."""
    from omegaconf import OmegaConf

    try:
        hydra = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
        task = [str(o) for o in hydra.overrides.task]
        params = hydra.sweeper.get("params") or {}
        task = [f"{k}={v}" for k, v in params.items()] + task
        return {o.key_or_group.lstrip("+~") for o in _parse_overrides(task)
                if o.is_sweep_override()}
    except Exception:  # noqa: BLE001
        return None


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Job dirs (those holding a ``.hydra/`` snapshot) under ``sweep_dir``."""
    if not sweep_dir.is_dir():
        return []
    dirs = [p.parent for p in sweep_dir.rglob(".hydra")
            if p.is_dir() and ".submitit" not in p.parts and p.parent != sweep_dir]
    return sorted(dirs, key=_job_sort_key)


def _job_sort_key(job_dir: Path) -> tuple:
    name = job_dir.name
    return (0, int(name), "") if name.isdigit() else (1, 0, str(job_dir))


@dataclass
class Job:
    """One job dir of a sweep: ``ok`` (with its points), ``failed`` (the job raised),
    ``invalid`` (its ``summary.json`` cannot be read) or ``incomplete`` (no result yet)."""

    dir: Path
    num: int | None
    overrides: list[str]
    status: str
    points: list[Point] = field(default_factory=list)
    error: str | None = None


def _load_summary(path: Path) -> tuple[list[Point] | None, str | None]:
    """``(points, None)``, ``(None, error)`` for a bad file, ``(None, None)`` when absent."""
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"summary.json is not valid JSON ({error_line(exc)})"
    try:
        return read_points(data), None
    except SummaryError as exc:
        return None, f"bad summary.json: {exc}"


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job of a sweep dir, with its points or its one-line error."""
    from omegaconf import OmegaConf

    jobs = []
    for job_dir in _job_dirs(sweep_dir):
        try:
            overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
        except Exception:  # noqa: BLE001
            overrides = []
        num = int(job_dir.name) if job_dir.name.isdigit() else None
        status = _read_json(job_dir / "status.json") or {}
        if num is None and isinstance(status.get("job"), int):
            num = status["job"]
        job = Job(dir=job_dir, num=num, overrides=overrides, status="incomplete")
        error_file = job_dir / "error.txt"
        points, bad = _load_summary(job_dir / "summary.json")
        if status.get("status") == "failed" or (error_file.is_file() and points is None):
            job.status = "failed"
            job.error = str(status.get("error") or _first_line(error_file))
        elif bad is not None:
            job.status, job.error = "invalid", bad
        elif points is not None:
            job.status, job.points = "ok", points
        else:
            job.error = ("running or interrupted (no summary.json); resume with "
                         "sweep.resume=true")
        jobs.append(job)
    return jobs


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _first_line(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return "unknown error"
    return lines[0] if lines else "unknown error"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

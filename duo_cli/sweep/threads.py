"""Threads per job of ``duo sweep``: with ``torch_threads`` null (auto), each job gets its
share of the cores, ``max(1, cores // jobs run at once)``, where the launcher says how many
run at once or how many CPUs a job has:

* ``basic``: one job at a time, so all cores;
* ``joblib``: ``hydra.launcher.n_jobs`` (-1: one per core, as joblib counts);
* ``submitit_local``: every job at once, or ``cpus_per_task`` each when set;
* ``submitit_slurm``: ``cpus_per_task``, else the cores of the job's own allocation;
* ``ray`` / ``ray_aws``: ``ray.remote.num_cpus``, else 1 (Ray's one CPU per task);
* any other launcher: as ``basic``.

Never more jobs at once than the sweep has.  An explicit ``torch_threads=K`` always wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from duo_cli.sweep.args import _parse_overrides, _sweep_values
from duo_cli.threads import check_torch_threads, resolve_torch_threads


@dataclass(frozen=True)
class JobShare:
    """The CPUs one sweep job shares (``cores``) with the jobs running at once (``parallel``)."""

    cores: int
    parallel: int
    #: the cores are the job's own allocation, known only where it runs (Slurm)
    on_node: bool = False

    def why(self) -> str:
        if self.parallel == 1:
            return f"{self.cores} core(s) per job"
        return f"{self.cores} core(s) / {self.parallel} jobs at once"


def _joblib_workers(n_jobs: Any, cores: int) -> int:
    """Workers of ``joblib.Parallel(n_jobs=...)``: None is 1, -1 all cores, -2 all but one..."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    return max(1, cores + 1 + n) if n < 0 else max(1, n)


def job_share(launcher: Mapping[str, Any], cores: int, jobs: int | None = None) -> JobShare:
    """How a sweep job's CPUs are shared under the launcher config ``hydra.launcher``.

    :param cores: the CPUs where the jobs run (the job's own, in a job).
    :param jobs: the sweep's number of jobs, when known (caps the jobs at once).
    """
    name = str(launcher.get("_target_", "")).rsplit(".", 1)[-1]
    cpus = launcher.get("cpus_per_task")
    if name in ("SlurmLauncher", "LocalLauncher") and cpus:
        return JobShare(int(cpus), 1)
    if name == "SlurmLauncher":
        return JobShare(cores, 1, on_node=True)
    if name in ("RayLauncher", "RayAWSLauncher"):
        num = ((launcher.get("ray") or {}).get("remote") or {}).get("num_cpus")
        return JobShare(max(1, int(num or 1)), 1)
    if name == "JoblibLauncher":
        parallel = _joblib_workers(launcher.get("n_jobs"), cores)
    elif name == "LocalLauncher":  # submitit starts every job at once
        parallel = jobs or cores
    else:  # basic (and unknown launchers): one job at a time
        parallel = 1
    return JobShare(cores, max(1, min(parallel, jobs) if jobs else parallel))


def job_threads(value: Any, launcher: Mapping[str, Any], cores: int,
                jobs: int | None = None) -> tuple[int, str]:
    """The torch threads of one sweep job and why (for its log line).

    :param value: the job's ``torch_threads`` (``None`` = auto).
    """
    if check_torch_threads(value) is not None:
        return int(value), f"torch_threads={value}"
    share = job_share(launcher, cores, jobs)
    return resolve_torch_threads(None, share.parallel, share.cores), f"auto: {share.why()}"


def describe_threads(value: Any, launcher: Mapping[str, Any], cores: int, jobs: int) -> str:
    """The sweep's console line part on threads, e.g. ``1 torch thread(s) per job (auto: ...)``."""
    if value is None and job_share(launcher, cores, jobs).on_node:
        return "torch threads per job: the cores of its Slurm allocation"
    threads, why = job_threads(value, launcher, cores, jobs)
    return f"{threads} torch thread(s) per job ({why})"


def sweep_size(sweep_dir: Path) -> int | None:
    """The number of jobs of a multirun, from Hydra's ``multirun.yaml`` in its sweep dir
    (the suite's ``hydra.sweeper.params``, each replaced by a command-line override of
    the same key); ``None`` when it cannot be read."""
    try:
        hydra = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
        params = hydra.sweeper.get("params") or {}
        task = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in hydra.overrides.task]
        merged = {o.get_key_element(): o for o in _parse_overrides(task)}
        return math.prod(len(_sweep_values(o)) for o in merged.values())
    except Exception:  # noqa: BLE001 - unknown size: no cap
        return None

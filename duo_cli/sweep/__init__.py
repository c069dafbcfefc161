"""``duo sweep``: Hydra multirun cost sweeps, benchmark suites, and their report.

``duo sweep coordination.expert_query_cost_weight=0,0.5,1 algorithm=random,logit seed=1,2``
is a real Hydra multirun of the ``coord`` config; ``duo sweep benchmark=minigrid`` runs a
whole suite (``conf/benchmark/``: tasks x methods x the alpha grid x seeds, as
``hydra.sweeper.params``; a command-line override of one of its keys replaces it).
Any Hydra launcher works (``hydra/launcher=basic|joblib|submitit_local|submitit_slurm|ray``).
Every job runs :func:`run_job`; afterwards the sweep is summarised from the job dirs on
disk (:mod:`duo_cli.report`).  ``duo sweep --summarize DIR`` re-renders that summary.

duo-level options, consumed before Hydra sees the overrides:

``sweep.overwrite=true``
    sweep into an existing, non-empty sweep dir, replacing its jobs.
``sweep.resume=true``
    sweep into an existing sweep dir, skipping jobs whose dir holds a valid ``summary.json``.

Modules: :mod:`.args` (command line and validation), :mod:`.launch` (sweep dir and
Hydra's multirun), :mod:`.jobs` (the task function, reading job dirs back),
:mod:`.summarize` (files and tables).
"""

from duo_cli.sweep.args import LAUNCHERS, parse_args, sweep_overrides, validate
from duo_cli.sweep.jobs import Job, JobsFailed, collect_jobs, error_line, run_job, swept_keys
from duo_cli.sweep.launch import run_sweep
from duo_cli.sweep.summarize import build_summary, summarize, summarize_dir

__all__ = [
    "LAUNCHERS", "Job", "JobsFailed", "build_summary", "collect_jobs", "error_line",
    "parse_args", "run_job", "run_sweep", "summarize", "summarize_dir", "sweep_overrides",
    "swept_keys", "validate",
]

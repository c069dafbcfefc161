"""Launching ``duo sweep``: the sweep dir (new, resumed or overwritten), Hydra's
multirun of ``conf/coord.yaml`` with :func:`duo_cli.sweep.jobs.run_job`, then the summary."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from duo_cli.config import ConfigError, conf_dir
from duo_cli.sweep.args import (
    CONFIG_NAME,
    SweepArgs,
    _check_launcher,
    _hydra_config,
    _sweep_values,
    parse_args,
    sweep_overrides,
    validate,
)
from duo_cli.sweep.jobs import JobsFailed, _job_dirs, _label, _okey, error_line, run_job
from duo_cli.sweep.summarize import REPORT_FILES, summarize
from duo_cli.sweep.threads import describe_threads
from duo_cli.threads import available_cores

TASK_NAME = "duo_sweep"
#: default parent of sweep dirs (relative to the working directory)
SWEEP_ROOT = Path("runs") / "sweep"
#: sweep artifacts removed by sweep.overwrite=true (plus every job dir and plot)
SWEEP_FILES = ("multirun.yaml", "sweep_error.txt", *REPORT_FILES)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _new_sweep_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, i = SWEEP_ROOT / stamp, 1
    while path.exists():
        path, i = SWEEP_ROOT / f"{stamp}-{i}", i + 1
    return path


def _resolve_sweep_dir(value: str) -> Path:
    if "${" not in value:
        return Path(value).expanduser()
    from hydra.core.utils import setup_globals

    try:
        with _hydra_config([f"hydra.sweep.dir={value}"]) as cfg:
            setup_globals()
            return Path(str(cfg.hydra.sweep.dir)).expanduser()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot resolve hydra.sweep.dir={value}: {error_line(exc)}; "
                          "pass a plain path") from None


def _prepare_dir(sweep_dir: Path, args: SweepArgs) -> None:
    if not sweep_dir.exists():
        return
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep dir {sweep_dir} exists and is not a directory")
    if not any(sweep_dir.iterdir()):
        return
    if args.resume:
        return
    if not args.overwrite:
        raise ConfigError(
            f"sweep dir {sweep_dir} exists and is not empty; pass sweep.resume=true "
            "(skip finished jobs) or sweep.overwrite=true (start over)"
        )
    # overwrite: remove the previous sweep's jobs and artifacts, nothing else
    for job_dir in _job_dirs(sweep_dir):
        shutil.rmtree(job_dir, ignore_errors=True)
    shutil.rmtree(sweep_dir / ".submitit", ignore_errors=True)
    for name in SWEEP_FILES:
        (sweep_dir / name).unlink(missing_ok=True)
    for pattern in ("plot_*.png", "sweep_plot*.png"):
        for png in sweep_dir.glob(pattern):
            png.unlink()


def _check_resume(sweep_dir: Path, task_overrides: Sequence[str], hydra_overrides) -> None:
    """Refuse to resume when an existing job dir ran a different combination."""
    if any(o.lstrip("+~").startswith(("hydra.sweep.subdir", "hydra/sweeper", "hydra.sweeper"))
           for o in hydra_overrides):
        return  # not the default job numbering: no pre-check
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from omegaconf import OmegaConf

    try:
        jobs = BasicSweeper.split_arguments(sweep_overrides(task_overrides, hydra_overrides),
                                            None)[0]
    except Exception:  # noqa: BLE001 - glob sweeps etc.: no pre-check
        return
    for job_dir in _job_dirs(sweep_dir):
        if not job_dir.name.isdigit() or not (job_dir / "summary.json").is_file():
            continue
        num = int(job_dir.name)
        try:
            before = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
        except Exception:  # noqa: BLE001
            continue
        now = list(jobs[num]) if num < len(jobs) else None
        if now is None or set(now) != set(before):
            differ = None if now is None else {_okey(o) for o in set(before) ^ set(now)}
            was = _label(before, differ)
            is_ = _label(now, differ) if now is not None else "absent"
            raise ConfigError(
                f"cannot resume {sweep_dir}: job {num} ran [{was}] but is [{is_}] in this "
                "sweep; repeat the same overrides, or use a new hydra.sweep.dir"
            )


def _threads_line(args: SweepArgs, n_jobs: int) -> str:
    """The torch threads each job will use (as :func:`run_job` resolves them)."""
    first = [_sweep_values(o)[0] for o in sweep_overrides(args.task, args.hydra)]
    with _hydra_config([*first, *args.hydra]) as cfg:
        return describe_threads(cfg.get("torch_threads"), cfg.hydra.launcher,
                                available_cores(), n_jobs)


def run_sweep(overrides: Sequence[str], console) -> Path:
    """``duo sweep OVERRIDES``: validate, run the Hydra multirun, then summarise.

    :returns: the sweep dir.
    :raises ConfigError: for bad overrides, a missing launcher plugin, or an
        existing sweep dir without ``sweep.resume``/``sweep.overwrite``.
    """
    args = parse_args(overrides)
    _check_launcher(args.launcher)
    n_jobs = validate(args.task, args.hydra, args.launcher)
    sweep_dir = _resolve_sweep_dir(args.sweep_dir) if args.sweep_dir else _new_sweep_dir()
    _prepare_dir(sweep_dir, args)
    if args.resume:
        _check_resume(sweep_dir, args.task, args.hydra)
    hydra_overrides = list(args.hydra)
    given = {_okey(o) for o in hydra_overrides}
    if not any(k.startswith(("hydra/job_logging", "hydra.job_logging")) for k in given):
        # jobs log to <job dir>/duo_sweep.log only: parallel jobs do not interleave output
        hydra_overrides.append("hydra.job_logging.root.handlers=[file]")
    if "hydra.job.chdir" not in given:
        hydra_overrides.append("hydra.job.chdir=false")
    hydra_overrides.append(f"hydra.sweep.dir={_quote(str(sweep_dir.resolve()))}")
    console.print(
        f"[bold]duo sweep[/]: {n_jobs} job(s) with the {args.launcher} launcher, "
        f"{_threads_line(args, n_jobs)}, into {sweep_dir}"
        + (" (resuming: finished jobs are skipped)" if args.resume else ""),
        soft_wrap=True,
    )
    t0 = time.time()
    try:
        _multirun([*args.task, *hydra_overrides])
    except KeyboardInterrupt:
        console.print(
            f"sweep interrupted: continue with `duo sweep <same overrides> "
            f"hydra.sweep.dir={sweep_dir} sweep.resume=true`", soft_wrap=True,
        )
        raise
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - launcher / plugin failures: one line + a file
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "sweep_error.txt").write_text(
            error_line(exc) + "\n\n" + "".join(traceback.format_exception(exc))
        )
        raise ConfigError(
            f"sweep failed: {error_line(exc)} (traceback in {sweep_dir / 'sweep_error.txt'})"
        ) from None
    console.print(f"sweep finished in {time.time() - t0:.1f}s", soft_wrap=True)
    summary = summarize(sweep_dir, console)
    jobs = summary["jobs"]
    if jobs["ok"] < jobs["total"]:
        raise JobsFailed(
            f"{jobs['total'] - jobs['ok']} of {jobs['total']} job(s) without a result "
            f"(see the table above and <job dir>/error.txt); after fixing, resume with the "
            f"same overrides and hydra.sweep.dir={sweep_dir} sweep.resume=true"
        )
    return sweep_dir


def _multirun(overrides: list[str]) -> None:
    """Run Hydra's multirun of ``conf/coord.yaml`` with :func:`run_job` as the task."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException

    version.setbase("1.3")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("hydra").level)
    logging.getLogger("hydra").setLevel(logging.INFO)  # Hydra lists the jobs it launches
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(
            task_name=TASK_NAME, config_search_path=create_config_search_path(str(conf_dir()))
        )
        hydra.multirun(config_name=CONFIG_NAME, task_function=run_job,
                       overrides=[*overrides, "hydra.mode=MULTIRUN"])
    except MissingConfigException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    except HydraException as exc:
        msg = str(exc).strip().splitlines()
        raise ConfigError(msg[0] if msg else type(exc).__name__) from None
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("hydra").setLevel(saved[2])
        sys.stdout.flush()


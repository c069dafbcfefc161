"""``duo sweep``: Hydra multirun cost sweeps, with AUC tables and plots.

``duo sweep coordination.expert_query_cost_weight=0,0.5,1 algorithm=random,logit seed=1,2``
is a real Hydra multirun of the ``coord`` config: Hydra's sweep syntax, one job per
combination, one job dir (with its ``.hydra/`` snapshot) per job under the sweep dir,
and any Hydra launcher (``hydra/launcher=basic|joblib|submitit_local|submitit_slurm|ray``).
Every job runs :func:`run_job`, which calls :func:`duo_cli.commands.train_coord.train_coord`
with the job dir as ``run_dir``.  Afterwards the sweep is summarised from the job
dirs on disk (so remote launchers work too): per task and method, the test reward
and expert fraction at each cost weight alpha, the area under the reward-vs-alpha
curve (AUC) with a bootstrap CI, the ratio to the skyline's AUC, wins per method,
and the failed jobs.  ``duo sweep --summarize DIR`` re-renders that summary.

duo-level options, consumed before Hydra sees the overrides:

``sweep.overwrite=true``
    sweep into an existing, non-empty sweep dir, replacing its jobs.
``sweep.resume=true``
    sweep into an existing sweep dir, skipping jobs whose dir holds a ``summary.json``.

Besides Hydra's ``.hydra/`` and the run's own files, a job dir holds ``train.log``
(the run's console output), ``duo_sweep.log`` (its Python logging: Hydra's job
logging, sent to the file only), ``status.json`` (``ok`` | ``failed``) and, for a
failed job, ``error.txt`` (a one-line error, then the traceback).
"""

from __future__ import annotations

import csv
import fnmatch
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duo_cli.config import ConfigError, compose, conf_dir, group_options
from duo_cli.evaluation.statistics import mean_ci95
from duo_cli.rundir import write_json
from duo_cli.tables import fmt

logger = logging.getLogger(__name__)

CONFIG_NAME = "coord"
TASK_NAME = "duo_sweep"
#: default parent of sweep dirs (relative to the working directory)
SWEEP_ROOT = Path("runs") / "sweep"
SWEEP_FLAGS = ("overwrite", "resume")
#: keys a sweep sets per job itself
RESERVED = {
    "run_dir": "run_dir is set per job by duo sweep (the job's Hydra dir); "
               "choose the sweep dir with hydra.sweep.dir=DIR",
    "resume": "use sweep.resume=true to resume a sweep",
    "overwrite": "use sweep.overwrite=true to overwrite a sweep dir",
}
#: launcher -> (python module that provides it, the pip install hint when it is missing)
LAUNCHERS: dict[str, tuple[tuple[str, ...], str] | None] = {
    "basic": None,
    "joblib": (("hydra_plugins.hydra_joblib_launcher", "joblib"), "pip install 'duo-cli'"),
    "submitit_local": (("hydra_plugins.hydra_submitit_launcher", "submitit"),
                       "pip install 'duo-cli[slurm]'"),
    "submitit_slurm": (("hydra_plugins.hydra_submitit_launcher", "submitit"),
                       "pip install 'duo-cli[slurm]'"),
    "ray": (("hydra_plugins.hydra_ray_launcher", "ray"), "pip install 'duo-cli[ray]'"),
    "ray_aws": (("hydra_plugins.hydra_ray_launcher", "ray"), "pip install 'duo-cli[ray]'"),
}
#: sweep artifacts removed by sweep.overwrite=true (plus every job dir)
SWEEP_FILES = ("multirun.yaml", "sweep_summary.json", "sweep_summary.csv", "sweep_error.txt")
SKYLINE = "skyline"
N_BOOT = 1000
BOOT_SEED = 0


# -- the job ---------------------------------------------------------------------------


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
    if (job_dir / "summary.json").is_file():
        _say(f"job {num}: already done, skipped ({label})")
        return {**status, "status": "ok", "skipped": True}
    for stale in ("error.txt", "status.json"):
        (job_dir / stale).unlink(missing_ok=True)
    t0 = time.time()
    try:
        from rich.console import Console

        from duo_cli.commands.train_coord import train_coord

        with read_write(cfg), open_dict(cfg):
            cfg.run_dir = str(job_dir)
            # Hydra made the dir (and .hydra/ in it); continue a half-finished PPO run
            cfg.resume = (job_dir / "last.pt").is_file()
            if not cfg.resume:
                (job_dir / "metrics.jsonl").unlink(missing_ok=True)
            cfg.overwrite = True
            cfg.progress = False
        with open(job_dir / "train.log", "a") as log_fh:
            console = Console(file=log_fh, width=120, color_system=None, soft_wrap=True)
            train_coord(cfg, console)
        summary = json.loads((job_dir / "summary.json").read_text())
        test = summary.get("test", {})
        status.update(status="ok", wall_time_s=time.time() - t0,
                      reward_mean=test.get("reward_mean"), expert_frac=test.get("expert_frac"))
        _say(f"job {num}: done in {time.time() - t0:.0f}s, test reward "
             f"{_num(test.get('reward_mean'))}, expert frac {_num(test.get('expert_frac'))} "
             f"({label})")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed job must not stop the sweep
        line = error_line(exc)
        (job_dir / "error.txt").write_text(line + "\n\n" + traceback.format_exc())
        status.update(status="failed", error=line, wall_time_s=time.time() - t0)
        _say(f"job {num}: FAILED: {line} ({label})")
    write_json(job_dir / "status.json", status)
    return status


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
    """Keys swept by a multirun, read from Hydra's ``multirun.yaml`` in its sweep dir."""
    from omegaconf import OmegaConf

    try:
        task = [str(o) for o in OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra.overrides.task]
        return {o.key_or_group.lstrip("+~") for o in _parse_overrides(task)
                if o.is_sweep_override()}
    except Exception:  # noqa: BLE001
        return None


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


# -- launching ---------------------------------------------------------------------------


@dataclass
class SweepArgs:
    """The command line of a sweep, split up."""

    overwrite: bool = False
    resume: bool = False
    sweep_dir: str | None = None
    launcher: str = "basic"
    task: list[str] = field(default_factory=list)   # job overrides (may sweep)
    hydra: list[str] = field(default_factory=list)  # hydra.* / hydra/* overrides


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().strip("'\"").lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"bad value for {key}: {value!r}; expected true or false")


def parse_args(overrides: Sequence[str]) -> SweepArgs:
    """Split the sweep's command line into duo flags, Hydra's own and the jobs' overrides."""
    args = SweepArgs()
    for ov in overrides:
        if ov in ("-m", "--multirun"):
            continue
        if ov.startswith("-"):
            raise ConfigError(f"unknown option {ov!r} for duo sweep; valid: --summarize DIR")
        if "=" not in ov:
            raise ConfigError(f"bad override {ov!r}: expected key=value or group=option")
        key, _, value = ov.partition("=")
        bare = key.lstrip("+~")
        if bare.startswith("sweep.") or bare == "sweep":
            flag = bare.partition(".")[2]
            if flag not in SWEEP_FLAGS:
                raise ConfigError(
                    f"unknown sweep option {bare!r}; valid: "
                    + ", ".join(f"sweep.{f}" for f in SWEEP_FLAGS)
                )
            setattr(args, flag, _parse_bool(bare, value))
        elif bare in RESERVED:
            raise ConfigError(f"{bare} cannot be set in a sweep: {RESERVED[bare]}")
        elif bare.startswith("hydra.") or bare.startswith("hydra/"):
            if bare == "hydra.sweep.dir":
                args.sweep_dir = value.strip().strip("'\"")
                continue
            if bare == "hydra/launcher":
                args.launcher = value.strip()
            args.hydra.append(ov)
        else:
            args.task.append(ov)
    if args.overwrite and args.resume:
        raise ConfigError("sweep.overwrite and sweep.resume exclude each other; pass one")
    return args


def _check_launcher(name: str) -> None:
    presets = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))
    if name in presets:
        return
    if name not in LAUNCHERS:
        raise ConfigError(
            f"unknown hydra/launcher {name!r}; valid choices: "
            + ", ".join(sorted({*LAUNCHERS, *presets}))
        )
    need = LAUNCHERS[name]
    if need is None:
        return
    modules, hint = need
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            extra = re.search(r"\[(\w+)\]", hint)
            what = f"the {extra.group(1)} extra" if extra else f"the {module} package"
            raise ConfigError(f"hydra/launcher={name} needs {what}: {hint}")


def _parse_overrides(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(
            f"bad override syntax: {str(exc).strip().splitlines()[0]}"
        ) from None


def _sweep_values(override) -> list[str]:
    """The values of one parsed override, as override strings of a single job."""
    from hydra.core.override_parser.types import ValueType

    key = override.get_key_element()
    if override.is_delete() and override.value() is None:
        return [key]
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        glob = override.value()
        options = group_options(override.key_or_group)
        chosen = [o for o in options if any(fnmatch.fnmatch(o, g) for g in glob.include)
                  and not any(fnmatch.fnmatch(o, g) for g in glob.exclude)]
        if not chosen:
            raise ConfigError(f"{key}: glob matches no option; valid choices: "
                              + ", ".join(options))
        return [f"{key}={o}" for o in chosen]
    if not override.is_discrete_sweep():
        raise ConfigError(
            f"{key}: {override.value_type.name.lower()} sweeps need an optimizing sweeper; "
            "use a,b,c or range(start,stop,step)"
        )
    values = [f"{key}={v}" for v in override.sweep_string_iterator()]
    if not values:
        raise ConfigError(f"{key}: the sweep is empty")
    return values


def validate(task_overrides: Sequence[str], hydra_overrides: Sequence[str] = (),
             launcher: str = "basic", max_checks: int = 40) -> int:
    """Compose the first job's config, then each other swept value once, then the
    Hydra config (launcher keys etc.) of the first job.

    :returns: the number of jobs of the sweep.
    :raises ConfigError: naming the first bad override.
    """
    per_key = [_sweep_values(o) for o in _parse_overrides(task_overrides)]
    first = [values[0] for values in per_key]
    compose(first, CONFIG_NAME)
    checks = 0
    for i, values in enumerate(per_key):
        for value in values[1:]:
            if checks >= max_checks:
                break
            compose([*first[:i], value, *first[i + 1:]], CONFIG_NAME)
            checks += 1
    if hydra_overrides:
        _check_hydra(first, hydra_overrides, launcher)
    return int(np.prod([len(v) for v in per_key])) if per_key else 1


@contextmanager
def _hydra_config(overrides: Sequence[str]):
    """The composed ``coord`` config with its ``hydra`` node, in a fresh Hydra context."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            yield hydra_compose(CONFIG_NAME, list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _check_hydra(first: Sequence[str], hydra_overrides: Sequence[str], launcher: str) -> None:
    try:
        with _hydra_config([*first, *hydra_overrides]):
            pass
    except Exception as exc:  # noqa: BLE001
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        match = re.search(r"Could not override '(hydra\.launcher\.[^']+)'", msg)
        if match:
            msg = (f"unknown key {match.group(1)!r} for hydra/launcher={launcher}; "
                   "choose the launcher with hydra/launcher=joblib|submitit_local|...")
        raise ConfigError(msg) from None


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
    for png in sweep_dir.glob("sweep_plot*.png"):
        png.unlink()


def _check_resume(sweep_dir: Path, task_overrides: Sequence[str], hydra_overrides) -> None:
    """Refuse to resume when an existing job dir ran a different combination."""
    if any(o.lstrip("+~").startswith(("hydra.sweep.subdir", "hydra/sweeper", "hydra.sweeper"))
           for o in hydra_overrides):
        return  # not the default job numbering: no pre-check
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from omegaconf import OmegaConf

    try:
        jobs = BasicSweeper.split_arguments(_parse_overrides(task_overrides), None)[0]
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
        f"[bold]duo sweep[/]: {n_jobs} job(s) with the {args.launcher} launcher into {sweep_dir}"
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
    summarize(sweep_dir, console)
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


# -- AUC and bootstrap (pure functions) ---------------------------------------------------


def trapezoid_weights(alphas: Sequence[float]) -> np.ndarray:
    """Weights ``w`` with ``auc = w @ rewards`` for rewards at sorted ``alphas``.

    Trapezoid rule normalised by the alpha range; a single alpha (or a zero range)
    gives the mean reward.
    """
    a = np.asarray(alphas, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no alpha points")
    if a.size == 1 or a[-1] == a[0]:
        return np.full(a.size, 1.0 / a.size)
    if np.any(np.diff(a) < 0):
        raise ValueError("alphas must be sorted")
    w = np.zeros(a.size)
    d = np.diff(a)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w / (a[-1] - a[0])


def auc(alphas: Sequence[float], rewards: Sequence[float]) -> float:
    """Area under reward-vs-alpha (trapezoid rule) divided by the alpha range.

    In reward units: a constant reward r gives AUC r; one alpha gives its reward.
    """
    a = np.asarray(alphas, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"{a.size} alphas but {r.size} rewards")
    order = np.argsort(a, kind="stable")
    return float(trapezoid_weights(a[order]) @ r[order])


def bootstrap_auc_ci(
    alphas: Sequence[float],
    episode_rewards: Sequence[Sequence[float]],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = 0.95,
    fallback: Sequence[tuple[float, float]] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`auc`.

    Each resample draws, independently at every alpha, as many episodes as there
    are (with replacement) from that alpha's per-episode rewards (seeds pooled),
    and recomputes the AUC of the resampled means.

    :param episode_rewards: per alpha, the per-episode test rewards.
    :param fallback: per alpha ``(mean, ci95)``, used where no episode rewards are
        known: the resampled mean is then drawn from the normal approximation.
    """
    a = np.asarray(alphas, dtype=np.float64)
    if len(episode_rewards) != a.size:
        raise ValueError(f"{a.size} alphas but {len(episode_rewards)} reward lists")
    order = np.argsort(a, kind="stable")
    w = trapezoid_weights(a[order])
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, a.size))
    for col, j in enumerate(order):
        eps = np.asarray(episode_rewards[j], dtype=np.float64)
        if eps.size:
            idx = rng.integers(0, eps.size, size=(n_boot, eps.size))
            means[:, col] = eps[idx].mean(axis=1)
        elif fallback is not None and fallback[j] is not None:
            mean, ci = fallback[j]
            sd = (ci or 0.0) / 1.96
            means[:, col] = rng.normal(mean, sd, size=n_boot) if sd > 0 else mean
        else:
            return (float("nan"), float("nan"))
    aucs = means @ w
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


# -- summary -----------------------------------------------------------------------------


@dataclass
class Job:
    dir: Path
    num: int | None
    overrides: list[str]
    status: str  # ok | failed | incomplete
    summary: dict | None = None
    error: str | None = None


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job of a sweep dir, with its summary or its error."""
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
        summary = _read_json(job_dir / "summary.json")
        if status.get("status") == "failed" or (error_file.is_file() and summary is None):
            job.status = "failed"
            job.error = status.get("error") or _first_line(error_file)
        elif summary is not None:
            job.status, job.summary = "ok", summary
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


def _akey(alpha: float) -> float:
    return round(float(alpha), 10)


def aggregate(summaries: Sequence[Mapping[str, Any]], n_boot: int = N_BOOT,
              seed: int = BOOT_SEED) -> dict[str, Any]:
    """Group run summaries by task (and beta, when it varies) and method; score each method.

    :returns: ``{group: {"task", "beta", "alphas", "methods": {method: {...}}, "winners"}}``.
    """
    betas = {float(s.get("beta", 0.0)) for s in summaries}
    groups: dict[str, dict[str, dict[float, list]]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for s in summaries:
        task = str(s.get("task", "?"))
        beta = float(s.get("beta", 0.0))
        name = task if len(betas) <= 1 else f"{task} beta={beta:g}"
        meta.setdefault(name, {"task": task, "beta": beta})
        method = str(s.get("method", "?"))
        groups.setdefault(name, {}).setdefault(method, {}).setdefault(
            _akey(s.get("alpha", 0.0)), []).append(s)
    out: dict[str, Any] = {}
    for name in sorted(groups):
        methods: dict[str, Any] = {}
        for method, by_alpha in sorted(groups[name].items()):
            points = []
            for alpha in sorted(by_alpha):
                runs = by_alpha[alpha]
                tests = [r.get("test", {}) for r in runs]
                pooled = [x for t in tests for x in (t.get("rewards") or [])]
                means = [float(t["reward_mean"]) for t in tests if "reward_mean" in t]
                reward = float(np.mean(means)) if means else float("nan")
                if pooled and all(t.get("rewards") for t in tests):
                    ci = mean_ci95(pooled)[1]
                else:  # no per-episode rewards: combine the runs' CIs
                    cis = [float(t.get("reward_ci95") or 0.0) for t in tests]
                    ci = float(math.sqrt(sum(c * c for c in cis)) / max(len(cis), 1))
                    pooled = []
                fracs = [float(t["expert_frac"]) for t in tests if t.get("expert_frac") is not None]
                base = [float(t["base_reward_mean"]) for t in tests
                        if t.get("base_reward_mean") is not None]
                points.append({
                    "alpha": alpha,
                    "reward_mean": reward,
                    "reward_ci95": ci,
                    "expert_frac": float(np.mean(fracs)) if fracs else None,
                    "base_reward_mean": float(np.mean(base)) if base else None,
                    "seeds": sorted({int(r.get("seed", 0)) for r in runs}),
                    "runs": len(runs),
                    "episodes": int(sum(int(t.get("episodes") or 0) for t in tests)),
                    "_episodes": pooled,
                })
            alphas = [p["alpha"] for p in points]
            value = auc(alphas, [p["reward_mean"] for p in points])
            lo, hi = bootstrap_auc_ci(
                alphas, [p.pop("_episodes") for p in points], n_boot=n_boot, seed=seed,
                fallback=[(p["reward_mean"], p["reward_ci95"]) for p in points],
            )
            methods[method] = {"auc": value, "auc_ci95": [lo, hi], "points": points}
        sky = methods.get(SKYLINE)
        if sky is not None and sky["auc"] and math.isfinite(sky["auc"]):
            for m in methods.values():
                m["skyline_ratio"] = m["auc"] / sky["auc"]
        contenders = {m: v["auc"] for m, v in methods.items()
                      if m != SKYLINE and math.isfinite(v["auc"])}
        if not contenders:
            contenders = {m: v["auc"] for m, v in methods.items() if math.isfinite(v["auc"])}
        best = max(contenders.values()) if contenders else None
        out[name] = {
            **meta[name],
            "alphas": sorted({p["alpha"] for m in methods.values() for p in m["points"]}),
            "methods": methods,
            "winners": sorted(m for m, v in contenders.items() if v == best),
        }
    return out


def build_summary(sweep_dir: Path, jobs: Sequence[Job], n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED) -> dict[str, Any]:
    """The content of ``sweep_summary.json``."""
    tasks = aggregate([j.summary for j in jobs if j.summary is not None], n_boot, seed)
    wins: dict[str, int] = {}
    for group in tasks.values():
        for method in group["methods"]:
            wins.setdefault(method, 0)
        for method in group["winners"]:
            wins[method] += 1
    first = next(iter(tasks.values()), None)
    flat = {}
    if first is not None:
        for method, m in first["methods"].items():
            flat[method] = {
                "auc": m["auc"], "auc_ci95": m["auc_ci95"],
                "per_alpha": {f"{p['alpha']:g}": {"reward_mean": p["reward_mean"],
                                                  "reward_ci95": p["reward_ci95"],
                                                  "expert_frac": p["expert_frac"]}
                              for p in m["points"]},
                **({"skyline_ratio": m["skyline_ratio"]} if "skyline_ratio" in m else {}),
            }
    return {
        "sweep_dir": str(sweep_dir),
        "auc": "trapezoid area under test reward vs alpha, divided by the alpha range",
        "auc_ci95": f"percentile bootstrap, {n_boot} resamples of per-episode test rewards "
                    f"within each alpha (seeds pooled), numpy seed {seed}",
        "jobs": {"total": len(jobs), "ok": sum(j.status == "ok" for j in jobs),
                 "failed": sum(j.status == "failed" for j in jobs),
                 "incomplete": sum(j.status == "incomplete" for j in jobs)},
        "tasks": tasks,
        "wins": wins,
        "failed_jobs": [
            {"job": j.num, "dir": _rel(j.dir, sweep_dir), "status": j.status,
             "overrides": j.overrides, "error": j.error}
            for j in jobs if j.status != "ok"
        ],
        "methods": flat,
    }


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


CSV_FIELDS = ("task", "beta", "method", "alpha", "reward_mean", "reward_ci95", "expert_frac",
              "base_reward_mean", "seeds", "episodes", "auc", "auc_ci95_lo", "auc_ci95_hi",
              "skyline_ratio")


def write_csv(path: Path, summary: Mapping[str, Any]) -> None:
    """One row per task / method / alpha."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for group in summary["tasks"].values():
            for method, m in group["methods"].items():
                for p in m["points"]:
                    writer.writerow({
                        "task": group["task"], "beta": group["beta"], "method": method,
                        "alpha": p["alpha"], "reward_mean": p["reward_mean"],
                        "reward_ci95": p["reward_ci95"], "expert_frac": p["expert_frac"],
                        "base_reward_mean": p["base_reward_mean"],
                        "seeds": " ".join(str(s) for s in p["seeds"]),
                        "episodes": p["episodes"], "auc": m["auc"],
                        "auc_ci95_lo": m["auc_ci95"][0], "auc_ci95_hi": m["auc_ci95"][1],
                        "skyline_ratio": m.get("skyline_ratio", ""),
                    })
    tmp.replace(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def plot(sweep_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """``sweep_plot.png`` (reward and expert fraction vs alpha, per method), plus
    ``sweep_plot_<task>.png`` per task when there are several."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = summary["tasks"]
    if not groups:
        return []

    def draw(axes_rows, names):
        for (ax_r, ax_e), name in zip(axes_rows, names, strict=True):
            group = groups[name]
            for method, m in group["methods"].items():
                pts = m["points"]
                a = np.array([p["alpha"] for p in pts])
                r = np.array([p["reward_mean"] for p in pts])
                ci = np.array([p["reward_ci95"] or 0.0 for p in pts])
                line, = ax_r.plot(a, r, marker="o",
                                  label=f"{method} (AUC {m['auc']:.3g})",
                                  linestyle="--" if method == SKYLINE else "-")
                ax_r.fill_between(a, r - ci, r + ci, alpha=0.2, color=line.get_color())
                e = [p["expert_frac"] if p["expert_frac"] is not None else np.nan for p in pts]
                ax_e.plot(a, e, marker="o", color=line.get_color(), label=method,
                          linestyle="--" if method == SKYLINE else "-")
            ax_r.set_title(f"{name}: test reward")
            ax_r.set_xlabel("expert query cost weight alpha")
            ax_r.set_ylabel("test reward (mean, 95% CI)")
            ax_r.legend(fontsize=8)
            ax_r.grid(alpha=0.3)
            ax_e.set_title(f"{name}: expert fraction")
            ax_e.set_xlabel("expert query cost weight alpha")
            ax_e.set_ylabel("fraction of steps with the expert")
            ax_e.set_ylim(-0.03, 1.03)
            ax_e.grid(alpha=0.3)

    def save(names, path):
        fig = Figure(figsize=(11, 4.2 * len(names)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(names), 2, squeeze=False)
        draw(axes, names)
        fig.savefig(path, dpi=110)
        return path

    names = list(groups)
    written = [save(names, sweep_dir / "sweep_plot.png")]
    if len(names) > 1:
        written += [save([n], sweep_dir / f"sweep_plot_{_safe(n)}.png") for n in names]
    return written


def print_summary(console, summary: Mapping[str, Any], keys: set[str] | None = None) -> None:
    """Rich tables: one per task, wins (several tasks), failed jobs.

    :param keys: override keys shown for failed jobs (``None``: all).
    """
    from rich.table import Table

    jobs = summary["jobs"]
    for name, group in summary["tasks"].items():
        alphas = group["alphas"]
        seeds = sorted({s for m in group["methods"].values() for p in m["points"]
                        for s in p["seeds"]})
        has_sky = any("skyline_ratio" in m for m in group["methods"].values())
        table = Table(
            title=f"{name}: test reward ± 95% CI vs expert-query cost alpha "
                  f"(seeds {', '.join(map(str, seeds))})",
            caption="AUC: trapezoid area under reward vs alpha / alpha range; "
                    f"CI: bootstrap over episodes. Best: {', '.join(group['winners']) or '-'}",
        )
        table.add_column("method", no_wrap=True)
        for a in alphas:
            table.add_column(f"R α={a:g}", justify="right")
        table.add_column("AUC [95% CI]", justify="right")
        for a in alphas:
            table.add_column(f"exp α={a:g}", justify="right")
        if has_sky:
            table.add_column("AUC / skyline", justify="right")
        ranked = sorted(group["methods"].items(),
                        key=lambda kv: -kv[1]["auc"] if math.isfinite(kv[1]["auc"]) else math.inf)
        for method, m in ranked:
            by_alpha = {p["alpha"]: p for p in m["points"]}
            lo, hi = m["auc_ci95"]
            bold = method in group["winners"]
            row = [f"[bold]{method}[/]" if bold else method]
            row += [f"{fmt(by_alpha[a]['reward_mean'])} ± {fmt(by_alpha[a]['reward_ci95'])}"
                    if a in by_alpha else "-" for a in alphas]
            row.append(f"{fmt(m['auc'], 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]")
            row += [fmt(by_alpha[a]["expert_frac"]) if a in by_alpha else "-" for a in alphas]
            if has_sky:
                row.append(fmt(m.get("skyline_ratio"), 3))
            table.add_row(*row)
        console.print(table)
    if len(summary["tasks"]) > 1:
        table = Table(title="wins (best AUC per task, skyline excluded)")
        table.add_column("method")
        table.add_column("wins", justify="right")
        table.add_column("tasks won")
        for method, n in sorted(summary["wins"].items(), key=lambda kv: -kv[1]):
            won = [t for t, g in summary["tasks"].items() if method in g["winners"]]
            table.add_row(method, str(n), ", ".join(won) or "-")
        console.print(table)
    if summary["failed_jobs"]:
        table = Table(title=f"{len(summary['failed_jobs'])} job(s) without a result "
                            "(details in <job dir>/error.txt)")
        table.add_column("job", justify="right")
        table.add_column("status")
        table.add_column("overrides")
        table.add_column("error")
        for f in summary["failed_jobs"]:
            table.add_row(str(f["job"] if f["job"] is not None else f["dir"]), f["status"],
                          _label(f["overrides"], keys), f["error"] or "-")
        console.print(table)
    console.print(
        f"{jobs['ok']}/{jobs['total']} job(s) finished"
        + (f", {jobs['failed']} failed" if jobs["failed"] else "")
        + (f", {jobs['incomplete']} incomplete" if jobs["incomplete"] else ""),
        soft_wrap=True,
    )


def summarize(sweep_dir: Path, console) -> dict[str, Any]:
    """Summarise a sweep dir: print the tables, write ``sweep_summary.{json,csv}`` and the plot."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(
            f"no Hydra jobs in {sweep_dir} (expected job dirs holding .hydra/); "
            "is it a duo sweep dir?"
        )
    summary = build_summary(sweep_dir, jobs)
    write_json(sweep_dir / "sweep_summary.json", summary)
    write_csv(sweep_dir / "sweep_summary.csv", summary)
    plots = plot(sweep_dir, summary)
    keys = swept_keys(sweep_dir)
    if keys is None:
        keys = varying_keys([j.overrides for j in jobs])
    print_summary(console, summary, keys)
    names = ["sweep_summary.json", "sweep_summary.csv", *(p.name for p in plots)]
    console.print(f"wrote {', '.join(names)} into {sweep_dir}", soft_wrap=True)
    return summary


def summarize_dir(path: str | os.PathLike, console) -> Path:
    """``duo sweep --summarize DIR``: re-render the summary of an existing sweep dir."""
    sweep_dir = Path(path).expanduser()
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep dir {sweep_dir} does not exist")
    summarize(sweep_dir, console)
    return sweep_dir

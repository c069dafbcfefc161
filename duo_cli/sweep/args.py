"""The command line of ``duo sweep``: duo's flags, the launcher, and validating every
swept value (command-line sweeps and a benchmark suite's ``hydra.sweeper.params``)
before anything is launched."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from duo_cli.config import ConfigError, compose, conf_dir, group_options

CONFIG_NAME = "coord"
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


def suite_params(first: Sequence[str], hydra_overrides: Sequence[str] = ()) -> list[str]:
    """``hydra.sweeper.params`` of the first job's config (a benchmark suite's sweep), as
    override strings ``key=values``."""
    try:
        with _hydra_config([*first, *hydra_overrides]) as cfg:
            params = cfg.hydra.sweeper.get("params") or {}
            return [f"{k}={v}" for k, v in params.items()]
    except Exception:  # noqa: BLE001 - reported with a one-line message by _check_hydra
        return []


def sweep_overrides(task_overrides: Sequence[str], hydra_overrides: Sequence[str] = ()) -> list:
    """The parsed overrides Hydra's basic sweeper will expand: the suite's params, each
    replaced in place by a command-line override of the same key, then the other
    command-line overrides."""
    given = _parse_overrides(task_overrides)
    first = [_sweep_values(o)[0] for o in given]
    merged = {o.get_key_element(): o for o in _parse_overrides(suite_params(first, hydra_overrides))}
    for o in given:
        merged[o.get_key_element()] = o
    return list(merged.values())


def validate(task_overrides: Sequence[str], hydra_overrides: Sequence[str] = (),
             launcher: str = "basic", max_checks: int = 40) -> int:
    """Compose the first job's config, then each other swept value once, then the
    Hydra config (launcher keys etc.) of the first job.  Swept values come from the
    command line and from ``hydra.sweeper.params`` (``benchmark=<suite>``).

    :returns: the number of jobs of the sweep.
    :raises ConfigError: naming the first bad override.
    """
    compose([_sweep_values(o)[0] for o in _parse_overrides(task_overrides)], CONFIG_NAME)
    per_key = [_sweep_values(o) for o in sweep_overrides(task_overrides, hydra_overrides)]
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


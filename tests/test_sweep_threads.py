"""Torch threads per job: ``torch_threads`` null (auto) shares the cores among the jobs a
launcher runs at once; an explicit value wins; bad values are one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from fakes import assert_one_line_error
from omegaconf import OmegaConf
from rich.console import Console

from duo_cli import sweep
from duo_cli.config import ConfigError, compose
from duo_cli.sweep.threads import describe_threads, job_share, job_threads, sweep_size
from duo_cli.threads import available_cores, resolve_torch_threads

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
RAY = {"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
       "ray": {"init": {"address": None}, "remote": {}}}


def test_resolve_hand_cases():
    assert resolve_torch_threads(None, parallel_jobs=2, cores=2) == 1
    assert resolve_torch_threads(None, parallel_jobs=1, cores=2) == 2
    assert resolve_torch_threads(None, parallel_jobs=1, cores=16) == 16
    assert resolve_torch_threads(None, parallel_jobs=3, cores=16) == 5  # 16 // 3
    assert resolve_torch_threads(None, parallel_jobs=8, cores=2) == 1  # never 0
    assert resolve_torch_threads(3, parallel_jobs=2, cores=2) == 3  # explicit wins
    assert resolve_torch_threads(None) == available_cores()
    with pytest.raises(ValueError, match="parallel_jobs"):
        resolve_torch_threads(None, parallel_jobs=0, cores=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_bad_values_are_refused(bad):
    with pytest.raises(ConfigError, match=r"^bad value for torch_threads: .*null \(auto"):
        resolve_torch_threads(bad)
    with pytest.raises(ConfigError, match="torch_threads"):
        compose([f"torch_threads={bad}"])


def test_config_default_is_auto():
    assert compose([]).torch_threads is None
    assert compose(["torch_threads=3"]).torch_threads == 3
    assert compose(["torch_threads=null"]).torch_threads is None


def test_cli_bad_value_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "duo_cli.cli", "config", "torch_threads=0"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "torch_threads", "0", "null")


@pytest.mark.parametrize(("launcher", "cores", "jobs", "threads"), [
    ({**JOBLIB, "n_jobs": 2}, 2, 51, 1),     # the documented suite command on 2 cores
    ({**JOBLIB, "n_jobs": 2}, 16, 51, 8),
    ({**JOBLIB, "n_jobs": 1}, 2, 51, 2),
    ({**JOBLIB, "n_jobs": -1}, 8, 51, 1),    # joblib's default: one job per core
    ({**JOBLIB, "n_jobs": -2}, 8, 51, 1),    # all cores but one: 7 at once
    ({**JOBLIB, "n_jobs": -1}, 8, 2, 4),     # a 2-job sweep runs 2 at once
    ({**JOBLIB, "n_jobs": None}, 4, 51, 4),  # joblib: None is one worker
    ({**JOBLIB, "n_jobs": 4}, 16, None, 4),  # sweep size unknown: no cap
    (BASIC, 2, 51, 2),
    (BASIC, 8, 51, 8),
    ({"_target_": SUBMITIT + "LocalLauncher", "cpus_per_task": None}, 8, 4, 2),
    ({"_target_": SUBMITIT + "LocalLauncher", "cpus_per_task": 3}, 8, 4, 3),
    ({"_target_": SUBMITIT + "SlurmLauncher", "cpus_per_task": 4}, 64, 51, 4),
    ({"_target_": SUBMITIT + "SlurmLauncher", "cpus_per_task": None}, 6, 51, 6),
    (RAY, 8, 51, 1),
    ({**RAY, "ray": {"remote": {"num_cpus": 2}}}, 8, 51, 2),
    ({"_target_": "somebody.else.Launcher"}, 4, 51, 4),
])
def test_launcher_shares(launcher, cores, jobs, threads):
    assert job_threads(None, launcher, cores, jobs)[0] == threads
    assert job_threads(5, launcher, cores, jobs) == (5, "torch_threads=5")


def test_describe_and_slurm_on_node():
    line = describe_threads(None, {**JOBLIB, "n_jobs": 2}, 2, 51)
    assert line == "1 torch thread(s) per job (auto: 2 core(s) / 2 jobs at once)"
    slurm = {"_target_": SUBMITIT + "SlurmLauncher", "cpus_per_task": None}
    assert job_share(slurm, 2, 51).on_node
    assert "Slurm allocation" in describe_threads(None, slurm, 2, 51)
    assert describe_threads(2, slurm, 2, 51).startswith("2 torch thread(s)")


def test_sweep_size_from_multirun_yaml(tmp_path):
    OmegaConf.save({"hydra": {
        "sweeper": {"params": {"env.task": "A,B,C", "algorithm": "x,y", "seed": "0"}},
        "overrides": {"task": ["algorithm=x,y,z,w", "seed=0,1"]},
    }}, tmp_path / "multirun.yaml")
    assert sweep_size(tmp_path) == 3 * 4 * 2  # the command line replaces the suite's keys
    assert sweep_size(tmp_path / "missing") is None


@pytest.mark.slow
def test_joblib_sweep_jobs_use_their_share(tiny_agents, tmp_path):
    """A real 2-job sweep with joblib n_jobs=2 and torch_threads left to auto: each job
    records the threads it ran with (1 on a 2-core machine, cores // 2 on bigger ones)."""
    auto = [o for o in tiny_agents["overrides"] if not o.startswith("torch_threads=")]
    console = Console(file=io.StringIO(), width=200)
    sweep_dir = tmp_path / "sw"
    sweep.run_sweep(["algorithm=always_novice,always_expert", *auto,
                     f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2"], console)
    expected = max(1, available_cores() // 2)
    assert f"{expected} torch thread(s) per job (auto:" in console.file.getvalue()
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "status.json").read_text())["torch_threads"] \
            == expected
        assert OmegaConf.load(sweep_dir / job / "config.yaml").torch_threads == expected
        assert f"torch threads: {expected} (auto:" in (sweep_dir / job / "train.log").read_text()

"""``duo sweep``: Hydra multirun cost sweeps, their AUC summary, resume and failures."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from fakes import assert_one_line_error
from rich.console import Console

from duo_cli import sweep
from duo_cli.config import ConfigError
from duo_cli.report import stats
from duo_cli.sweep import args as sweep_args
from duo_cli.sweep import launch as sweep_launch

ALPHAS = "coordination.expert_query_cost_weight=0,0.5"
METHODS = "algorithm=always_novice,always_expert"


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _out(console: Console) -> str:
    return console.file.getvalue()


def _sweep(tiny_agents, sweep_dir: Path, *extra: str, console: Console | None = None):
    console = console or _console()
    path = sweep.run_sweep(
        [ALPHAS, METHODS, *tiny_agents["overrides"], f"hydra.sweep.dir={sweep_dir}", *extra],
        console,
    )
    return path, console


def _check_tiny_sweep(sweep_dir: Path, num_jobs: int = 4) -> dict:
    """2 methods x 2 alphas: 4 jobs, or 2 alpha-grid jobs (``num_jobs=2``) scoring both."""
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == [str(i) for i in range(num_jobs)]
    for job in jobs:  # Hydra's job dirs, with the snapshot and duo's run files
        assert (job / ".hydra" / "config.yaml").is_file()
        assert (job / ".hydra" / "overrides.yaml").is_file()
        assert (job / "summary.json").is_file()
        assert json.loads((job / "status.json").read_text())["status"] == "ok"
    assert (sweep_dir / "multirun.yaml").is_file()
    assert (sweep_dir / "plot_bossfight.png").stat().st_size > 1000
    assert (sweep_dir / "plot_summary.png").stat().st_size > 1000
    assert "## bossfight" in (sweep_dir / "report.md").read_text()
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"] == {"total": num_jobs, "ok": num_jobs, "failed": 0, "invalid": 0,
                               "incomplete": 0}
    group = summary["tasks"]["bossfight"]
    assert group["alphas"] == [0.0, 0.5]
    assert set(group["methods"]) == {"always_novice", "always_expert"}
    for method, frac in (("always_novice", 0.0), ("always_expert", 1.0)):
        m = group["methods"][method]
        assert [p["alpha"] for p in m["points"]] == [0.0, 0.5]
        assert all(p["expert_frac"] == pytest.approx(frac) for p in m["points"])
        assert all(p["episodes"] == 4 for p in m["points"])
        assert m["auc"] == pytest.approx(stats.auc([0, 0.5], [p["reward_mean"] for p in m["points"]]))
        lo, hi = m["auc_ci95"]
        assert lo <= m["auc"] + 1e-9 and m["auc"] - 1e-9 <= hi
        assert m["paired"] and "always_novice" in m["comparisons"] or method == "always_novice"
    assert set(summary["aggregate"]["methods"]) <= {"always_novice", "always_expert"}
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"always_novice", "always_expert"}
    return summary


def _fake(task, method, alpha, seed, rewards, frac, beta=0.0):
    r = np.asarray(rewards, dtype=float)
    sky = method == "skyline"  # what the job declares: the skyline, a trained coordinator
    return {"method": method, "task": task, "alpha": alpha, "beta": beta, "seed": seed,
            "traits": {"learns": sky, "shares_rollouts": not sky,
                       "role": "skyline" if sky else "method"},
            "test": {"reward_mean": float(r.mean()), "reward_ci95": 0.0,
                     "base_reward_mean": float(r.mean()), "expert_frac": frac,
                     "episodes": r.size, "rewards": r.tolist()}}


def _fake_sweep_dir(root: Path) -> Path:
    """A sweep dir as Hydra and run_job leave it: two tasks, a skyline, one failed job."""
    jobs = []
    for task in ("coinrun", "bossfight"):
        for method, rewards in (("random", [[3, 3], [1, 1]]), ("logit", [[2, 2], [2, 2]]),
                                ("skyline", [[4, 4], [4, 4]])):
            for alpha, r in zip((0.0, 1.0), rewards, strict=True):
                jobs.append((f"env.task={task} algorithm={method} "
                             f"coordination.expert_query_cost_weight={alpha:g}",
                             _fake(task, method, alpha, 0, r, alpha)))
    jobs.append(("env.task=coinrun agents.expert=/missing.pt", None))
    for num, (overrides, summary) in enumerate(jobs):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in overrides.split()))
        if summary is None:
            (job / "error.txt").write_text("CheckpointError: checkpoint not found: /missing.pt\n\n"
                                           "Traceback (most recent call last): ...\n")
            (job / "status.json").write_text(json.dumps(
                {"status": "failed", "error": "CheckpointError: checkpoint not found: /missing.pt"}))
        else:
            (job / "summary.json").write_text(json.dumps(summary))
    return root


def test_summarize_dir_tables_files_and_failures(tmp_path):
    sweep_dir = _fake_sweep_dir(tmp_path / "sw")
    console = _console()
    with pytest.raises(sweep.JobsFailed, match="1 of 13 job"):
        sweep.summarize_dir(sweep_dir, console)
    out = _out(console)
    assert "AUC" in out and "wins" in out
    assert "CheckpointError: checkpoint not found: /missing.pt" in out
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"]["failed"] == 1 and summary["jobs"]["ok"] == 12
    assert summary["failed_jobs"][0]["job"] == 12
    assert summary["failed_jobs"][0]["error"].startswith("CheckpointError")
    coin = summary["tasks"]["coinrun"]["methods"]
    assert coin["random"]["auc"] == pytest.approx(2.0)
    assert coin["random"]["skyline_ratio"] == pytest.approx(0.5)
    assert coin["random"]["auc_ci95"] == [pytest.approx(2.0), pytest.approx(2.0)]
    # random and logit tie at AUC 2 in both tasks: both win; the skyline is no contender
    assert summary["tasks"]["coinrun"]["winners"] == ["logit", "random"]
    assert {m: w["wins"] for m, w in summary["wins"].items()} == {"logit": 2, "random": 2}
    assert coin["random"]["points"][1]["reward_mean"] == pytest.approx(1.0)
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert len(rows) == 2 * 3 * 2
    for name in ("plot_summary.png", "plot_coinrun.png", "plot_bossfight.png"):
        assert (sweep_dir / name).stat().st_size > 1000
    report = (sweep_dir / "report.md").read_text()
    assert "## coinrun" in report and "![coinrun](plot_coinrun.png)" in report


def test_summarize_dir_rejects_non_sweeps(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        sweep.summarize_dir(tmp_path / "nope", _console())
    with pytest.raises(ConfigError, match="no Hydra jobs"):
        sweep.summarize_dir(tmp_path, _console())


def test_summarize_refuses_bad_summaries_with_one_line(tmp_path):
    sweep_dir = _fake_sweep_dir(tmp_path / "sw")
    for num, summary in ((13, {"method": "random", "alpha": 0.0, "beta": 0.0, "seed": 0,
                                "test": {"reward_mean": 1.0}}),
                         (14, {**_fake("coinrun", "random", 0.0, 1, [1.0], 0.1), "alpha": "abc"})):
        (sweep_dir / str(num) / ".hydra").mkdir(parents=True)
        (sweep_dir / str(num) / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
        (sweep_dir / str(num) / "summary.json").write_text(json.dumps(summary))
    (sweep_dir / "15" / ".hydra").mkdir(parents=True)
    (sweep_dir / "15" / "summary.json").write_text("{not json")
    console = _console()
    with pytest.raises(sweep.JobsFailed, match="4 of 16 job"):
        sweep.summarize_dir(sweep_dir, console)
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert set(summary["tasks"]) == {"coinrun", "bossfight"}  # no task "?"
    bad = {f["job"]: f for f in summary["failed_jobs"] if f["status"] == "invalid"}
    assert bad[13]["error"] == "bad summary.json: missing key 'task'"
    assert bad[14]["error"] == "bad summary.json: alpha 'abc' is not a number"
    assert bad[15]["error"].startswith("summary.json is not valid JSON")
    assert "missing key 'task'" in _out(console)


def test_benchmark_suites_are_sweeper_params():
    assert sweep.validate(["benchmark=minigrid"]) == 3 * 7
    assert sweep.validate(["benchmark=procgen_coinrun"]) == 6
    # a command-line override of a suite key replaces its values, in place
    merged = [o.input_line for o in sweep.sweep_overrides(
        ["benchmark=minigrid", "algorithm=random,logit", "seed=0,1", "evaluation.num_envs=4"])]
    assert merged[:4] == ["env.task=DistShift,DoorKey,LavaGap", "algorithm=random,logit",
                          "coordination.switch_agent_cost_weight=0", "seed=0,1"]
    assert sweep.validate(["benchmark=minigrid", "algorithm=random,logit", "seed=0,1"]) == 3 * 2 * 2
    from duo_cli.config import compose

    cfg = compose(["benchmark=minigrid"], "coord")
    assert cfg.env.name == "minigrid" and cfg.model.name == "grid_cnn"
    assert list(cfg.coordination.alphas) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # scored in each job
    with pytest.raises(ConfigError, match="nosuch"):
        sweep.validate(["benchmark=minigrid", "algorithm=nosuch"])


# -- command line handling ---------------------------------------------------------------------


def test_parse_args_flags_and_reserved_keys():
    args = sweep.parse_args(["seed=1,2", "sweep.resume=true", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "hydra.sweep.dir=/x/y", "--multirun"])
    assert args.resume and not args.overwrite
    assert args.task == ["seed=1,2"] and args.sweep_dir == "/x/y" and args.launcher == "joblib"
    assert args.hydra == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    with pytest.raises(ConfigError, match="sweep.overwrite, sweep.resume"):
        sweep.parse_args(["sweep.nope=1"])
    with pytest.raises(ConfigError, match="expected true or false"):
        sweep.parse_args(["sweep.overwrite=maybe"])
    with pytest.raises(ConfigError, match="exclude each other"):
        sweep.parse_args(["sweep.overwrite=true", "sweep.resume=true"])
    with pytest.raises(ConfigError, match="hydra.sweep.dir"):
        sweep.parse_args(["run_dir=/tmp/x"])
    with pytest.raises(ConfigError, match="sweep.resume"):
        sweep.parse_args(["resume=true"])


def test_missing_or_unknown_launcher(monkeypatch):
    with pytest.raises(ConfigError, match="valid choices: basic, joblib"):
        sweep_args._check_launcher("nope")
    sweep_args._check_launcher("basic")
    sweep_args._check_launcher("joblib")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "ray" in name else real(name, *a))
    with pytest.raises(ConfigError) as info:
        sweep_args._check_launcher("ray")
    assert str(info.value) == "hydra/launcher=ray needs the ray extra: pip install 'duo-cli[ray]'"


def test_validation_errors_before_launch(tiny_agents, tmp_path):
    base = [*tiny_agents["overrides"], f"hydra.sweep.dir={tmp_path / 'sw'}"]
    with pytest.raises(ConfigError, match="unknown algorithm 'nosuch'"):
        sweep.run_sweep(["algorithm=always_novice,nosuch", *base], _console())
    with pytest.raises(ConfigError, match="expected float"):
        sweep.run_sweep(["coordination.expert_query_cost_weight=0,x", *base], _console())
    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        sweep.run_sweep(["no_such_key=1,2", *base], _console())
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs"):
        sweep.run_sweep(["seed=1,2", "hydra.launcher.n_jobs=2", *base], _console())
    assert not (tmp_path / "sw").exists()


def test_existing_sweep_dir_is_refused(tiny_agents, tmp_path):
    sweep_dir = tmp_path / "sw"
    sweep_dir.mkdir()
    (sweep_dir / "something").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not empty; pass sweep.resume=true"):
        _sweep(tiny_agents, sweep_dir)


def test_default_sweep_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = sweep_launch._new_sweep_dir()
    assert re.fullmatch(r"runs/sweep/\d{8}-\d{6}", first.as_posix())
    first.mkdir(parents=True)
    assert sweep_launch._new_sweep_dir() != first


# -- real sweeps -------------------------------------------------------------------------------


@pytest.mark.slow
def test_basic_launcher_sweep_resume_and_summarize(tiny_agents, tmp_path):
    sweep_dir = tmp_path / "sw"
    path, console = _sweep(tiny_agents, sweep_dir)
    assert path == sweep_dir
    summary = _check_tiny_sweep(sweep_dir)
    out = _out(console)
    assert "always_expert" in out and "AUC" in out and "4/4 job(s) finished" in out
    # a job's config is the composed coord config with the job's values
    assert json.loads((sweep_dir / "3" / "summary.json").read_text())["alpha"] == 0.5

    # again into the same dir: refused; resumed: finished jobs are skipped
    with pytest.raises(ConfigError, match="exists and is not empty"):
        _sweep(tiny_agents, sweep_dir)
    (sweep_dir / "2" / "summary.json").unlink()
    kept = (sweep_dir / "1" / "summary.json").stat().st_mtime_ns
    _sweep(tiny_agents, sweep_dir, "sweep.resume=true")
    assert (sweep_dir / "1" / "summary.json").stat().st_mtime_ns == kept
    assert (sweep_dir / "2" / "summary.json").is_file()
    assert _check_tiny_sweep(sweep_dir)["tasks"] == summary["tasks"]  # same evaluation seeds
    # resuming with another grid is refused
    with pytest.raises(ConfigError, match="cannot resume"):
        sweep.run_sweep(["coordination.expert_query_cost_weight=0,0.7", METHODS,
                         *tiny_agents["overrides"], f"hydra.sweep.dir={sweep_dir}",
                         "sweep.resume=true"], _console())

    # --summarize re-renders from the job dirs
    (sweep_dir / "sweep_summary.json").unlink()
    (sweep_dir / "plot_summary.png").unlink()
    console = _console()
    assert sweep.summarize_dir(str(sweep_dir), console) == sweep_dir
    assert "always_novice" in _out(console)
    _check_tiny_sweep(sweep_dir)


def test_failing_job_does_not_stop_the_sweep(tiny_agents, tmp_path, capsys):
    sweep_dir = tmp_path / "sw"
    good = tiny_agents["paths"]["expert"]
    missing = tmp_path / "missing_expert.pt"
    overrides = [o for o in tiny_agents["overrides"] if not o.startswith("agents.expert=")]
    console = _console()
    with pytest.raises(sweep.JobsFailed) as info:  # exit code 2 through the CLI
        sweep.run_sweep(["coordination.expert_query_cost_weight=0.5", "algorithm=always_expert",
                         f"agents.expert={good},{missing}", *overrides,
                         f"hydra.sweep.dir={sweep_dir}"], console)
    assert str(info.value).startswith("1 of 2 job(s) without a result")
    assert "sweep.resume=true" in str(info.value) and "\n" not in str(info.value)
    assert "Traceback" not in capsys.readouterr().out
    error = (sweep_dir / "1" / "error.txt").read_text()
    assert error.splitlines()[0].startswith("CheckpointError:") and "missing_expert.pt" in error
    assert "Traceback" in error
    assert json.loads((sweep_dir / "1" / "status.json").read_text())["status"] == "failed"
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"] == {"total": 2, "ok": 1, "failed": 1, "invalid": 0, "incomplete": 0}
    assert summary["failed_jobs"][0]["job"] == 1
    assert "missing_expert.pt" in summary["failed_jobs"][0]["error"]
    assert set(summary["tasks"]["bossfight"]["methods"]) == {"always_expert"}
    out = _out(console)
    assert "1 job(s) without a result" in out and "missing_expert.pt" in out

    # the resumed sweep re-runs the failed job (and only it)
    missing.write_bytes(Path(good).read_bytes())
    sweep.run_sweep(["coordination.expert_query_cost_weight=0.5", "algorithm=always_expert",
                     f"agents.expert={good},{missing}", *overrides,
                     f"hydra.sweep.dir={sweep_dir}", "sweep.resume=true"], _console())
    assert "already done, skipped" in capsys.readouterr().out
    assert not (sweep_dir / "1" / "error.txt").exists()
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"]["ok"] == 2 and summary["failed_jobs"] == []


SUITE = ["benchmark=procgen_coinrun", "algorithm=always_novice,always_expert",
         "coordination.alphas=[0,0.5]"]


def _numbers(summary: dict) -> dict:
    """The summary's numbers (not its paths), for comparing two launchers."""
    return {"tasks": summary["tasks"], "aggregate": summary["aggregate"],
            "wins": summary["wins"], "jobs": summary["jobs"]}


@pytest.mark.slow
def test_suite_sweep_with_the_basic_and_ray_launchers(tiny_agents, tmp_path):
    """A small suite (a command line override narrows it) runs unchanged on a local Ray
    instance (loopback only) and gives the same summary numbers as the basic launcher."""
    base = [*SUITE, *tiny_agents["overrides"]]  # env.task=bossfight replaces the suite's
    sweep.run_sweep([*base, f"hydra.sweep.dir={tmp_path / 'basic'}"], _console())
    basic = _check_tiny_sweep(tmp_path / "basic", num_jobs=2)
    # the suite's env.task sweep was replaced by the single env.task=bossfight
    assert sweep.swept_keys(tmp_path / "basic") == {"algorithm"}
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("needs the ray launcher (pip install -e '.[dev]')")
    sweep.run_sweep([*base, f"hydra.sweep.dir={tmp_path / 'ray'}", "hydra/launcher=ray",
                     "+hydra.launcher.ray.init.num_cpus=2",
                     "+hydra.launcher.ray.init.include_dashboard=false",
                     "+hydra.launcher.ray.init._node_ip_address=127.0.0.1"], _console())
    ray_summary = _check_tiny_sweep(tmp_path / "ray", num_jobs=2)
    assert "hydra/launcher: ray" in (tmp_path / "ray" / "0" / ".hydra" / "hydra.yaml").read_text()
    assert _numbers(ray_summary) == _numbers(basic)


@pytest.mark.slow
def test_joblib_launcher_sweep(tiny_agents, tmp_path):
    sweep_dir = tmp_path / "sw"
    _sweep(tiny_agents, sweep_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    _check_tiny_sweep(sweep_dir)
    hydra_cfg = (sweep_dir / "0" / ".hydra" / "hydra.yaml").read_text()
    assert "JoblibLauncher" in hydra_cfg


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="needs the slurm extra (hydra-submitit-launcher)")
def test_submitit_local_launcher_sweep(tiny_agents, tmp_path):
    sweep_dir = tmp_path / "sw"
    _sweep(tiny_agents, sweep_dir, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    _check_tiny_sweep(sweep_dir)
    assert (sweep_dir / ".submitit").is_dir()


# -- through the real command line -------------------------------------------------------------


def _duo80(*args: str):
    import subprocess

    from test_cli import REPO, _duo_cmd

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "80"}
    env.pop("DUO_CONF_DIR", None)
    return subprocess.run([*_duo_cmd(), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)


@pytest.mark.slow
def test_cli_summarize_fits_80_columns_and_one_line_errors(tmp_path):
    from test_cli import duo

    sweep_dir = _fake_sweep_dir(tmp_path / "sw")
    proc = _duo80("sweep", "--summarize", str(sweep_dir))
    # a job without a result: the tables and files, then exit 2 with one line
    line = assert_one_line_error(proc, "1 of 13 job(s)", str(sweep_dir))
    assert "AUC" in proc.stdout and "missing.pt" in proc.stdout and "across 2 tasks" in proc.stdout
    assert "…" not in proc.stdout and "…" not in line
    too_long = [x for x in proc.stdout.splitlines() if len(x) > 80]
    assert not too_long, too_long
    assert (sweep_dir / "sweep_summary.json").is_file() and (sweep_dir / "report.md").is_file()
    assert_one_line_error(duo("sweep", "algorithm=random,nosuch", f"hydra.sweep.dir={tmp_path}/x"),
                          "nosuch", "logit")
    assert_one_line_error(duo("sweep", "seed=1,2", f"hydra.sweep.dir={sweep_dir}"),
                          "sweep.resume=true")
    assert_one_line_error(duo("sweep", "benchmark=nosuch"), "nosuch", "minigrid")
    if importlib.util.find_spec("ray") is None:
        assert_one_line_error(duo("sweep", "seed=1,2", "hydra/launcher=ray"),
                              "pip install 'duo-cli[ray]'")

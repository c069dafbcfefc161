"""``duo sweep``: Hydra multirun cost sweeps, their AUC summary, resume and failures."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from duo_cli import sweep
from duo_cli.config import ConfigError

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


def _check_tiny_sweep(sweep_dir: Path) -> dict:
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    for job in jobs:  # Hydra's job dirs, with the snapshot and duo's run files
        assert (job / ".hydra" / "config.yaml").is_file()
        assert (job / ".hydra" / "overrides.yaml").is_file()
        assert (job / "summary.json").is_file()
        assert json.loads((job / "status.json").read_text())["status"] == "ok"
    assert (sweep_dir / "multirun.yaml").is_file()
    assert (sweep_dir / "sweep_plot.png").stat().st_size > 1000
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"] == {"total": 4, "ok": 4, "failed": 0, "incomplete": 0}
    group = summary["tasks"]["bossfight"]
    assert group["alphas"] == [0.0, 0.5]
    assert set(group["methods"]) == {"always_novice", "always_expert"}
    for method, frac in (("always_novice", 0.0), ("always_expert", 1.0)):
        m = group["methods"][method]
        assert [p["alpha"] for p in m["points"]] == [0.0, 0.5]
        assert all(p["expert_frac"] == pytest.approx(frac) for p in m["points"])
        assert all(p["episodes"] == 4 for p in m["points"])
        assert m["auc"] == pytest.approx(sweep.auc([0, 0.5], [p["reward_mean"] for p in m["points"]]))
        lo, hi = m["auc_ci95"]
        assert lo <= m["auc"] + 1e-9 and m["auc"] - 1e-9 <= hi
    assert set(summary["methods"]) == {"always_novice", "always_expert"}
    assert set(summary["methods"]["always_expert"]["per_alpha"]) == {"0", "0.5"}
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"always_novice", "always_expert"}
    return summary


# -- AUC and bootstrap on hand-computed numbers -----------------------------------------------


def test_auc_trapezoid_normalised_by_alpha_range():
    assert sweep.auc([0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # unsorted input, uneven spacing: (0.2*(2+1)/2 + 0.8*(1+1)/2) / 1.0
    assert sweep.auc([1.0, 0, 0.2], [1.0, 2.0, 1.0]) == pytest.approx(1.1)
    # range 0.2..0.6: (0.4*(1+3)/2) / 0.4 = 2, in reward units
    assert sweep.auc([0.2, 0.6], [1.0, 3.0]) == pytest.approx(2.0)
    assert sweep.auc([0.4], [3.5]) == 3.5  # one alpha: its reward
    assert sweep.auc([0, 0.3, 1], [7, 7, 7]) == pytest.approx(7.0)
    w = sweep.trapezoid_weights([0, 0.2, 1.0])
    assert w == pytest.approx([0.1, 0.5, 0.4]) and w.sum() == pytest.approx(1.0)


def test_bootstrap_auc_ci_hand_computed():
    # constant episodes: every resample gives the same AUC
    lo, hi = sweep.bootstrap_auc_ci([0, 1], [[2.0, 2.0, 2.0], [0.0, 0.0]])
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(1.0))
    # one alpha, episodes {0, 1}: resampled means 0, .5, 1 with p = 1/4, 1/2, 1/4,
    # so the 2.5th percentile is 0 and the 97.5th is 1
    assert sweep.bootstrap_auc_ci([0.3], [[0.0, 1.0]]) == (0.0, 1.0)
    # two alphas [0, 1] with episodes {0, 1} and {1}: AUC = (m0 + 1) / 2 with
    # m0 in {0, .5, 1} -> CI [0.5, 1.0]
    assert sweep.bootstrap_auc_ci([0, 1], [[0.0, 1.0], [1.0]]) == (0.5, 1.0)
    # fixed numpy seed: reproducible; another seed: (slightly) different
    rng = np.random.default_rng(1)
    eps = [rng.normal(1, 1, 50), rng.normal(0, 1, 50), rng.normal(-1, 1, 50)]
    a = sweep.bootstrap_auc_ci([0, 0.5, 1], eps)
    assert a == sweep.bootstrap_auc_ci([0, 0.5, 1], eps)
    assert a != sweep.bootstrap_auc_ci([0, 0.5, 1], eps, seed=1)
    point = sweep.auc([0, 0.5, 1], [e.mean() for e in eps])
    assert a[0] < point < a[1]
    # ~ normal theory: sd of the AUC = sqrt(sum w_i^2 var_i / n_i)
    w = sweep.trapezoid_weights([0, 0.5, 1])
    sd = math.sqrt(sum(wi**2 * e.var() / e.size for wi, e in zip(w, eps, strict=True)))
    assert (a[1] - a[0]) / 2 == pytest.approx(1.96 * sd, rel=0.15)
    # no episode rewards: the normal approximation of (mean, ci95) is used
    lo, hi = sweep.bootstrap_auc_ci([0], [[]], fallback=[(1.0, 0.196)])
    assert lo == pytest.approx(0.804, abs=0.03) and hi == pytest.approx(1.196, abs=0.03)


def _fake(task, method, alpha, seed, rewards, frac, beta=0.0):
    r = np.asarray(rewards, dtype=float)
    return {"method": method, "task": task, "alpha": alpha, "beta": beta, "seed": seed,
            "test": {"reward_mean": float(r.mean()), "reward_ci95": 0.0,
                     "base_reward_mean": float(r.mean()), "expert_frac": frac,
                     "episodes": r.size, "rewards": r.tolist()}}


def test_aggregate_seeds_skyline_ratio_and_wins():
    runs = []
    for seed, shift in ((1, 0.0), (2, 1.0)):
        runs += [
            _fake("coinrun", "random", 0.0, seed, [2 + shift, 4 + shift], 0.5),
            _fake("coinrun", "random", 1.0, seed, [0 + shift, 2 + shift], 0.3),
            _fake("coinrun", "logit", 0.0, seed, [5, 5], 0.6),
            _fake("coinrun", "logit", 1.0, seed, [1, 1], 0.2),
            _fake("coinrun", "skyline", 0.0, seed, [8, 8], 0.9),
            _fake("coinrun", "skyline", 1.0, seed, [4, 4], 0.4),
            _fake("bossfight", "random", 0.0, seed, [1, 1], 0.1),
            _fake("bossfight", "logit", 0.0, seed, [0, 0], 0.1),
        ]
    tasks = sweep.aggregate(runs)
    assert set(tasks) == {"coinrun", "bossfight"}
    coin = tasks["coinrun"]["methods"]
    p0 = coin["random"]["points"][0]
    assert p0["alpha"] == 0.0 and p0["seeds"] == [1, 2] and p0["episodes"] == 4
    assert p0["reward_mean"] == pytest.approx(3.5)  # mean of seed means 3 and 4
    assert p0["expert_frac"] == pytest.approx(0.5)
    assert p0["reward_ci95"] == pytest.approx(1.96 * np.std([2, 4, 3, 5], ddof=1) / 2)
    assert coin["random"]["auc"] == pytest.approx((3.5 + 1.5) / 2)
    assert coin["logit"]["auc"] == pytest.approx(3.0)
    assert coin["skyline"]["auc"] == pytest.approx(6.0)
    assert coin["random"]["skyline_ratio"] == pytest.approx(2.5 / 6)
    assert coin["logit"]["skyline_ratio"] == pytest.approx(0.5)
    assert coin["skyline"]["skyline_ratio"] == pytest.approx(1.0)
    assert tasks["coinrun"]["winners"] == ["logit"]  # the skyline is the reference, not a rival
    assert tasks["bossfight"]["winners"] == ["random"]
    assert "skyline_ratio" not in tasks["bossfight"]["methods"]["random"]
    # one alpha: the AUC is that reward
    assert tasks["bossfight"]["methods"]["random"]["auc"] == pytest.approx(1.0)
    # several betas: one group per task and beta
    split = sweep.aggregate([_fake("coinrun", "random", 0.0, 1, [1], 0.1, beta=0.0),
                             _fake("coinrun", "random", 0.0, 1, [2], 0.1, beta=0.5)])
    assert set(split) == {"coinrun beta=0", "coinrun beta=0.5"}


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
    assert sweep.summarize_dir(sweep_dir, console) == sweep_dir
    out = _out(console)
    assert "coinrun" in out and "bossfight" in out and "AUC" in out and "wins" in out
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
    assert summary["wins"] == {"logit": 2, "random": 2, "skyline": 0}
    assert summary["methods"]["random"]["per_alpha"]["1"]["reward_mean"] == pytest.approx(1.0)
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert len(rows) == 2 * 3 * 2
    for name in ("sweep_plot.png", "sweep_plot_coinrun.png", "sweep_plot_bossfight.png"):
        assert (sweep_dir / name).stat().st_size > 1000


def test_summarize_dir_rejects_non_sweeps(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        sweep.summarize_dir(tmp_path / "nope", _console())
    with pytest.raises(ConfigError, match="no Hydra jobs"):
        sweep.summarize_dir(tmp_path, _console())


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
        sweep._check_launcher("nope")
    sweep._check_launcher("basic")
    sweep._check_launcher("joblib")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "ray" in name else real(name, *a))
    with pytest.raises(ConfigError) as info:
        sweep._check_launcher("ray")
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
    first = sweep._new_sweep_dir()
    assert re.fullmatch(r"runs/sweep/\d{8}-\d{6}", first.as_posix())
    first.mkdir(parents=True)
    assert sweep._new_sweep_dir() != first


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
    (sweep_dir / "sweep_plot.png").unlink()
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
    sweep.run_sweep(["coordination.expert_query_cost_weight=0.5", "algorithm=always_expert",
                     f"agents.expert={good},{missing}", *overrides,
                     f"hydra.sweep.dir={sweep_dir}"], console)
    assert "Traceback" not in capsys.readouterr().out
    error = (sweep_dir / "1" / "error.txt").read_text()
    assert error.splitlines()[0].startswith("CheckpointError:") and "missing_expert.pt" in error
    assert "Traceback" in error
    assert json.loads((sweep_dir / "1" / "status.json").read_text())["status"] == "failed"
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"] == {"total": 2, "ok": 1, "failed": 1, "incomplete": 0}
    assert summary["failed_jobs"][0]["job"] == 1
    assert "missing_expert.pt" in summary["failed_jobs"][0]["error"]
    assert set(summary["methods"]) == {"always_expert"}
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


@pytest.mark.slow
def test_cli_summarize_and_one_line_errors(tmp_path):
    from test_cli import assert_one_line_error, duo

    sweep_dir = _fake_sweep_dir(tmp_path / "sw")
    proc = duo("sweep", "--summarize", str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    assert "AUC" in proc.stdout and "missing.pt" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"sweep dir: {sweep_dir}"
    assert (sweep_dir / "sweep_summary.json").is_file()
    assert_one_line_error(duo("sweep", "algorithm=random,nosuch", f"hydra.sweep.dir={tmp_path}/x"),
                          "nosuch", "logit")
    assert_one_line_error(duo("sweep", "seed=1,2", f"hydra.sweep.dir={sweep_dir}"),
                          "sweep.resume=true")
    if importlib.util.find_spec("ray") is None:
        assert_one_line_error(duo("sweep", "seed=1,2", "hydra/launcher=ray"),
                              "pip install 'duo-cli[ray]'")

"""The served log as research data, on MiniGrid with the shipped agents and a real server:
what every step records, the learning-curve summary, and off-policy evaluation from the log
against what ``duo eval`` measures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from duo_cli.checkpoint import save_policy
from duo_cli.cli import app
from duo_cli.client import DuoClient
from duo_cli.config import compose
from duo_cli.coordination.problem import CoordProblem
from duo_cli.envs import make_env
from duo_cli.serve.server import BackgroundServer
from duo_cli.serve.store import read_episodes, read_observations

TASK = "LavaGap"
#: the logit coordinator's threshold on the novice's max logit: on LavaGapS7 the shipped
#: novice's max logit is below 8.5 at about 3 steps in 4, so it asks the expert often and its
#: episodes stay short (about 10.5 steps), which a random(p=0.5) log covers
THRESHOLD = 8.5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Coordinator checkpoints over the shipped LavaGap agents: random (p=0.5) and logit."""
    root = tmp_path_factory.mktemp("coords")
    out = {}
    for method, params in (("random_half", {"p": 0.5}), ("logit", {"threshold": THRESHOLD})):
        cfg = compose(["env=minigrid", f"env.task={TASK}", f"algorithm={method}",
                       "torch_threads=1", "progress=false"], "coord")
        problem = CoordProblem(cfg, torch.device("cpu"))
        env = problem.env("test", 1)
        policy = problem.policy(env)
        env.close()
        policy.set_params({**policy.get_params(), **params})
        out[method] = save_policy(root / f"{method}.pt", policy, problem.checkpoint_metadata())
    return out


def _server(ckpt: Path, run_dir: Path) -> BackgroundServer:
    over = ["serve.port=0", "torch_threads=1"]
    return BackgroundServer(compose([*over, f"run_dir={run_dir}"]), str(ckpt), over)


def test_every_step_is_logged_for_research(checkpoints, tmp_path):
    with _server(checkpoints["random_half"], tmp_path / "served") as srv, \
            DuoClient(srv.url) as duo:
        version = duo.health()["model_version"]
        env = make_env(srv.cfg.env, "test", 1)
        obs = env.reset(seed=1)[0][0]
        sent = []
        eid = duo.start_episode(training_enabled=False)
        for t in range(3):
            step = duo.act(eid, obs)
            assert step["p_expert"] == 0.5 and step["model_version"] == version
            sent.append(obs)
            obs = env.step(np.array([step["action"]]))[0][0]
            if t == 1:
                duo.log_returns(eid, 0.5)
        duo.log_action(eid, 2, observation=obs)  # the application acts itself
        sent.append(obs)
        res = duo.end_episode(eid, observation=obs, truncated=True)
        assert res["status"] == "truncated"
        ext = duo.start_episode(expert="external")
        while duo.act(ext, obs)["actor"] != "expert":
            pass
        duo.log_action(ext, 5)  # the external expert's action, after the coordinator chose it
        duo.end_episode(ext)
        env.close()
        run_dir = srv.run_dir
    recs = {r["episode_id"]: r for r in read_episodes(run_dir)}
    rec, s = recs[eid], recs[eid]["steps"]
    assert rec["status"] == "truncated" and rec["training_enabled"] is False
    assert s["actor"][3] == "application" and s["action"][3] == 2
    assert s["p_expert"] == [0.5, 0.5, 0.5, None] and s["p_choice"] == [0.5, 0.5, 0.5, None]
    assert s["model_version"] == [version] * 3 + [None]
    assert s["reward"] == [0.0, 0.5, 0.0, 0.0] and rec["base_return"] == 0.5
    rows = read_observations(run_dir)
    np.testing.assert_array_equal(rows[s["obs_row"]], np.stack(sent))
    np.testing.assert_array_equal(rows[rec["final_obs_row"]], sent[-1])
    e = recs[ext]["steps"]
    assert e["actor"][-1] == "expert" and e["action"][-1] == 5 and e["p_choice"][-1] == 0.5
    assert recs[ext]["expert"] == "external" and recs[ext]["status"] == "ended"

    out = CliRunner().invoke(app, ["eval", str(checkpoints["logit"]), "--from-log",
                                   str(run_dir), f"run_dir={tmp_path / 'ope'}"])
    assert out.exit_code == 2 and "1 step(s) in 1 episode(s) have no behaviour" in out.output
    out = CliRunner().invoke(app, ["serve", "--summarize", str(run_dir)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "learning curve" in out.output and version in out.output
    assert (run_dir / "learning_curve.png").stat().st_size > 0


def _drive(url: str, env, quota: int, seed: int) -> None:
    """``quota`` complete episodes per env slot (none cut short, so none is left out), one
    call at a time in a fixed order: the server's draws, and so the log, are reproducible."""
    slots = env.num_envs
    with DuoClient(url) as duo:
        obs, _ = env.reset(seed=seed)
        ids = [duo.start_episode() for _ in range(slots)]
        count = np.zeros(slots, dtype=np.int64)
        while (count < quota).any():
            live = np.flatnonzero(count < quota)
            actions = np.zeros(slots, dtype=np.int64)
            actions[live] = [duo.act(ids[i], obs[i])["action"] for i in live]
            obs, reward, term, trunc, _ = env.step(actions)
            for i in live:
                if reward[i]:
                    duo.log_returns(ids[i], float(reward[i]))
                if term[i] or trunc[i]:
                    duo.end_episode(ids[i], truncated=bool(trunc[i] and not term[i]))
                    count[i] += 1
                    if count[i] < quota:
                        ids[i] = duo.start_episode()


@pytest.mark.slow
def test_off_policy_estimate_covers_duo_eval(checkpoints, tmp_path):
    """A random(p=0.5) coordinator serves 320 LavaGap test episodes; the estimate of the logit
    coordinator's return from that log covers, within its 95% CI, what duo eval measures
    for the logit coordinator on the test levels."""
    from duo_cli.commands.evaluate import evaluate_checkpoint
    from duo_cli.serve.offpolicy import evaluate_from_log

    over = ["split=test", "evaluation.num_episodes=256", "evaluation.num_envs=32",
            "torch_threads=1", "progress=false"]
    eval_dir = evaluate_checkpoint(compose([*over, f"run_dir={tmp_path / 'eval'}"]),
                                   str(checkpoints["logit"]), _console(), over)
    measured = json.loads((eval_dir / "summary.json").read_text())["test"]["reward_mean"]
    with _server(checkpoints["random_half"], tmp_path / "served") as srv:
        env = make_env(srv.cfg.env, "test", 32)
        _drive(srv.url, env, 10, int(srv.cfg.env.test.seed))
        env.close()
        run_dir = srv.run_dir
    ope_over = ["torch_threads=1", f"run_dir={tmp_path / 'ope'}"]
    ope_dir = evaluate_from_log(compose(ope_over), str(checkpoints["logit"]), str(run_dir),
                                _console(), ope_over)
    summary = json.loads((ope_dir / "summary.json").read_text())
    est = summary["offpolicy"]["action"]
    print(f"duo eval {measured:.4f}; from the log: {json.dumps(summary['offpolicy'])}")
    assert summary["log"]["episodes"] == 320 and not summary["excluded"]
    assert est["pdis_ci"][0] <= measured <= est["pdis_ci"][1]
    assert est["ess"] > 100


def _console() -> Console:
    return Console(file=io.StringIO(), width=150)

"""``duo serve serve.learn=true``: a real server on loopback learning from MiniGrid episodes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from duo_cli.client import DuoClient
from duo_cli.config import ConfigError, compose
from duo_cli.envs.minigrid import MiniGridVecEnv
from duo_cli.serve.learning import read_updates
from duo_cli.serve.metrics import prometheus
from duo_cli.serve.server import BackgroundServer
from duo_cli.serve.store import read_episodes

REPO = Path(__file__).resolve().parents[1]
TASK = ["env=minigrid", "env.task=LavaGap", "env.num_envs=2", "evaluation.num_episodes=2",
        "evaluation.num_envs=2", "torch_threads=1", "progress=false"]


@pytest.fixture(scope="module")
def ppo_coord(tmp_path_factory) -> Path:
    """A PPO coordinator on LavaGap with the shipped agents (two short iterations)."""
    from duo_cli.commands.train_coord import train_coord

    run = tmp_path_factory.mktemp("ppo") / "run"
    cfg = compose([*TASK, "algorithm=ppo", "algorithm.total_timesteps=32",
                   "algorithm.num_steps=8", "algorithm.num_minibatches=2",
                   f"run_dir={run}"], "coord")
    return train_coord(cfg, Console(file=io.StringIO())) / "last.pt"


def _server(ckpt: Path, run_dir: Path, *overrides: str) -> BackgroundServer:
    ov = ["serve.port=0", "torch_threads=1", "serve.learn=true", *overrides]
    return BackgroundServer(compose([*ov, f"run_dir={run_dir}"]), str(ckpt), ov)


def _drive(duo: DuoClient, steps: int, num: int = 2, seed: int = 0) -> list[dict]:
    """``num`` LavaGap games through the server for ``steps`` rounds; every act answer."""
    env = MiniGridVecEnv("LavaGap", num, "hard", 0, 1000, seed)
    obs, _ = env.reset(seed=seed)
    ids = [duo.start_episode() for _ in range(num)]
    answers = []
    for _ in range(steps):
        ans = [duo.act(e, o) for e, o in zip(ids, obs, strict=True)]
        answers += ans
        obs, reward, term, trunc, _ = env.step(np.array([a["action"] for a in ans]))
        for e, r in zip(ids, reward, strict=True):
            duo.log_returns(e, float(r))
        for i in np.flatnonzero(term | trunc):
            duo.end_episode(ids[i], truncated=bool(trunc[i]))
            ids[i] = duo.start_episode()
    for e in ids:
        duo.end_episode(e, truncated=True)
    env.close()
    return answers


def test_learning_server_updates_versions_and_logs(ppo_coord, tmp_path):
    with _server(ppo_coord, tmp_path / "s", "serve.learn_steps=8") as srv:
        with DuoClient(srv.url) as duo:
            assert duo.health()["model_updates"] == 0
            answers = _drive(duo, 24)
            health = duo.health()
    updates = [a["model_updates"] for a in answers]
    assert updates == sorted(updates) and updates[-1] >= 4  # 48 steps, 8 per update
    base = answers[0]["model_version"]
    for a in answers:  # the version names the weights: digest, then digest+N
        assert a["model_version"] == (base if a["model_updates"] == 0
                                      else f"{base}+{a['model_updates']}")
    rows = read_updates(tmp_path / "s")
    assert [r["update"] for r in rows] == list(range(1, health["model_updates"] + 1))
    assert all(r["steps"] >= 8 for r in rows)
    last = torch.load(tmp_path / "s" / "last.pt", weights_only=True)
    assert last["train_state"]["model_version"] == health["model_updates"]
    # every server-chosen step of the log has its probability and the weights that chose it
    for rec in read_episodes(tmp_path / "s"):
        steps = rec["steps"]
        assert all(p is not None for p in steps["p_expert"])
        assert all(v is not None and v.startswith(base) for v in steps["model_version"])


def test_excluded_steps_are_counted_and_never_trained(ppo_coord, tmp_path):
    obs = MiniGridVecEnv("LavaGap", 1, "hard", 0, 1000, 0).reset(seed=0)[0][0]
    with _server(ppo_coord, tmp_path / "s", "serve.learn_steps=1000") as srv:
        learner = srv.service.coord.learner
        with DuoClient(srv.url) as duo:
            off = duo.start_episode(episode_id="off", training_enabled=False)
            for _ in range(3):
                duo.act(off, obs)
            app = duo.start_episode(episode_id="app")
            duo.act(app, obs)
            duo.act(app, obs)
            duo.log_action(app, 2, obs)  # the application's own step: no probability
            ok = duo.start_episode(episode_id="ok")
            duo.act(ok, obs)
            duo.log_returns(ok, 0.5)
            duo.act(ok, obs)
            duo.end_episode(ok)
            metrics = prometheus(srv.service)
        segments = {s.key: s for s in learner.take_segments()}
    assert learner.excluded["training_disabled"] == 3
    assert learner.excluded["application_action"] == 1
    assert learner.excluded["before_break"] == 1  # app's second act: its outcome is the app's
    assert sorted(segments) == ["app", "ok"]
    assert len(segments["app"].steps) == 1 and len(segments["ok"].steps) == 2
    assert segments["ok"].ended and not segments["app"].ended
    assert 'duo_serve_excluded_steps_total{reason="training_disabled"} 3' in metrics
    assert 'duo_serve_excluded_steps_total{reason="application_action"} 1' in metrics


def test_learning_is_refused_where_ppo_cannot_learn(ppo_coord, tmp_path):
    with pytest.raises(ConfigError, match="serve.temperature=0.5"):
        _server(ppo_coord, tmp_path / "t", "serve.temperature=0.5")
    assert not (tmp_path / "t").exists()  # nothing written
    proc = subprocess.run(
        [sys.executable, "-m", "duo_cli.cli", "serve", str(ppo_coord), "serve.learn=true",
         "serve.temperature=0.5", "serve.port=0", f"run_dir={tmp_path / 'u'}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "u").exists()


def _start(ckpt: Path, run_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "duo_cli.cli", "serve", str(ckpt), "serve.learn=true",
         "serve.learn_steps=8", "serve.port=0", f"run_dir={run_dir}", "torch_threads=1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1]
    proc.kill()
    raise AssertionError(proc.stderr.read())


@pytest.mark.slow
def test_sigkill_during_learning_then_resume(ppo_coord, tmp_path):
    run_dir = tmp_path / "learn"
    proc, url = _start(ppo_coord, run_dir)
    try:
        with DuoClient(url) as duo:
            _drive(duo, 12)
            deadline = time.time() + 30
            while duo.health()["model_updates"] < 2 and time.time() < deadline:
                _drive(duo, 4)
            before = duo.health()["model_updates"]
            # kill mid-stream: acts in flight, maybe mid-update
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        proc.kill()
    saved = torch.load(run_dir / "last.pt", weights_only=True)["train_state"]["model_version"]
    assert saved >= before - 1  # the update being written when killed may be lost, no more
    proc, url = _start(ppo_coord, run_dir, "resume=true")
    try:
        with DuoClient(url) as duo:
            health = duo.health()
            assert health["model_updates"] == saved
            assert health["model_version"].endswith(f"+{saved}")
            answers = _drive(duo, 12)
            assert answers[-1]["model_updates"] > saved
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert "resumed learning at update" in err
    finally:
        proc.kill()
    numbers = [r["update"] for r in read_updates(run_dir)]
    assert numbers == list(range(1, len(numbers) + 1))  # none lost, none applied twice
    assert len(read_episodes(run_dir)) > 0
    assert json.loads((run_dir / "updates.jsonl").read_text().splitlines()[-1])["update"] \
        == numbers[-1]


def test_checkpoint_stored_before_serve_learn_still_loads(ppo_coord):
    """A checkpoint whose stored serve node predates the learning keys is still a setting."""
    from duo_cli.checkpoint import load_policy_checkpoint
    from duo_cli.config import checkpoint_config

    run_config = load_policy_checkpoint(ppo_coord).metadata.run_config
    for key in ("learn", "learn_steps", "max_policy_lag"):
        del run_config["serve"][key]
    cfg = checkpoint_config(compose(["torch_threads=1"]), run_config, "old.pt", [])
    assert cfg.serve.learn is False and cfg.serve.max_policy_lag == 1


def test_step_call_serves_many_episodes_per_request_item_by_item(ppo_coord, tmp_path):
    """POST /v1/step: rewards, ends, starts and acts of many episodes; a bad item refuses
    only itself."""
    obs = MiniGridVecEnv("LavaGap", 1, "hard", 0, 1000, 0).reset(seed=0)[0][0]
    with _server(ppo_coord, tmp_path / "s", "serve.learn_steps=1000") as srv:
        with DuoClient(srv.url) as duo:
            first = duo.step([{"episode_id": "a", "start": True, "observation": obs},
                              {"episode_id": "b", "start": True, "observation": obs},
                              {"episode_id": "nope", "observation": obs}])
            assert [r.get("step") for r in first[:2]] == [0, 0]
            assert first[2]["status"] == 404
            second = duo.step([{"episode_id": "a", "reward": 1.0, "end": "truncated"},
                               {"episode_id": "b", "reward": 0.5, "observation": obs},
                               {"episode_id": "c", "start": True}])
            assert second[0]["status"] == "truncated" and second[0]["base_return"] == 1.0
            assert second[1]["step"] == 1 and second[2]["episode_id"] == "c"
            # one episode twice in a request: the first act is answered, the second refused
            twice = duo.step([{"episode_id": "b", "observation": obs}] * 2)
            assert twice[0]["step"] == 2 and twice[1]["status"] == 409
            duo.end_episode("b")
            duo.end_episode("c")
        segments = {s.key: s for s in srv.service.coord.learner.take_segments()}
    assert sorted(segments) == ["a", "b"]
    # b's first step: the reward reported with its next act, less that step's cost
    assert segments["b"].steps[0].reward == pytest.approx(0.5 - first[1]["cost"])
    recs = {r["episode_id"]: r for r in read_episodes(tmp_path / "s")}
    assert recs["a"]["status"] == "truncated" and recs["b"]["base_return"] == 0.5


def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "serve_learn_minigrid", REPO / "examples/serve_learn_minigrid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _test_return(ckpt: Path, run_dir: Path) -> dict:
    from duo_cli.commands.evaluate import evaluate_checkpoint

    over = ["split=test", "evaluation.num_episodes=96", "evaluation.num_envs=32",
            f"run_dir={run_dir}", "torch_threads=1"]
    out = evaluate_checkpoint(compose(over), str(ckpt), Console(file=io.StringIO()), over)
    return json.loads((out / "summary.json").read_text())["test"]


@pytest.mark.slow
def test_served_learning_matches_in_process_ppo(tmp_path):
    """16 concurrent LavaGap games through a learning server for as many steps as
    ``duo train --type coord algorithm=ppo`` takes in process: the test returns agree
    within their 95% CIs, and both learned (beyond the starting weights' CI)."""
    from duo_cli.commands.train_coord import train_coord

    job = [*TASK[1:], "env.num_envs=16", "algorithm=ppo", "algorithm.num_steps=64",
           "coordination.expert_query_cost_weight=0.4", "algorithm.eval_every=0",
           "coordination.train_setting=test"]  # the served problem: novice and expert, hard
    batch, updates = 16 * 64, 40

    def train(steps: int, name: str) -> Path:
        cfg = compose([*job, "env=minigrid", f"algorithm.total_timesteps={steps}",
                       f"run_dir={tmp_path / name}"], "coord")
        return train_coord(cfg, Console(file=io.StringIO())) / "last.pt"

    start = train(batch, "start")  # one iteration: where the served coordinator starts
    local = train(batch * (updates + 1), "local")
    with _server(start, tmp_path / "served", f"serve.learn_steps={batch}") as srv:
        import asyncio

        cfg = srv.cfg
        asyncio.run(_example().play(srv.url, "LavaGap", str(cfg.env.test.variant),
                                    dict(cfg.env.train), 16, batch * updates + 16 * 40))
        assert srv.service.coord.learner.version >= updates
    served = tmp_path / "served" / "last.pt"
    got = {name: _test_return(ckpt, tmp_path / f"eval_{name}")
           for name, ckpt in (("start", start), ("local", local), ("served", served))}
    gap = abs(got["served"]["reward_mean"] - got["local"]["reward_mean"])
    assert gap <= got["served"]["reward_ci95"] + got["local"]["reward_ci95"], got
    for name in ("local", "served"):
        assert got[name]["reward_mean"] > got["start"]["reward_mean"] + got["start"][
            "reward_ci95"], (name, got)

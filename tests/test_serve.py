"""``duo serve``: a real uvicorn server on a free loopback port, driven by the httpx client."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from rich.console import Console
from served import OBS, REPO
from served import server as _server

from duo_cli.client import DuoClient, ServeError
from duo_cli.config import ConfigError, compose
from duo_cli.serve.store import read_episodes, summarize_log
from duo_cli.serve.wire import encode_array


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_full_episode_protocol_and_log(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path) as srv, DuoClient(srv.url) as duo:
        h = duo.health()
        assert h["status"] == "ok" and h["method"] == "logit" and h["active_episodes"] == 0
        a_bp, b_bp = h["alpha"] * h["bp"], h["beta"] * h["bp"]
        eid = duo.start_episode(episode_id="game-1", training_enabled=False)
        assert eid == "game-1" and duo.health()["active_episodes"] == 1
        rng = np.random.default_rng(1)
        prev, total_cost, steps = None, 0.0, []
        for t in range(12):
            obs = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if t % 2 else OBS.tolist()
            step = duo.act(eid, obs)
            assert step["step"] == t and step["actor"] in ("novice", "expert")
            assert 0 <= step["action"] < 15 and 0 <= step["novice_action"] < 15
            if step["actor"] == "novice":
                assert step["action"] == step["novice_action"]
            want = a_bp * (step["actor"] == "expert") + b_bp * (prev not in (None, step["actor"]))
            assert step["cost"] == pytest.approx(want)
            total_cost += want
            prev = step["actor"]
            steps.append(step)
            duo.log_returns(eid, 0.5, info={"t": t})
        res = duo.end_episode(eid)
        assert res["status"] == "ended" and res["length"] == 12
        assert res["base_return"] == pytest.approx(6.0)
        assert res["cost"] == pytest.approx(total_cost)
        assert res["return"] == pytest.approx(6.0 - total_cost)
        assert res["expert_steps"] == sum(s["actor"] == "expert" for s in steps)
        with pytest.raises(ServeError) as err:
            duo.act(eid, OBS)
        assert err.value.status == 410
        run_dir = srv.run_dir
    (rec,) = read_episodes(run_dir)
    assert rec["episode_id"] == "game-1" and rec["status"] == "ended"
    assert rec["training_enabled"] is False and rec["info"] == {"t": 11}
    assert rec["steps"]["actor"] == [s["actor"] for s in steps]
    assert rec["steps"]["action"] == [s["action"] for s in steps]
    assert rec["model_version"] and rec["return"] == pytest.approx(res["return"])
    table = summarize_log(read_episodes(run_dir))
    assert table["ended"]["episodes"] == 1


def test_external_expert_and_off_policy_actions(coordinators, tmp_path):
    # ask_every_k (k=3) asks the expert at steps 0, 3, 6, ...
    with _server(coordinators["ask_every_k"], tmp_path, "serve.expert=external") as srv, \
            DuoClient(srv.url) as duo:
        eid = duo.start_episode()
        step = duo.act(eid, OBS)
        assert step["actor"] == "expert" and step["action"] is None
        with pytest.raises(ServeError) as err:
            duo.act(eid, OBS)  # the application must report its expert's action first
        assert err.value.status == 409 and "log_action" in err.value.message
        duo.log_returns(eid, 1.0)
        assert duo.log_action(eid, 4)["actor"] == "expert"
        assert duo.act(eid, OBS)["actor"] == "novice"
        off = duo.log_action(eid, 2, observation=OBS)  # the application acted itself
        assert off["actor"] == "application" and off["cost"] == 0.0
        with pytest.raises(ServeError) as err:
            duo.log_action(eid, 99)
        assert err.value.status == 422
        # a model expert for this episode only
        other = duo.start_episode(expert="model")
        assert duo.act(other, OBS)["action"] is not None
        res = duo.end_episode(eid)
        assert res["length"] == 3 and res["expert_steps"] == 1 and res["application_steps"] == 1
        run_dir = srv.run_dir
    recs = {r["episode_id"]: r for r in read_episodes(run_dir)}
    assert recs[eid]["steps"]["action"][:1] == [4]
    assert recs[eid]["steps"]["actor"] == ["expert", "novice", "application"]
    assert recs[other]["status"] == "interrupted"  # live at shutdown


def test_request_id_makes_retries_safe(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path) as srv, DuoClient(srv.url) as duo:
        eid = duo.start_episode()
        a = duo.act(eid, OBS, request_id="r1")
        assert duo.act(eid, OBS, request_id="r1") == a
        duo.log_returns(eid, 1.0, request_id="r2")
        duo.log_returns(eid, 1.0, request_id="r2")
        res = duo.end_episode(eid)
    assert res["length"] == 1 and res["base_return"] == pytest.approx(1.0)


def test_too_many_episodes_answer_429(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path, "serve.max_concurrent=2") as srv, \
            DuoClient(srv.url) as duo:
        first = [duo.start_episode(), duo.start_episode()]
        r = duo.http.post("/v1/episodes", json={})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "too many" in r.json()["error"]
        duo.end_episode(first[0])
        assert duo.start_episode()


def test_overload_refuses_the_excess_and_loses_no_accepted_step(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path, "serve.max_concurrent=4") as srv:
        started, tried = threading.Barrier(8), threading.Barrier(8)

        def player(i: int) -> str:
            with DuoClient(srv.url) as duo:
                started.wait()
                try:
                    eid = duo.start_episode(episode_id=f"p{i}")
                except ServeError as exc:
                    tried.wait()
                    return str(exc.status)
                tried.wait()  # all 8 have asked before any episode ends
                for _ in range(5):
                    duo.act(eid, OBS)
                    duo.log_returns(eid, 1.0)
                return "ok" if duo.end_episode(eid)["length"] == 5 else "short"

        with ThreadPoolExecutor(8) as pool:  # 2x the limit at once
            outcomes = list(pool.map(player, range(8)))
        recs = read_episodes(srv.run_dir)
    assert sorted(outcomes) == ["429"] * 4 + ["ok"] * 4
    assert len(recs) == outcomes.count("ok")
    assert all(r["length"] == 5 and r["base_return"] == 5.0 for r in recs)


def test_abandoned_episodes_are_reaped_and_logged(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path, "serve.episode_timeout_s=0.4") as srv, \
            DuoClient(srv.url) as duo:
        eid = duo.start_episode()
        duo.act(eid, OBS)
        time.sleep(1.5)
        assert duo.health()["active_episodes"] == 0
        with pytest.raises(ServeError) as err:
            duo.act(eid, OBS)
        assert err.value.status == 410 and "abandoned" in err.value.message
        (rec,) = read_episodes(srv.run_dir)
    assert rec["status"] == "abandoned" and "time-out" in rec["reason"] and rec["length"] == 1


def test_malformed_requests_are_4xx_and_the_server_keeps_serving(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path, "serve.max_request_bytes=200000") as srv, \
            DuoClient(srv.url) as duo:
        eid = duo.start_episode()
        post = duo.http.post
        act = f"/v1/episodes/{eid}/act"
        good = encode_array(OBS)
        cases = [
            (post(act, content=b"{not json"), 400),
            (post(act, content=b"[1, 2]"), 400),
            (post(act, json={}), 422),
            (post(act, json={"observation": {**good, "shape": [64, 64]}}), 422),
            (post(act, json={"observation": {**good, "dtype": "float32"}}), 422),
            (post(act, json={"observation": {**good, "data": "!!"}}), 422),
            (post(act, json={"observation": {**good, "data": good["data"][:-8]}}), 422),
            (post(act, json={"observation": [[1, 2], [3]]}), 422),
            (post(act, json={"observation": np.full((64, 64, 3), 300).tolist()}), 422),
            (post(act, content=b'{"observation": NaN}'), 422),
            (post(act, content=b"[" * 100_000), 400),
            (post(act, json={"observation": [[[1, 2, "3"]] * 64] * 64}), 422),
            (post(act, json={"observation": [[[True] * 3] * 64] * 64}), 422),
            (post(act, json={"observation": good, "obsrvation": 1}), 422),
            (post(f"/v1/episodes/{eid}/returns", json={"reward": "much"}), 422),
            (post(f"/v1/episodes/{eid}/returns", content=b'{"reward": Infinity}'), 422),
            (post(f"/v1/episodes/{eid}/returns", json={"reward": 1.7e308}), 200),
            (post(f"/v1/episodes/{eid}/returns", json={"reward": 1.7e308}), 422),
            (post("/v1/episodes/nope/act", json={"observation": good}), 404),
            (post("/v1/episodes", json={"episode_id": "a b/c"}), 422),
            (post("/v1/episodes", json={"episode_id": eid}), 409),
            (post("/v1/nowhere", json={}), 404),
            (duo.http.get(act), 405),
            (post(act, content=b"x" * 250_000), 413),
        ]
        for resp, status in cases:
            assert resp.status_code == status, (resp.status_code, resp.text)
            body = resp.json()
            assert status == 200 or (set(body) == {"error"} and "\n" not in body["error"])
        rng = np.random.default_rng(0)  # a little fuzzing: random bytes and JSON values
        for _ in range(40):
            junk = rng.choice([b"null", b"1", b"\"x\"", b"{\"observation\": {}}",
                               bytes(rng.integers(0, 256, 30, dtype=np.uint8))])
            path = rng.choice([act, "/v1/episodes", f"/v1/episodes/{eid}/end",
                               f"/v1/episodes/{eid}/log_action"])
            r = post(str(path), content=junk)
            assert 400 <= r.status_code < 500 or r.status_code == 200, r.text
        assert duo.health()["status"] == "ok"
        assert duo.act(duo.start_episode(), OBS)["actor"] in ("novice", "expert")


def test_token_required_off_loopback(coordinators, tmp_path, monkeypatch):
    monkeypatch.delenv("DUO_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="not loopback"):
        _server(coordinators["logit"], tmp_path, "serve.host=0.0.0.0")
    token = "s3cret-token"
    with _server(coordinators["logit"], tmp_path, "serve.host=0.0.0.0", f"serve.token={token}",
                 "overwrite=true") as srv:
        with DuoClient(srv.url) as anon:
            with pytest.raises(ServeError) as err:
                anon.health()
            assert err.value.status == 401
        with DuoClient(srv.url, token="wrong-token") as bad:
            with pytest.raises(ServeError):
                bad.start_episode()
        with DuoClient(srv.url, token=token) as duo:
            assert duo.health()["status"] == "ok"
        assert token not in (srv.run_dir / "config.yaml").read_text()


def test_serve_refuses_an_agent_checkpoint(tiny_agents):
    from typer.testing import CliRunner

    from duo_cli.cli import app

    res = CliRunner().invoke(app, ["serve", str(tiny_agents["paths"]["novice"]), "serve.port=0"])
    assert res.exit_code == 2
    assert "coordinator checkpoint" in res.output and "Traceback" not in res.output


def test_stored_setting_out_of_range_is_refused_alike_by_eval_and_serve(coordinators, tmp_path):
    """A checkpoint whose stored alpha is -1 (asking the expert pays) and temperature -5:
    duo eval and duo serve rebuild its setting the same validated way and refuse it alike."""
    from typer.testing import CliRunner

    from duo_cli.checkpoint import load_checkpoint, save_checkpoint
    from duo_cli.cli import app

    ckpt = load_checkpoint(coordinators["logit"])
    ckpt["metadata"]["run_config"]["coordination"].update(expert_query_cost_weight=-1.0,
                                                           temperature=-5.0)
    ckpt.pop("format")
    bad = save_checkpoint(tmp_path / "bad.pt", ckpt)
    lines = {}
    for command in ("eval", "serve"):
        run_dir = tmp_path / command
        res = CliRunner().invoke(app, [command, str(bad), "serve.port=0", f"run_dir={run_dir}"])
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output and not run_dir.exists()
        (lines[command],) = res.output.strip().splitlines()
    assert lines["eval"] == lines["serve"]
    assert "coordination.expert_query_cost_weight: -1.0; must be >= 0" in lines["serve"]


# -- the contract: served episodes == duo eval -----------------------------------------------------

def _example():
    spec = importlib.util.spec_from_file_location("serve_procgen", REPO / "examples/serve_procgen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("method", ["logit", "ask_every_k"])
def test_served_episodes_match_duo_eval(method, coordinators, tmp_path):
    from duo_cli.commands.evaluate import evaluate_checkpoint
    from duo_cli.evaluation.statistics import summarize_episodes

    greedy = ["coordination.temperature=0", "evaluation.temperature=0"]
    eval_over = [*greedy, "split=test", f"run_dir={tmp_path / 'eval'}"]
    run_dir = evaluate_checkpoint(compose(eval_over), str(coordinators[method]), _quiet(),
                                  eval_over)
    want = json.loads((run_dir / "summary.json").read_text())["test"]
    with _server(coordinators[method], tmp_path, *greedy) as srv:
        cfg = srv.cfg
        n = min(int(cfg.evaluation.num_envs), int(cfg.evaluation.num_episodes))
        records = asyncio.run(_example().play(srv.url, cfg.env.task, dict(cfg.env.test),
                                              int(cfg.evaluation.num_episodes), n))
        batches = srv.service.batcher
        assert batches.max_seen > 1  # the games' acts were answered together
    got = summarize_episodes(records, int(cfg.evaluation.num_episodes), 0)
    assert got["rewards"] == pytest.approx(want["rewards"], abs=1e-5)
    assert got["base_rewards"] == pytest.approx(want["base_rewards"], abs=1e-6)
    for key in ("episode_length_mean", "episode_length_min", "episode_length_max",
                "expert_frac", "switches_mean"):
        assert got[key] == pytest.approx(want[key]), key

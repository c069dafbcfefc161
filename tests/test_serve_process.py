"""``duo serve`` as processes: a killed client's episodes reaped, SIGTERM draining the
episodes in flight into the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from served import OBS, REPO
from served import server as _server

from duo_cli.client import DuoClient
from duo_cli.serve.store import read_episodes

_CLIENT = """
import sys, numpy as np
from duo_cli.client import DuoClient
duo = DuoClient(sys.argv[1])
obs = np.zeros((64, 64, 3), np.uint8)
for i in range(3):
    e = duo.start_episode(episode_id=f"k{i}")
    duo.act(e, obs)
print("ready", flush=True)
import time; time.sleep(60)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_killed_client_episodes_are_reaped(coordinators, tmp_path):
    with _server(coordinators["logit"], tmp_path, "serve.episode_timeout_s=0.5") as srv:
        proc = subprocess.Popen([sys.executable, "-c", _CLIENT, srv.url], stdout=subprocess.PIPE,
                                text=True, env=_env())
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while srv.service.table.live and time.time() < deadline:
            time.sleep(0.1)
        recs = read_episodes(srv.run_dir)
    assert sorted(r["episode_id"] for r in recs) == ["k0", "k1", "k2"]
    assert {r["status"] for r in recs} == {"abandoned"}


def test_sigterm_drains_and_logs_episodes_in_flight(coordinators, tmp_path):
    run_dir = tmp_path / "served"
    proc = subprocess.Popen(
        [sys.executable, "-m", "duo_cli.cli", "serve", str(coordinators["ask_every_k"]),
         "serve.port=0", f"run_dir={run_dir}", "torch_threads=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("serving on "):
                url = line.split()[-1]
                break
        assert url and url.startswith("http://127.0.0.1:")
        with DuoClient(url) as duo:
            done = duo.start_episode(episode_id="done")
            duo.act(done, OBS)
            duo.end_episode(done)
            live = [duo.start_episode(episode_id=f"live{i}") for i in range(4)]
            for e in live:
                duo.act(e, OBS)
                duo.log_returns(e, 1.0)
            busy, answered = duo.start_episode(episode_id="busy"), []

            def spam() -> None:  # acts in flight while the server shuts down
                with DuoClient(url, timeout=10) as c:
                    try:
                        while True:
                            answered.append(c.act(busy, OBS)["step"])
                    except Exception:  # refused or cut once the server is going
                        return

            spammer = threading.Thread(target=spam)
            spammer.start()
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            spammer.join(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; 6 episodes" in out
    recs = {r["episode_id"]: r for r in read_episodes(run_dir)}
    assert recs["done"]["status"] == "ended"
    for i in range(4):
        rec = recs[f"live{i}"]
        assert rec["status"] == "interrupted" and rec["length"] == 1 and rec["base_return"] == 1.0
    # every answered act is in the log (at most one more: answered as the connection closed)
    assert answered and recs["busy"]["status"] == "interrupted"
    assert len(answered) <= recs["busy"]["length"] <= len(answered) + 1
    text = (run_dir / "episodes.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 6

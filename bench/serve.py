"""Load test of ``duo serve`` on loopback: prints ``name: value`` lines.

Two real ``duo serve`` processes serve the same logit coordinator over the shipped coinrun
novice (small CNN) and expert (IMPALA CNN) (untrained ones of the same kinds if not
shipped): one batching (``serve.max_batch=64``), one answering every request with its own
forward (``serve.max_batch=1``). This process is the application: one episode acting
sequentially, then 64 concurrent episodes (one thread each), in interleaved blocks.

    serve_rps_1               acts/s, one episode, sequential
    serve_p50_ms_1 / _p99_    latency of those acts
    serve_lone_latency_ratio  p50 of a lone act, batching on / off (target <= 1.1)
    serve_rps_64              acts/s, 64 concurrent episodes, batching on
    serve_p99_ms_64           p99 act latency there
    serve_rps_64_unbatched    the same with one forward per request
    serve_batching_speedup    serve_rps_64 / serve_rps_64_unbatched (target >= 3)
    serve_mean_batch_64       acts per forward with batching on

    python bench/serve.py [--seconds 2.5] [--blocks 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from duo_cli.client import DuoClient  # noqa: E402
from duo_cli.serve.wire import encode_array  # noqa: E402


def emit(name: str, value: float, fmt: str = "{:.2f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def make_coordinator(directory: Path) -> Path:
    """A logit coordinator checkpoint (threshold at a middling confidence) over coinrun agents."""
    from duo_cli.checkpoint import save_policy
    from duo_cli.config import compose
    from duo_cli.coordination.problem import CoordProblem
    from tests.artifacts import make_untrained_agents

    shipped = REPO / "checkpoints/procgen/coinrun"
    overrides = ["algorithm=logit", "env.task=coinrun", "torch_threads=1",
                 "coordination.base_penalty=0.1"]
    if not (shipped / "expert.pt").exists():
        print("# shipped coinrun agents missing: using untrained ones", file=sys.stderr)
        paths = make_untrained_agents(directory, "coinrun", hidden_dim=256)
        overrides += [f"agents.{role}={path}" for role, path in paths.items()]
    cfg = compose(overrides, "coord")
    setup = CoordProblem(cfg, "cpu")
    env = setup.env("test", 1)
    policy = setup.policy(env)
    obs = np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    import torch

    with torch.no_grad():
        logits = setup.agents["novice"].forward(torch.from_numpy(obs)).logits.float().numpy()
    policy.set_params({"metric": "max_logit", "threshold": float(np.median(logits.max(1)))})
    path = directory / "coord_logit.pt"
    save_policy(path, policy, setup.checkpoint_metadata())
    return path


def launch(ckpt: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "duo_cli.cli", "serve", str(ckpt), "serve.port=0",
         f"run_dir={run_dir}", "torch_threads=1", "serve.max_concurrent=128", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)


def url_of(proc: subprocess.Popen) -> str:
    """Wait for ``serving on URL``."""
    for line in proc.stdout:
        if line.startswith("serving on "):
            return line.split()[-1]
    raise RuntimeError(f"duo serve did not start (exit {proc.wait()})")


def observations(n: int = 16) -> list[bytes]:
    """Ready act bodies (JSON, base64 observations)."""
    rng = np.random.default_rng(1)
    return [json.dumps({"observation": encode_array(
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))}).encode() for _ in range(n)]


def _episode(url: str, bodies: list[bytes], k: int, t_start: float, t_end: float,
             lat: list[float]) -> None:
    """One application thread: an episode acting as fast as it is answered until ``t_end``.

    A lean stdlib HTTP/1.1 keep-alive connection, so that the load generator (64 threads
    in one Python process) is not what is measured; :class:`duo_cli.client.DuoClient`
    (httpx) costs more per call on the client side.
    """
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json"}

    def post(path: str, body: bytes) -> dict:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status} {data}")
        return data

    eid = post("/v1/episodes", b"{}")["episode_id"]
    act = f"/v1/episodes/{eid}/act"
    post(act, bodies[k % len(bodies)])  # warm-up
    while time.perf_counter() < t_start:
        time.sleep(0.001)
    i = k
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        post(act, bodies[i % len(bodies)])
        lat.append(time.perf_counter() - t)
        i += 1
    post(f"/v1/episodes/{eid}/end", b"{}")
    conn.close()


def load(url: str, bodies: list[bytes], seconds: float, episodes: int) -> tuple[float, list]:
    """``episodes`` concurrent episodes for ``seconds``; returns (acts/s, latencies)."""
    lat: list[float] = []
    t_start = time.perf_counter() + 0.5 + 0.01 * episodes  # all connected and warmed up
    t_end = t_start + seconds
    threads = [threading.Thread(target=_episode, args=(url, bodies, k, t_start, t_end, lat))
               for k in range(episodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat) / seconds, lat


def batch_stats(url: str) -> tuple[int, int]:
    with DuoClient(url) as duo:
        text = duo.http.get("/metrics").text
    vals = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and "{" not in line)
    return int(vals["duo_serve_batches_total"]), int(vals["duo_serve_batched_acts_total"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2.5, help="per measured block")
    p.add_argument("--blocks", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ckpt = make_coordinator(d)
        procs: list[subprocess.Popen] = []
        try:
            procs = [launch(ckpt, d / "batched"), launch(ckpt, d / "single", "serve.max_batch=1")]
            url_b, url_s = url_of(procs[0]), url_of(procs[1])
            bodies = observations()
            rps_1, lat1 = load(url_b, bodies, args.seconds, 1)
            lat1_s = load(url_s, bodies, args.seconds, 1)[1]
            b0 = batch_stats(url_b)
            rps_b, rps_s, lat_b = [], [], []
            for _ in range(args.blocks):  # interleaved: the machine is shared
                r, lat = load(url_b, bodies, args.seconds, 64)
                rps_b.append(r)
                lat_b += lat
                rps_s.append(load(url_s, bodies, args.seconds, 64)[0])
            b1 = batch_stats(url_b)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    emit("serve_rps_1", rps_1, "{:.0f}")
    emit("serve_p50_ms_1", 1000 * float(np.percentile(lat1, 50)))
    emit("serve_p99_ms_1", 1000 * float(np.percentile(lat1, 99)))
    emit("serve_lone_latency_ratio", float(np.median(lat1) / np.median(lat1_s)))
    emit("serve_rps_64", float(np.mean(rps_b)), "{:.0f}")
    emit("serve_p99_ms_64", 1000 * float(np.percentile(lat_b, 99)))
    emit("serve_rps_64_unbatched", float(np.mean(rps_s)), "{:.0f}")
    emit("serve_batching_speedup", float(np.mean(rps_b) / np.mean(rps_s)))
    emit("serve_mean_batch_64", (b1[1] - b0[1]) / max(1, b1[0] - b0[0]))


if __name__ == "__main__":
    main()

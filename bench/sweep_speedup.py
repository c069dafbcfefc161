"""Benchmark: the same 6-job ``duo sweep`` with the basic launcher (jobs one after the
other) and with the joblib launcher (``hydra.launcher.n_jobs=2``).

Every job is a real coordination run (``algorithm=always_novice``: its selection and
test evaluations) on ``bossfight`` with freshly initialised tiny agent checkpoints
made in a temp dir, single-threaded (``torch_threads=1``, ``OMP_NUM_THREADS=1`` and
``env.num_threads=0``: procgen steps in the calling thread) and CPU-bound for several
seconds.  Each sweep runs as its own ``duo sweep`` process;
the timed part is the Hydra multirun (the ``sweep finished in <s>`` line), so the
one-off start-up, validation and summary of each command do not dilute the ratio
(their totals are printed too).

Prints ``sweep_basic_s: <s>``, ``sweep_joblib_s: <s>`` and
``sweep_parallel_speedup: <basic / joblib>``.  Expect >= 1.7 on an idle 2-core box;
the first line reports how much parallelism the box offers at the time (other
CPU-bound processes cap the ratio at about that value).

    python bench/sweep_speedup.py [--episodes 256] [--alphas 0,0.2,0.4,0.6,0.8,1.0]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
TASK = "bossfight"


def make_agents(directory: Path) -> dict[str, Path]:
    """Real, randomly initialised agent checkpoints."""
    from tests.artifacts import make_untrained_agents

    return make_untrained_agents(directory, TASK)


def duo_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("duo")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "duo_cli.cli"]


def run_sweep(overrides: list[str], sweep_dir: Path) -> tuple[float, float, float]:
    """Run one ``duo sweep``; returns (multirun seconds, whole command seconds, CPU seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "160"}
    env.pop("DUO_CONF_DIR", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*duo_cmd(), "sweep", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )
    total = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"duo sweep failed with exit code {proc.returncode}")
    match = re.search(r"sweep finished in ([0-9.]+)s", proc.stdout)
    if not match:
        raise SystemExit("no 'sweep finished in' line in the output of duo sweep")
    failed = re.search(r"(\d+) failed", proc.stdout)
    if failed:
        raise SystemExit(f"{failed.group(1)} job(s) failed; see {sweep_dir}")
    return float(match.group(1)), total, cpu


_SPIN = "sum(i * i for i in range(12_000_000))"


def cpu_parallelism() -> float:
    """How many CPU-bound processes this box runs at once right now (2.0 = 2 free cores)."""
    cmd = [sys.executable, "-c", _SPIN]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(2)]
    for p in procs:
        p.wait()
    return 2 * one / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=256,
                        help="evaluation episodes per split and job (CPU time per job)")
    parser.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1.0",
                        help="the swept cost weights: one job each")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="duo_sweep_bench_"))
    try:
        agents = make_agents(tmp / "agents")
        overrides = [
            f"coordination.expert_query_cost_weight={args.alphas}",
            "algorithm=always_novice",
            *(f"agents.{role}={path}" for role, path in agents.items()),
            f"env.task={TASK}", "env.num_envs=2", "env.num_threads=0",
            f"evaluation.num_episodes={args.episodes}", "evaluation.num_envs=8",
            "torch_threads=1", "progress=false",
        ]
        n = len(args.alphas.split(","))
        print(f"{n} jobs per sweep, {args.episodes} episodes per split, "
              f"{os.cpu_count()} cpu(s); load average {os.getloadavg()[0]:.2f}; "
              f"parallelism available now {cpu_parallelism():.2f} (2.00 = two idle cores)",
              flush=True)
        basic, basic_total, basic_cpu = run_sweep([*overrides, "hydra/launcher=basic"], tmp / "basic")
        print(f"basic launcher: jobs {basic:.1f}s (command {basic_total:.1f}s, "
              f"{basic_cpu:.1f} CPU s)", flush=True)
        joblib, joblib_total, joblib_cpu = run_sweep(
            [*overrides, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
            tmp / "joblib",
        )
        print(f"joblib launcher: jobs {joblib:.1f}s (command {joblib_total:.1f}s, "
              f"{joblib_cpu:.1f} CPU s)", flush=True)
        print(f"sweep_basic_s: {basic:.2f}")
        print(f"sweep_joblib_s: {joblib:.2f}")
        print(f"sweep_parallel_speedup: {basic / joblib:.2f}")
        print(f"sweep_parallel_speedup_total: {basic_total / joblib_total:.2f}")
        print(f"sweep_basic_cpu_s: {basic_cpu:.2f}")
        print(f"sweep_joblib_cpu_s: {joblib_cpu:.2f}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Coordinator PPO against its compute limit, and against the loop before issue 22.

The job is the suite's skyline: MiniGrid LavaGap, features obs + novice_hidden +
novice_dist, the shipped agents, the suite's env count, one torch thread (what each of
the suite's two jobs gets on two cores).

* ``coord_ppo_sps``: env steps per second of ``PPO.train`` (median over ``ITERATIONS``
  iterations after ``WARMUP``: the agents' memos fill over the first few);
* ``coord_ppo_limit_sps``: the same work as isolated parts, timed in the same run: base
  env steps, the novice forward on every row, the coordinator's forward (and sampling) on
  every row, the expert forward on the rows it chose, and the coordinator's
  forward+backward+Adam step over every chunk of every epoch of the update; each net run
  as the loop runs it (on distinct rows, memoised: :func:`limit_sps`);
* ``coord_ppo_ratio_to_limit`` (target >= 0.85);
* ``coord_ppo_baseline_sps`` and ``coord_ppo_speedup``: the same job on the tree of
  commit ``BASELINE`` (the loop before the change), run side by side, blocks interleaved;
  The job is each tree's own composition of the same command: the baseline's 16 envs x 256
  steps with an fp32 coordinator, today's 64 x 64 (``conf/algorithm/base/skyline_variant.yaml``)
  with a bf16 obs encoder;
* ``coord_ppo_baseline_same_shape_sps`` and ``coord_ppo_speedup_same_shape``: the baseline
  tree run at this tree's rollout shape of the job (64 x 64): what the loop and the precision gave alone;
* ``coord_ppo_limit_speedup``: ``coord_ppo_limit_sps`` / ``coord_ppo_baseline_sps``, the
  speed-up a loop with no overhead at all would show against the baseline.

``python bench/coord_ppo.py --train ROOT [OVERRIDE ...]`` runs one training measurement on
the duo tree at ``ROOT`` and prints its steps/s (used for every side).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the commit whose PPO loop the speed-up is measured against (before issue 22)
BASELINE = "0d26e0e"
#: the suite's skyline job on one task and alpha
JOB = ["benchmark=yrc_minigrid", "env.task=LavaGap", "algorithm=skyline_obs_hidden_dist",
       "coordination.expert_query_cost_weight=0.4"]
ITERATIONS = 6
#: iterations before the timed ones: the limit times its third collection (two warm the memos)
WARMUP = 2


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def _setup(root: Path, job: list[str] = JOB):
    """The composed job, its problem, train CoordEnv and coordinator, on the tree ``root``."""
    sys.path.insert(0, str(root))
    import torch

    from duo_cli.config import compose
    from duo_cli.coordination.problem import CoordProblem

    torch.set_num_threads(1)
    cfg = compose(job)
    problem = CoordProblem(cfg, torch.device("cpu"))
    env = problem.env("train")
    return cfg, problem, env, problem.policy(env)


def train_sps(root: Path, job: list[str] = JOB, iterations: int = ITERATIONS) -> float:
    """``PPO.train`` of ``job`` for ``WARMUP`` + ``iterations`` iterations on the tree
    ``root``: the median steps/s after the first ``WARMUP`` (the state the limit's parts
    are timed in: the agents' memos warm from as many collections)."""
    from rich.console import Console

    cfg, problem, env, policy = _setup(root, job)
    from duo_cli.rundir import RunContext

    algo_cfg = dict(cfg.algorithm)
    batch = env.num_envs * int(algo_cfg["num_steps"])
    algo_cfg.update(total_timesteps=batch * (iterations + WARMUP), save_every=10**6,
                    eval_every=0)
    with tempfile.TemporaryDirectory() as d:
        ctx = RunContext(Path(d), progress=False, console=Console(file=io.StringIO()))
        problem.algorithm_class(algo_cfg, ctx).train(policy, env, {})
        rows = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
    env.close()
    sps = sorted(r["sps"] for r in rows[WARMUP:])
    return sps[len(sps) // 2]


def limit_sps(collections: int = WARMUP + 1) -> float:
    """The job's work as isolated parts (see the module docstring): steps per second.

    The parts replay ``collections`` collections of the job itself (the untrained
    coordinator playing CoordEnv from the training seed), so the env meets the same
    episodes, with as many resets, as training does; the last collection is timed: the
    base env steps the recorded base actions, the novice runs on every recorded frame, the
    coordinator on every recorded observation, the expert on the recorded frames whose
    coordinator chose it. Each net runs as the loop runs it: the frozen agents memoised
    (:class:`~duo_cli.models.rows.ForwardMemo`, warm from the earlier collections, as in
    the loop's later iterations), the coordinator memoised afresh for the collection.
    """
    import torch

    cfg, problem, env, policy = _setup(ROOT)
    from duo_cli.models.rows import ForwardMemo
    from duo_cli.policies.base import sample_actions

    agents = env.agents
    n, steps = env.num_envs, int(cfg.algorithm.num_steps)
    obs, chose, base_actions = _record(env, policy, steps * collections)
    last = slice(steps * (collections - 1), None)
    base = env.base_env
    novice, expert = ForwardMemo(agents.novice.forward), ForwardMemo(agents.expert.forward)
    with torch.no_grad():
        base.reset(seed=0)
        for a in base_actions[:last.start]:
            base.step(a)
        t0 = time.perf_counter()
        for a in base_actions[last]:
            base.step(a)
        t_env = time.perf_counter() - t0
        for o, rows in zip(obs[:last.start], chose[:last.start], strict=True):
            novice(o["base_obs"])
            if rows.any():
                expert(o["base_obs"][rows])
        t0 = time.perf_counter()
        for o in obs[last]:
            sample_actions(novice(o["base_obs"]).logits, 1.0)
        t_novice = time.perf_counter() - t0
        coordinator = ForwardMemo(policy.forward)
        t0 = time.perf_counter()
        for o in obs[last]:
            sample_actions(coordinator(o).logits, 1.0)
        t_coord = time.perf_counter() - t0
        t0 = time.perf_counter()
        for o, rows in zip(obs[last], chose[last], strict=True):
            if rows.any():
                sample_actions(expert(o["base_obs"][rows]).logits, 1.0)
        t_expert = time.perf_counter() - t0
    t_update = _update_time(policy, obs[last], cfg.algorithm)
    env.close()
    total = t_env + t_novice + t_coord + t_expert + t_update
    for name, t in (("env", t_env), ("novice", t_novice), ("coordinator", t_coord),
                    ("expert", t_expert), ("update", t_update)):
        print(f"# limit part {name}: {t / total:.0%}", file=sys.stderr)
    return n * steps / total


def _record(env, policy, steps: int) -> tuple[list[dict], list, list]:
    """One collection of ``steps`` CoordEnv steps from seed 0, the coordinator sampling:
    each step's observation (as tensors), the rows that chose the expert, the base actions."""
    import torch

    from duo_cli.policies.base import sample_actions

    obs, chose, base_actions = [], [], []
    o, _ = env.reset(seed=0)
    with torch.no_grad():
        for _ in range(steps):
            o = {k: torch.from_numpy(np.array(v)) for k, v in o.items()}
            action = sample_actions(policy.forward(o).logits, 1.0).numpy()
            obs.append(o)
            chose.append(torch.from_numpy(action == 1))
            o, _, _, _, info = env.step(action)
            base_actions.append(info["base_action"].copy())
    return obs, chose, base_actions


def _update_time(policy, obs: list, hp) -> float:
    """The update's forward+backward+step over every chunk of every epoch (a stand-in loss)."""
    import torch

    batch = {k: torch.cat([o[k] for o in obs]) for k in obs[0]}
    size = len(batch["base_obs"])
    minibatch = size // int(hp.num_minibatches)
    chunk = min(int(hp.chunk_size or minibatch), minibatch)
    model = policy.model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-5, fused=True)  # as PPO's
    t0 = time.perf_counter()
    for _ in range(int(hp.update_epochs)):
        perm = torch.randperm(size)
        for start in range(0, size, minibatch):
            mb = perm[start:start + minibatch]
            optimizer.zero_grad(set_to_none=True)
            for c in range(0, len(mb), chunk):
                idx = mb[c:c + chunk]
                out = model({k: v.index_select(0, idx) for k, v in batch.items()})
                loss = out.logits.float().log_softmax(-1)[:, 0].mean() + out.value.pow(2).mean()
                loss.backward()
            optimizer.step()
    return time.perf_counter() - t0


def _baseline_tree(tmp: Path) -> Path | None:
    """The tree of ``BASELINE`` (``git archive``), with this tree's shipped checkpoints."""
    tree = tmp / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE], capture_output=True)
    if archive.returncode != 0:
        print(f"# no baseline: git archive {BASELINE} failed", file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    if not (tree / "checkpoints").exists():
        os.symlink(ROOT / "checkpoints", tree / "checkpoints")
    return tree


def _shape() -> tuple[str, str]:
    """This tree's rollout shape of the job, as overrides for the baseline tree."""
    sys.path.insert(0, str(ROOT))
    from duo_cli.config import compose

    cfg = compose(JOB)
    return f"env.num_envs={cfg.env.num_envs}", f"algorithm.num_steps={cfg.algorithm.num_steps}"


def _train_sps_subprocess(root: Path, *overrides: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--train", str(root), *overrides],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(blocks: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_tree(Path(tmp))
        new, old, old_shape, limit = [], [], [], []
        for _ in range(blocks):
            new.append(_train_sps_subprocess(ROOT))
            if baseline is not None:
                old.append(_train_sps_subprocess(baseline))
                old_shape.append(_train_sps_subprocess(baseline, *_shape()))
            limit.append(limit_sps())
    # best of the blocks on each side: the least disturbed by other work on the machine
    emit("coord_ppo_sps", max(new), "{:.0f}")
    emit("coord_ppo_limit_sps", max(limit), "{:.0f}")
    emit("coord_ppo_ratio_to_limit", max(new) / max(limit))
    if old:
        emit("coord_ppo_baseline_sps", max(old), "{:.0f}")
        emit("coord_ppo_speedup", max(new) / max(old))
        emit("coord_ppo_baseline_same_shape_sps", max(old_shape), "{:.0f}")
        emit("coord_ppo_speedup_same_shape", max(new) / max(old_shape))
        emit("coord_ppo_limit_speedup", max(limit) / max(old))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train"]:
        print(train_sps(Path(sys.argv[2]), JOB + sys.argv[3:]))
    else:
        main()

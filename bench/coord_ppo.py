"""Coordinator PPO against its compute limit, and against the loop before issue 22.

The job is the suite's skyline: MiniGrid LavaGap, features obs + novice_hidden +
novice_dist, the shipped agents, the suite's env count, one torch thread (what each of
the suite's two jobs gets on two cores).

* ``coord_ppo_sps``: env steps per second of ``PPO.train`` (the median iteration of every
  block's ``ITERATIONS`` after ``WARMUP``: the agents' memos and the process's heap warm
  over the first dozen);
* ``coord_ppo_limit_sps``: the same work as isolated parts (:class:`_Limit`), each
  iteration's replayed right after it: base env steps, the novice forward on every row,
  the coordinator's forward (and sampling) on every row, the expert forward on the rows
  it chose, each net run as the loop runs it (on distinct rows, memoised), and
  ``PPO.update`` itself on the iteration's rollout;
* ``coord_ppo_ratio_to_limit`` (target >= 0.85): the median, over the timed iterations of
  every block (each block a process of its own), of an iteration's limit time over its
  loop time (:func:`measure`); ``coord_ppo_sps`` and ``coord_ppo_limit_sps`` are the
  medians of the same iterations' times;
* ``coord_ppo_bare_limit_sps`` and ``coord_ppo_ratio_to_bare_limit``: the same with the
  update's part the bare nets (forward+backward+Adam step of a stand-in loss, without
  PPO's clipped losses, grad clipping and statistics): the stricter bound;
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
the duo tree at ``ROOT`` and prints its steps/s (used for the baseline's sides);
``--measure`` prints one block's figures.
"""

from __future__ import annotations

import copy
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
#: the commit whose PPO loop the speed-up is measured against (before issue 22)
BASELINE = "0d26e0e"
#: the suite's skyline job on one task and alpha
JOB = ["benchmark=yrc_minigrid", "env.task=LavaGap", "algorithm=skyline_obs_hidden_dist",
       "coordination.expert_query_cost_weight=0.4"]
ITERATIONS = 6
#: iterations before the timed ones: the agents' memos warm over two, the heap over a dozen
#: (until glibc has grown it to the update's buffers, the loop's update page-faults
#: thousands of times, 15-60 ms, where its replay meets a warm heap); the suite's jobs spend
#: all but a process's first dozen iterations in the steady state timed here
WARMUP = 12
#: of those, the iterations in which the agents' memos warm
MEMO_WARMUP = 2


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def _setup(root: Path, job: list[str] = JOB):
    """The composed job, its problem, train CoordEnv and coordinator, on the tree ``root``."""
    sys.path.insert(0, str(root))
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
    cfg, problem, env, policy = _setup(root, job)
    rows = _train(cfg, problem, env, policy, iterations + WARMUP)
    env.close()
    sps = sorted(r["sps"] for r in rows[WARMUP:])
    return sps[len(sps) // 2]


def measure(iterations: int = ITERATIONS, repeats: int = 1) -> dict[str, list[float]]:
    """The loop and its limits on the same iterations, interleaved in one process: per
    timed iteration, the seconds of the loop (``loop``), of its limit (``limit``) and of
    the bare nets' limit (``bare``); and the batch (``steps``).

    ``PPO.train`` runs ``WARMUP`` + ``iterations`` iterations; right after each, its work
    is replayed as isolated parts (:class:`_Limit`): loop and limit do the very same work
    (the same episodes, resets, distinct rows, expert queries and update) within a second
    of each other (the machine's speed drifts by 1.5x across minutes: a loop and a limit
    taken a minute apart gave ratios 0.74-0.88 on one tree). Each part is timed
    ``repeats`` times (once by default, as each loop iteration is: the median of three
    repeats filtered the limit's noise and not the loop's) and keeps its median.
    """
    cfg, problem, env, policy = _setup(ROOT)
    limit = _Limit(cfg, problem, env, repeats)
    rows = _train(cfg, problem, env, policy, WARMUP + iterations, on_algorithm=limit.hook)
    limit.stop()
    env.close()
    batch = env.num_envs * int(cfg.algorithm.num_steps)
    # an iteration's time, less the bench's own work inside it (the replays, in the update)
    every = [batch / r["sps"] - s for r, s in zip(rows, limit.inside_s, strict=True)]
    loop, parts = every[WARMUP:], limit.parts[WARMUP:]
    total = {name: sum(p[name] for p in parts) for name in parts[0]}
    names = ("env", "novice", "coordinator", "expert", "update")
    for name in names:
        share = total[name] / sum(total[n] for n in names)
        print(f"# limit part {name}: {share:.0%}", file=sys.stderr)
    full = [sum(p[n] for n in names) for p in parts]
    bare = [f - p["update"] + p["bare_update"] for f, p in zip(full, parts, strict=True)]
    # the heap's warm-up (after the memos'), reported beside the steady state
    warm = [(sum(p[n] for n in names), t)
            for p, t in zip(limit.parts, every, strict=True)][MEMO_WARMUP:WARMUP]
    return {"steps": [batch], "loop": loop, "limit": full, "bare": bare,
            "faults": limit.faults[WARMUP:], "warmup_ratio": [x / t for x, t in warm]}


class _Limit:
    """Replays each iteration of ``PPO.train`` as isolated parts, right after it.

    Training's env is watched for its reset seed and base actions; after each update
    (:meth:`hook`) the iteration's work is timed, each part the median of ``repeats``:

    * ``env``: a second base env, reset with training's seed, steps the iteration's base
      actions (it follows training's env iteration by iteration; timed once);
    * ``novice``, ``expert``: each agent, memoised as the loop runs it
      (:class:`~duo_cli.models.rows.ForwardMemo`, warm from the earlier iterations), on
      every frame / on the frames whose row chose the expert;
    * ``coordinator``: the coordinator with the iteration's weights, memoised afresh, on
      every observation;
    * ``update``: ``PPO.update`` on the iteration's rollout from the weights and optimizer
      state it met; ``bare_update``: a stand-in loss instead (:func:`_update_time`:
      forward+backward+Adam step, without PPO's clipped losses, grad clipping and
      statistics).

    Training then goes on from where its own update left it (weights, optimizer state,
    torch's RNG). ``inside_s`` holds the seconds this took inside each iteration.
    """

    def __init__(self, cfg, problem, env, repeats: int):
        from duo_cli.models.rows import ForwardMemo

        self.cfg, self.env, self.repeats = cfg, env, repeats
        self.replay_env = problem.env("train").base_env
        self.novice = ForwardMemo(env.agents.novice.forward)
        self.expert = ForwardMemo(env.agents.expert.forward)
        self.reset, self.step = env.reset, env.step
        self.base_actions, self.parts, self.inside_s, self.faults = [], [], [], []
        env.reset, env.step = self._reset, self._step

    def _reset(self, **kwargs):
        self.replay_env.reset(seed=kwargs.get("seed"))
        return self.reset(**kwargs)

    def _step(self, action):
        out = self.step(action)
        self.base_actions.append(out[4]["base_action"])  # a copy of its own
        return out

    def stop(self) -> None:
        self.env.reset, self.env.step = self.reset, self.step
        self.replay_env.close()

    def hook(self, algorithm) -> None:
        """For :func:`_train`: time each iteration's parts after ``algorithm``'s update."""
        update = algorithm.update

        def timed_update(policy, optimizer, rollout, advantages, returns):
            t0 = time.perf_counter()
            before = _train_state(policy, optimizer)
            faults, t1 = _minor_faults(), time.perf_counter()
            out = update(policy, optimizer, rollout, advantages, returns)
            t2 = time.perf_counter()
            self.faults.append(_minor_faults() - faults)
            after = _train_state(policy, optimizer)
            self.parts.append(self._replay(update, policy, optimizer, before,
                                           rollout, advantages, returns))
            _restore(policy, optimizer, after)
            self.inside_s.append(t1 - t0 + time.perf_counter() - t2)
            return out

        algorithm.update = timed_update

    def _step_replay(self, base_actions: list) -> None:
        for a in base_actions:
            self.replay_env.step(a)

    def _replay(self, update, policy, optimizer, before, rollout, advantages,
                returns) -> dict[str, float]:
        med, repeats = statistics.median, self.repeats
        steps = rollout.num_steps
        obs = [rollout.obs_at(t) for t in range(steps)]
        chose = rollout.actions == 1
        part = {"env": _timed(lambda: self._step_replay(self.base_actions[-steps:]))}
        _restore(policy, optimizer, before)
        part.update(_net_times(self.novice, self.expert, policy, obs, chose, repeats))

        def ppo_update():
            _restore(policy, optimizer, before)
            t0 = time.perf_counter()
            update(policy, optimizer, rollout, advantages, returns)
            return time.perf_counter() - t0

        part["update"] = med(_timed(ppo_update) for _ in range(repeats))
        part["bare_update"] = med(_update_time(policy, before["weights"], obs, self.cfg.algorithm)
                                  for _ in range(repeats))
        return part


def _minor_faults() -> int:
    """This process's minor page faults so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _train_state(policy, optimizer) -> dict:
    """Copies of the weights, optimizer state and torch's RNG state."""
    return {"weights": copy.deepcopy(policy.model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()), "rng": torch.get_rng_state()}


def _restore(policy, optimizer, state: dict) -> None:
    policy.model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])


def _net_times(novice, expert, policy, obs: list, chose, repeats: int) -> dict[str, float]:
    """Seconds of one iteration's forwards (the median of ``repeats``): the novice on every
    frame, the expert on the frames whose row chose it (each memo rewound to its state
    before the iteration, then left warm with its rows), the coordinator memoised afresh."""
    from duo_cli.models.base import weights_fixed
    from duo_cli.models.rows import ForwardMemo

    frames = [o["base_obs"] for o in obs]
    queried = [o["base_obs"][rows] for o, rows in zip(obs, chose, strict=True) if rows.any()]
    warm = {"novice": dict(novice.slots), "expert": dict(expert.slots)}
    with weights_fixed("cpu"), torch.no_grad():  # as the loop's collection
        return {name: statistics.median(_timed(fn) for _ in range(repeats)) for name, fn in (
            ("novice", lambda: _nets(_rewound(novice, warm["novice"]), frames)),
            ("coordinator", lambda: _nets(ForwardMemo(policy.forward), obs)),
            ("expert", lambda: _nets(_rewound(expert, warm["expert"]), queried)))}


def _timed(fn) -> float:
    """Seconds ``fn()`` takes (its own timer where it returns one)."""
    t0 = time.perf_counter()
    inner = fn()
    return inner if inner is not None else time.perf_counter() - t0


def _rewound(memo, slots: dict):
    """``memo`` as it was when it held ``slots`` (rows it met since are forgotten): each
    repeat of a timed part meets the timed collection's rows as new, as the loop does."""
    memo.slots = dict(slots)
    return memo


def _nets(forward, inputs: list) -> None:
    """``forward`` on every input, sampling an action from each output as the loop does."""
    from duo_cli.policies.base import sample_actions

    for x in inputs:
        sample_actions(forward(x).logits, 1.0)


def _train(cfg, problem, env, policy, iterations: int, on_algorithm=None) -> list[dict]:
    """The job's ``PPO.train`` for ``iterations`` iterations (no evaluation, no
    checkpoints) in a temporary run dir: its ``metrics.jsonl`` rows. ``on_algorithm`` is
    called with the algorithm before it trains."""
    from rich.console import Console

    from duo_cli.rundir import RunContext

    algo_cfg = dict(cfg.algorithm)
    algo_cfg.update(total_timesteps=env.num_envs * int(algo_cfg["num_steps"]) * iterations,
                    save_every=10**6, eval_every=0)
    with tempfile.TemporaryDirectory() as d:
        ctx = RunContext(Path(d), progress=False, console=Console(file=io.StringIO()))
        algorithm = problem.algorithm_class(algo_cfg, ctx)
        if on_algorithm is not None:
            on_algorithm(algorithm)
        algorithm.train(policy, env, {})
        return [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]


def _update_time(policy, weights, obs: list, hp) -> float:
    """The update's forward+backward+step over every chunk of every epoch, with a stand-in
    loss, from ``weights``: the bare nets' work (the bare limit's update part)."""
    policy.model.load_state_dict(weights)
    batch = {k: torch.stack([o[k] for o in obs]).flatten(0, 1) for k in obs[0]}
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


def _subprocess(*args: str) -> str:
    """This script run with ``args``: the last line it printed."""
    out = subprocess.run([sys.executable, __file__, *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def main(blocks: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_tree(Path(tmp))
        runs, old, old_shape = [], [], []
        for _ in range(blocks):
            runs.append(json.loads(_subprocess("--measure")))
            if baseline is not None:
                old.append(float(_subprocess("--train", str(baseline))))
                old_shape.append(float(_subprocess("--train", str(baseline), *_shape())))
    # every timed iteration of every block, paired with its own limit
    med, batch = statistics.median, runs[0]["steps"][0]
    pooled = {key: [t for r in runs for t in r[key]] for key in ("loop", "limit", "bare")}
    ratio = {key: med(x / t for x, t in zip(pooled[key], pooled["loop"], strict=True))
             for key in ("limit", "bare")}
    print("# ratio per block (median of its iterations): " + ", ".join(
        f"{med(x / t for x, t in zip(r['limit'], r['loop'], strict=True)):.3f}" for r in runs),
        file=sys.stderr)
    warm = med(x for r in runs for x in r["warmup_ratio"])
    faults = med(x for r in runs for x in r["faults"])
    print(f"# over the heap's warm-up (iterations {MEMO_WARMUP + 1}-{WARMUP}), not in the figures: ratio "
          f"{warm:.3f}; the timed loop updates' page faults, median {faults:.0f}", file=sys.stderr)
    emit("coord_ppo_sps", batch / med(pooled["loop"]), "{:.0f}")
    emit("coord_ppo_limit_sps", batch / med(pooled["limit"]), "{:.0f}")
    emit("coord_ppo_ratio_to_limit", ratio["limit"])
    emit("coord_ppo_bare_limit_sps", batch / med(pooled["bare"]), "{:.0f}")
    emit("coord_ppo_ratio_to_bare_limit", ratio["bare"])
    if old:
        # speed-ups: the best of the blocks on each side, the least disturbed by other work
        best = max(batch / med(r["loop"]) for r in runs)
        emit("coord_ppo_baseline_sps", max(old), "{:.0f}")
        emit("coord_ppo_speedup", best / max(old))
        emit("coord_ppo_baseline_same_shape_sps", max(old_shape), "{:.0f}")
        emit("coord_ppo_speedup_same_shape", best / max(old_shape))
        emit("coord_ppo_limit_speedup", max(batch / med(r["limit"]) for r in runs) / max(old))

if __name__ == "__main__":
    if sys.argv[1:2] == ["--train"]:
        print(train_sps(Path(sys.argv[2]), JOB + sys.argv[3:]))
    elif sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure()))
    else:
        main()

"""Select, evaluate and ship the MiniGrid agents trained by ``train.sh``.

Per task, from ``runs/minigrid_agents/<task>/``:

- ``novice.pt``: the novice run's ``best_val_sim.pt`` (best held-out easy reward);
- ``expert.pt``: the expert run's ``best_val_true.pt`` (best held-out hard reward);
- ``sim_novice.pt``: the novice run's snapshot, from its learning phase, whose ``val_sim``
  reward (128 episodes) is closest to the novice's ``val_true`` reward (about ten
  snapshots evenly spaced up to the first evaluation at 90% of the best), so that the
  simulated gap (sim_novice -> novice, on easy levels) mimics the real one (novice ->
  expert, on hard levels). Only held-out splits are used; test is never looked at.

Then every shipped agent is scored on all four splits (256 episodes) and the expert's
BP is written into its metadata (``duo eval ... evaluation.write_bp=true``); the
evaluations go to ``checkpoints/minigrid/evaluations.json``.

    .venv/bin/python tools/minigrid/ship.py [task ...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repo root (this file: tools/minigrid/ship.py)
CKPT = ROOT / "checkpoints" / "minigrid"  # where the shipped agents and their card live
RUNS = ROOT / "runs" / "minigrid_agents"
DUO = [sys.executable, "-m", "duo_cli.cli"]


def _evals(run: Path, split: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    key = f"eval/{split}/reward_mean"
    return [(r["global_step"], r[key]) for r in rows if key in r]


def _score(path: Path, task: str, split: str, episodes: int) -> float:
    sys.path.insert(0, str(ROOT))
    from duo_cli.agents import load_agent
    from duo_cli.config import compose
    from duo_cli.envs import make_env
    from duo_cli.evaluation.evaluator import Evaluator

    cfg = compose(["env=minigrid", f"env.task={task}"])
    policy, _ = load_agent(path)
    env = make_env(cfg.env, split, 32)
    try:
        return Evaluator(env, episodes, seed=int(cfg.env[split].seed)).evaluate(policy)["reward_mean"]
    finally:
        env.close()


def pick_sim_novice(task: str) -> tuple[Path, dict]:
    run = RUNS / task / "novice"
    target = _score(run / "best_val_sim.pt", task, "val_true", 128)
    curve = _evals(run, "val_sim")
    # the learning phase: up to the first periodic evaluation at >= 90% of the best
    best = max(r for _, r in curve)
    end = next(step for step, r in curve if r >= 0.9 * best)
    snaps = [(s, p) for s, p in sorted((int(p.stem.split("_")[1]), p) for p in run.glob("step_*.pt"))
             if s <= end]
    snaps = snaps[::max(1, len(snaps) // 10)]  # at most ~10 candidates
    scored = [(step, p, _score(p, task, "val_sim", 128)) for step, p in snaps]
    step, path, reward = min(scored, key=lambda s: abs(s[2] - target))
    info = {"target_val_true_of_novice": target, "chosen_step": step, "chosen_val_sim": reward,
            "candidates": [(s, r) for s, _, r in scored]}
    return path, info


def evaluate(path: Path, task: str, write_bp: bool) -> dict:
    out = ROOT / "runs" / "minigrid_ship" / task / path.stem
    if out.exists():
        shutil.rmtree(out)
    cmd = [*DUO, "eval", str(path), "env=minigrid", f"env.task={task}",
           "evaluation.num_episodes=256", "evaluation.num_envs=32", "torch_threads=1",
           "progress=false", f"run_dir={out}"]
    if write_bp:
        cmd.append("evaluation.write_bp=true")
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / "summary.json").read_text())


def ship(task: str) -> dict:
    dest = CKPT / task
    dest.mkdir(exist_ok=True)
    shutil.copyfile(RUNS / task / "novice" / "best_val_sim.pt", dest / "novice.pt")
    shutil.copyfile(RUNS / task / "expert" / "best_val_true.pt", dest / "expert.pt")
    sim_path, sim_info = pick_sim_novice(task)
    shutil.copyfile(sim_path, dest / "sim_novice.pt")
    result = {"sim_novice_selection": sim_info}
    for role in ("sim_novice", "novice", "expert"):
        summary = evaluate(dest / f"{role}.pt", task, write_bp=role == "expert")
        result[role] = {s: {k: v for k, v in summary[s].items() if not isinstance(v, list)}
                        for s in ("train", "val_sim", "val_true", "test")}
        if role == "expert":
            result[role]["bp"] = summary["bp"]
    return result


def main(tasks: list[str]) -> None:
    path = CKPT / "evaluations.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for task in tasks:
        data[task] = ship(task)
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"shipped {task}: " + ", ".join(
            f"{r} test {data[task][r]['test']['reward_mean']:.3f}"
            for r in ("sim_novice", "novice", "expert")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["DoorKey", "LavaGap", "DistShift"])

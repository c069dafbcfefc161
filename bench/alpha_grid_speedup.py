"""Benchmark: the demo's alpha grid with rollouts shared vs one rollout set per alpha.

Both sides produce the same numbers (test reward at every alpha under both validators):
*shared* is one job with ``coordination.alphas=[0, 0.2, ..., 1]`` (each candidate plays
each validation split once, each chosen candidate plays test once); *per alpha* is one
such job per alpha, which replays every candidate at every alpha, as a sweep with one
job per alpha does. The jobs run in this process, interleaved per method, on MiniGrid
LavaGap (short episodes, so the bench stays short) with the shipped agents, the demo's
methods and 32 episodes per split.

Prints ``sweep_alpha_grid_shared_s``, ``sweep_alpha_grid_per_alpha_s`` and
``sweep_alpha_grid_speedup`` (per alpha / shared; target >= 4).
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALPHAS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
METHODS = ["algorithm=always_novice", "algorithm=always_expert", "algorithm=random",
           "algorithm=logit"]
COMMON = ["env=minigrid", "env.task=LavaGap", "evaluation.num_episodes=32",
          "evaluation.num_envs=32", "env.num_envs=32", "torch_threads=1", "progress=false"]


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def _job(overrides: list[str], run_dir: Path) -> float:
    from rich.console import Console

    from duo_cli.commands.train_coord import train_coord
    from duo_cli.config import compose

    cfg = compose([*overrides, f"run_dir={run_dir}"], "coord")
    t = time.perf_counter()
    train_coord(cfg, Console(file=io.StringIO()))
    return time.perf_counter() - t


def main() -> None:
    import torch

    torch.set_num_threads(1)
    shared = per_alpha = 0.0
    if not (ROOT / "checkpoints/minigrid/LavaGap/expert.pt").is_file():
        print("# shipped LavaGap agents missing: sweep_alpha_grid_speedup skipped", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as d:
        for i, method in enumerate(METHODS):
            base = [*COMMON, method]
            shared += _job([*base, f"coordination.alphas={ALPHAS}"], Path(d) / f"s{i}")
            for j, a in enumerate(ALPHAS):
                per_alpha += _job([*base, f"coordination.alphas=[{a}]"], Path(d) / f"p{i}-{j}")
    emit("sweep_alpha_grid_shared_s", shared, "{:.1f}")
    emit("sweep_alpha_grid_per_alpha_s", per_alpha, "{:.1f}")
    emit("sweep_alpha_grid_speedup", per_alpha / shared)


if __name__ == "__main__":
    main()

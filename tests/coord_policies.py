"""Coordination-policy tests' shared set-up: what a CoordPolicy reads of its env, a run
context, base observations."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from fakes import FakeCoordEnv
from rich.console import Console

from duo_cli.rundir import RunContext

NOVICE, EXPERT = FakeCoordEnv.NOVICE, FakeCoordEnv.EXPERT


def spec(num_envs: int = 3) -> SimpleNamespace:
    """The bits of a CoordEnv a CoordPolicy reads at construction."""
    return SimpleNamespace(num_envs=num_envs, NOVICE=NOVICE, EXPERT=EXPERT)


def make_ctx(run_dir, seed: int = 0) -> RunContext:
    return RunContext(run_dir=run_dir, seed=seed, console=Console(file=io.StringIO(), width=150),
                      progress=False)


def base_obs(n: int) -> dict:
    return {"base_obs": np.zeros((n, 2, 2, 3), dtype=np.uint8)}

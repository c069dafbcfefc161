"""Shared test setup: one torch thread (the machine is shared), quiet consoles."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.pop("DUO_CONF_DIR", None)

import pytest  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # lets test modules `import fakes` (and artifacts, served)
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture
def quiet_console() -> Console:
    """A rich console writing to a string buffer."""
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


#: game whose episodes end fast under a random policy (~36 steps): keeps real runs short
FAST_TASK = "bossfight"


@pytest.fixture(scope="session")
def tiny_agents(tmp_path_factory) -> dict:
    """Real, randomly initialised agent checkpoints (sim_novice, novice, expert) with a BP.

    Returns ``{"dir": Path, "overrides": [...]}``: Hydra overrides pointing a
    coordination run at them, on a fast game with tiny episode counts.
    """
    from artifacts import make_untrained_agents

    d = tmp_path_factory.mktemp("agents")
    paths = make_untrained_agents(d, FAST_TASK)
    overrides = [f"agents.{role}={path}" for role, path in paths.items()] + [
        f"env.task={FAST_TASK}", "env.num_envs=2", "evaluation.num_episodes=4",
        "evaluation.num_envs=2", "torch_threads=1", "progress=false",
    ]
    return {"dir": d, "paths": paths, "overrides": overrides}


@pytest.fixture(scope="session")
def coordinators(tiny_agents, tmp_path_factory) -> dict[str, Path]:
    """Trained tiny coordinator checkpoints: logit (stateless) and ask_every_k (stateful)."""
    from duo_cli.commands.train_coord import train_coord
    from duo_cli.config import compose

    out = {}
    root = tmp_path_factory.mktemp("coords")
    for method, extra in (("logit", ["algorithm.fit_steps=8"]),
                          ("ask_every_k", ["algorithm.candidates=[3]"])):
        cfg = compose([*tiny_agents["overrides"], f"algorithm={method}",
                       f"run_dir={root / method}", "coordination.switch_agent_cost_weight=0.5",
                       *extra], "coord")
        out[method] = train_coord(cfg, Console(file=io.StringIO())) / "best_val_sim.pt"
    return out

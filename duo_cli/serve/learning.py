"""``serve.learn=true``: what may learn, building the learner, and its durable state.

The run dir of a learning server holds, beside the episode log:

* ``last.pt``: the coordinator after the latest update, a regular coordinator checkpoint
  (``duo eval`` and ``duo serve`` read it) whose ``train_state`` is the learner's state
  (optimizer, ``model_version`` = updates so far, steps trained on, exclusions, RNG);
  written atomically after every update, before the new weights answer anything;
* ``updates.jsonl``: one line per update (its number, steps, exclusions, PPO's losses),
  appended after ``last.pt``.

Started again with ``resume=true`` on the same run dir, the server loads ``last.pt``:
the weights and the update count continue; steps served after the last update were in no
update and are reported as lost.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from duo_cli.algorithms.ppo import PPO
from duo_cli.checkpoint import CheckpointError, load_policy_checkpoint, save_policy
from duo_cli.coordination.problem import CoordProblem
from duo_cli.errors import ConfigError, first_line
from duo_cli.groups import ServeSettings
from duo_cli.rundir import RunContext
from duo_cli.serve.learner import OnlineLearner

logger = logging.getLogger(__name__)

UPDATES_NAME = "updates.jsonl"


def check_learnable(problem: CoordProblem, coord: Any, settings: ServeSettings,
                    where: str) -> None:
    """Refuse ``serve.learn=true`` (one line) where PPO cannot learn from served steps."""
    cls = problem.algorithm_class
    if not (isinstance(cls, type) and issubclass(cls, PPO)):
        raise ConfigError(f"serve.learn=true trains with PPO; {where} is a "
                          f"{problem.method!r} coordinator (use one trained with algorithm=ppo "
                          "or a skyline)")
    if coord.stateful:
        raise ConfigError(f"serve.learn=true: {where}'s coordinator keeps per-episode state; "
                          "PPO learns only stateless coordinators here")
    for role, agent in (("novice", coord.novice), ("expert", coord.expert)):
        if getattr(agent, "stateful", False):
            raise ConfigError(f"serve.learn=true: the {role} has recurrent state; learning "
                              "through the server supports stateless agents only")
    if coord.temperature != 1.0:
        raise ConfigError(f"serve.learn=true samples the coordinator as PPO does (temperature "
                          f"1); got serve.temperature={coord.temperature:g}")
    if settings.external_expert and coord.open_expert:
        raise ConfigError("serve.learn=true with serve.expert=external cannot observe the "
                          "expert's features (coordination.open_expert=true)")


def make_learner(problem: CoordProblem, coord: Any, settings: ServeSettings,
                 run_dir: Path) -> OnlineLearner:
    """The learner of ``coord``'s policy with the checkpoint's PPO settings."""
    cfg = problem.cfg
    ctx = RunContext(run_dir, device=problem.device, seed=int(cfg.seed),
                     console=Console(file=io.StringIO()), progress=False,
                     metadata=problem.checkpoint_metadata())
    ppo = problem.algorithm(ctx)
    steps = settings.learn_steps or int(cfg.algorithm.num_steps) * int(cfg.env.num_envs)
    ppo.check_settings(ppo.hp, steps)  # minibatches fit the batch
    return OnlineLearner(coord.policy, ppo, steps, settings.max_policy_lag, problem.device)


def save_learner_state(learner: OnlineLearner, run_dir: Path, base_version: str) -> None:
    """``last.pt``: the weights and the learner's state (atomic replace).

    :param base_version: the version of the weights the server started learning from.
    """
    meta = {**learner.ppo.ctx.metadata, "global_step": learner.trained_steps}
    state = {**learner.state_dict(), "base_version": base_version}
    save_policy(run_dir / "last.pt", learner.policy, meta, train_state=state)


def save_learner(learner: OnlineLearner, run_dir: Path, stats: dict[str, float],
                 steps: int, base_version: str) -> None:
    """After an update: ``last.pt`` (atomic), then one line of ``updates.jsonl``."""
    save_learner_state(learner, run_dir, base_version)
    line = {"update": learner.version, "steps": steps, "trained_steps": learner.trained_steps,
            "excluded": dict(learner.excluded), "time": time.time(), **stats}
    with open(run_dir / UPDATES_NAME, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def resume_learner(learner: OnlineLearner, run_dir: Path) -> str:
    """Weights and learner state from ``run_dir/last.pt``; returns the base version."""
    path = run_dir / "last.pt"
    ckpt = load_policy_checkpoint(path, map_location=learner.device)
    try:
        learner.policy.set_params(ckpt.state_dict)
        learner.load_state_dict(ckpt.train_state)
        base = str(ckpt.train_state["base_version"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"resume=true: {path} is not a learning server's state "
                              f"({first_line(exc)})") from None
    return base


def read_updates(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of ``updates.jsonl`` (a torn last line, from a kill, is skipped)."""
    path = Path(run_dir) / UPDATES_NAME
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def lost_steps(records: list[dict[str, Any]], version: str) -> int:
    """Logged steps chosen by the weights ``version`` (after the last update): never trained on."""
    n = 0
    for rec in records:
        versions = (rec.get("steps") or {}).get("model_version") or []
        n += sum(v == version for v in versions)
    return n


"""``duo eval CKPT --from-log RUN_DIR``: a coordinator's return estimated from a served log.

The target coordinator (a coordinator checkpoint) is placed in the log's setting: the
served run's agents, env, alpha, beta, BP and agent temperature (its ``config.yaml``), with
the target's own policy, ``coordination.open_expert`` and ``evaluation.temperature``.  The
log is replayed for it (:mod:`duo_cli.serve.replay`) and the per-decision estimators of
:mod:`duo_cli.evaluation.offpolicy` weigh the logged rewards, with two kinds of weights:

* ``choice``: the decision is the coordinator's choice of actor; behaviour probability
  ``p_choice`` as logged, target probability from its p(expert); the reward of step ``t``
  is its base reward minus its logged cost.  Needs nothing but the log.
* ``action``: the decision is the base action the env received, the actor being latent:
  its probability is ``p(expert) * pi_expert(a) + (1 - p(expert)) * pi_novice(a)`` under
  each coordinator (the logged p(expert) for the behaviour), with the agents' action
  probabilities recomputed from the logged observation.  The env only sees the action,
  so this is unbiased as well, and where the two agents would likely act alike the weight
  stays near 1: far fewer episodes are needed.  The target's cost at step ``t`` is its
  expectation given the history (``alpha*BP*p(expert)`` plus ``beta*BP`` times the
  probability of a switch, the previous actor's posterior given the action it took), a
  reward fixed before the step's action.  Needs the checkpoint's expert (not an external
  one) and a target whose state does not depend on its own past choices (true of every
  coordinator in duo).

Only complete episodes (``ended``, ``truncated``) with at least one step are used; reaped,
interrupted and empty ones are counted and named.  A step without a behaviour probability
(the application's own ``log_action``) refuses the whole log with one line: dropping it
would bias the estimate.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from duo_cli.checkpoint import load_policy_checkpoint
from duo_cli.checks import load_params
from duo_cli.commands.common import setup_torch
from duo_cli.config import RUN_KEYS, checkpoint_config, validate
from duo_cli.coordination.problem import CoordProblem
from duo_cli.coordination.step import AgentStep
from duo_cli.errors import ConfigError, DuoError
from duo_cli.evaluation.offpolicy import OffPolicyEstimate, Weighted, estimate, weigh
from duo_cli.evaluation.statistics import mean_ci95
from duo_cli.paths import resolve_path
from duo_cli.rundir import make_run_dir, owns_run_dir, write_json
from duo_cli.serve.replay import Replayed, replay
from duo_cli.serve.store import COMPLETE, StepColumns, read_episodes, read_observations
from duo_cli.tables import fmt

logger = logging.getLogger(__name__)

WEIGHTS = ("choice", "action")
#: an effective sample size below this is flagged as too small to trust
FEW = 30


def complete_episodes(records: list[dict[str, Any]], where: str
                      ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The complete episodes of a log and the count of the others by status.

    :raises DuoError: no complete episode, a step without a behaviour probability or
        observation, or episodes served under different alpha, beta or BP.
    """
    kept = [r for r in records if r["status"] in COMPLETE and r["length"] > 0]
    excluded = dict(Counter(r["status"] if r["status"] not in COMPLETE else "empty (no step)"
                            for r in records if r["status"] not in COMPLETE or not r["length"]))
    if not kept:
        raise DuoError(f"{where}: no complete episode to evaluate from (statuses: "
                       f"{dict(Counter(r['status'] for r in records)) or 'empty log'})")
    missing = episodes = 0
    for r in kept:
        steps = StepColumns.from_dict(r.get("steps", {}))
        bad = sum(p is None or o is None for p, o in zip(steps.p_choice, steps.obs_row,
                                                         strict=True))
        missing += bad
        episodes += bad > 0
    if missing:
        raise DuoError(
            f"{where}: {missing} step(s) in {episodes} episode(s) have no behaviour probability "
            "or observation (the application's own log_action steps, or a log older than "
            "probabilities); off-policy evaluation needs both for every step")
    settings = {(r["alpha"], r["beta"], r["bp"]) for r in kept}
    if len(settings) > 1:
        raise DuoError(f"{where}: episodes served under different (alpha, beta, BP): "
                       f"{sorted(settings)}")
    return kept, excluded


def target_config(cli_cfg: DictConfig, run_config: Any, path: Path, log_cfg: DictConfig,
                  overrides: list[str] | None) -> DictConfig:
    """The target coordinator in the log's setting (agents, env, costs from the log)."""
    target = checkpoint_config(cli_cfg, run_config, str(path), overrides, groups=("serve",))
    cfg = copy.deepcopy(log_cfg)
    for key in ("policy", "algorithm", "seed", "serve", *RUN_KEYS):  # serve: not served now
        cfg[key] = target[key]
    cfg.coordination.open_expert = target.coordination.open_expert
    cfg.evaluation.temperature = target.evaluation.temperature
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path} in the log's setting: {exc}") from None
    for key in ("env.name", "env.task", "agents.novice", "agents.expert"):
        mine, theirs = OmegaConf.select(target, key), OmegaConf.select(cfg, key)
        if mine != theirs:
            logger.warning("%s was trained with %s=%s; the log's %s is used", path, key, mine,
                           theirs)
    return cfg


def choice_terms(rec: dict[str, Any], steps: StepColumns, rp: Replayed) -> tuple:
    """``(rewards, behaviour, target, before)`` of one episode, weights on the choice."""
    expert = np.asarray(steps.actor) == "expert"
    reward = np.asarray(steps.reward, dtype=np.float64) - np.asarray(steps.cost, np.float64)
    target = np.where(expert, rp.tau, 1.0 - rp.tau)
    return reward, np.asarray(steps.p_choice, np.float64), target, _before(rec, steps)


def action_terms(rec: dict[str, Any], steps: StepColumns, rp: Replayed, expert_cost: float,
                 switch_cost: float) -> tuple:
    """``(rewards, behaviour, target, before)`` of one episode, weights on the base action."""
    pn, pe, tau = rp.novice_p, rp.expert_p, rp.tau
    b_exp = np.asarray(steps.p_expert, dtype=np.float64)
    behaviour = b_exp * pe + (1.0 - b_exp) * pn
    if (behaviour <= 0).any():
        raise DuoError("the log's agents give a logged base action probability 0: they are "
                       "not the agents that served it (weights changed since?)")
    target = tau * pe + (1.0 - tau) * pn
    # the target's previous actor given the action it took: p(expert | s, a)
    post = np.divide(tau * pe, target, out=np.zeros_like(tau), where=target > 0)
    switch = np.zeros_like(tau)
    switch[1:] = post[:-1] * (1.0 - tau[1:]) + (1.0 - post[:-1]) * tau[1:]
    before = _before(rec, steps) - expert_cost * tau - switch_cost * switch
    return np.asarray(steps.reward, dtype=np.float64), behaviour, target, before


def _before(rec: dict[str, Any], steps: StepColumns) -> np.ndarray:
    """Rewards fixed before each step: a reward reported before the first step (weight 1)."""
    out = np.zeros(len(steps))
    out[0] += float(rec["base_return"]) - float(np.sum(steps.reward))
    return out


def weights_of(kept: list[dict[str, Any]], replayed: list[Replayed], kind: str,
               costs: tuple[float, float]) -> Weighted:
    terms = []
    for rec, rp in zip(kept, replayed, strict=True):
        steps = StepColumns.from_dict(rec["steps"])
        terms.append(choice_terms(rec, steps, rp) if kind == "choice" else
                     action_terms(rec, steps, rp, *costs))
    rewards, behaviour, target, before = zip(*terms, strict=True)
    return weigh(rewards, behaviour, target, before)


def _load_target(cli_cfg: DictConfig, checkpoint: str, log_dir: Path, overrides) -> tuple:
    """The target's config in the log's setting, its problem, env costs and policy."""
    path = resolve_path(checkpoint)
    ckpt = load_policy_checkpoint(path)
    if ckpt.kind != "coord":
        raise ConfigError(f"{path} is a {ckpt.kind!r} checkpoint; --from-log evaluates a "
                          "coordinator checkpoint (kind 'coord')")
    if not (log_dir / "config.yaml").is_file():
        raise DuoError(f"{log_dir} is not a duo serve run dir (no config.yaml)")
    log_cfg = OmegaConf.load(log_dir / "config.yaml")
    cfg = target_config(cli_cfg, ckpt.metadata.run_config, path, log_cfg, overrides)
    problem = CoordProblem(cfg, setup_torch(cfg))
    env = problem.env("test", 1)
    try:
        policy = problem.policy(env)
        agents = (env.novice, env.expert)
        costs = (float(env.expert_query_cost_per_action), float(env.switch_agent_cost_per_action))
    finally:
        env.close()
    load_params(policy, ckpt.state_dict, str(path))
    policy.eval()
    bf16 = log_cfg.serve.get("bf16")
    for agent in agents:
        agent.eval()
        if bf16 is not None and hasattr(agent.model, "bf16"):
            agent.model.bf16 = bf16  # as served
    return path, cfg, problem, policy, agents, costs


@owns_run_dir
def evaluate_from_log(cli_cfg: DictConfig, checkpoint: str, log_dir: str, console: Console,
                      overrides: list[str] | None = None, claim: Any = None) -> Path:
    """Estimate the coordinator ``checkpoint``'s return from the log in ``log_dir``; writes
    ``summary.json`` into a new ``duo eval`` run dir."""
    log_dir = Path(log_dir)
    try:
        records = read_episodes(log_dir)
    except (OSError, ValueError) as exc:
        raise DuoError(f"cannot read the episode log in {log_dir}: {exc}") from None
    kept, excluded = complete_episodes(records, str(log_dir))
    path, cfg, problem, policy, (novice, expert), costs = _load_target(
        cli_cfg, checkpoint, log_dir, overrides)
    external = sum(r.get("expert") == "external" for r in kept)
    with_actions = not external
    agents = AgentStep(novice, expert, float(cfg.coordination.temperature),
                       bool(cfg.coordination.open_expert) or with_actions, problem.device)
    steps = [StepColumns.from_dict(r["steps"]) for r in kept]
    with torch.no_grad():
        replayed = replay(agents, policy, steps, read_observations(log_dir),
                          float(cfg.evaluation.temperature), with_actions)
    results: dict[str, OffPolicyEstimate | None] = {
        kind: estimate(weights_of(kept, replayed, kind, costs), seed=int(cfg.seed))
        if kind == "choice" or with_actions else None for kind in WEIGHTS}
    run_dir = make_run_dir(cfg, "eval", claim)  # everything checked: now write
    logged = mean_ci95(np.array([r["return"] for r in kept]))
    print_estimates(console, results, logged, f"{path.name} from {log_dir}")
    if external:
        console.print(f"no action weights: {external} episode(s) had an external expert "
                      "(its action probabilities are unknown)")
    if excluded:
        console.print("left out (incomplete returns): " + ", ".join(
            f"{n} {status}" for status, n in sorted(excluded.items())), soft_wrap=True)
    write_json(run_dir / "summary.json", {
        "checkpoint": str(path), "kind": "coord", "from_log": str(log_dir),
        "offpolicy": {k: None if v is None else v.to_dict() for k, v in results.items()},
        "excluded": excluded,
        "log": {"episodes": len(kept), "return_mean": logged[0], "return_ci95": logged[1],
                "method": kept[0].get("method"), "alpha": kept[0]["alpha"],
                "beta": kept[0]["beta"], "bp": kept[0]["bp"]}})
    return run_dir


def print_estimates(console: Console, results: dict[str, OffPolicyEstimate | None],
                    logged: tuple[float, float], title: str) -> None:
    """One row per estimator and weights: value, bootstrap CI, ESS; the logged return."""
    first = next(r for r in results.values() if r is not None)
    table = Table(title=title)
    for col in ("estimator", "weights", "return", f"{100 * first.confidence:g}% CI", "ESS",
                "whole"):
        table.add_column(col, justify="left" if col in ("estimator", "weights") else "right")
    for kind, res in results.items():
        if res is None:
            continue
        for name, value, ci in (("PDIS", res.pdis, res.pdis_ci),
                                ("WPDIS", res.wpdis, res.wpdis_ci)):
            table.add_row(name, kind, fmt(value, 4), f"[{fmt(ci[0], 4)}, {fmt(ci[1], 4)}]",
                          f"{res.ess:.1f}", str(res.matched))
    table.add_row("logged", "behaviour", fmt(logged[0], 4), f"± {fmt(logged[1], 4)}", "", "")
    console.print(table)
    console.print(f"{first.episodes} episodes, {first.steps} steps; ESS: effective sample "
                  f"size of the episodes' weights; whole: episodes of nonzero weight; CIs: "
                  f"percentile bootstrap over episodes, {first.resamples} resamples",
                  soft_wrap=True)
    for kind, res in results.items():
        if res is not None and res.ess < FEW:
            console.print(f"[yellow]{kind} weights: ESS {res.ess:.1f} < {FEW}: too few episodes "
                          f"the target could have played; these estimates and CIs say little"
                          "[/]", soft_wrap=True)

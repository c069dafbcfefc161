"""One coordination job over a grid of expert costs α, each rollout played once.

With ``coordination.alphas=[...]`` a job scores a method at every α of the grid.
For the methods that *select* a parameter (every :class:`CandidateSearch`: always,
random, logit, ask_every_k, ood) nothing an agent or coordinator does depends on α:
the cost only enters the reward.  An episode's reward at any (α, β) is a linear
function of what the episode recorded::

    reward = base reward - α·BP·(expert steps) - β·BP·(switches)

so each candidate plays each selection split once, the best candidate per α is
chosen from those rollouts under both validators (``val_sim``: YRC-0;
``val_true``: the oracle), and each distinct chosen candidate plays test once.
Methods that learn (PPO, skyline) train once per α.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from duo_cli.evaluator import summarize_outcomes

logger = logging.getLogger(__name__)

VALIDATORS = ("val_sim", "val_true")
#: per-episode lists an evaluation carries; the first ones are recomputed per α
EPISODE_LISTS = ("rewards", "base_rewards", "lengths", "expert_steps", "switches")


def rescore(result: dict[str, Any], alpha: float, beta: float, bp: float,
            decimals: int | None = None) -> dict[str, Any]:
    """The evaluation ``result`` as if played at cost weights (α, β) with base penalty ``bp``.

    ``decimals`` rounds the per-step costs as ``coordination.cost_decimals`` does.
    """
    from duo_cli.coord_env import step_costs

    expert_cost, switch_cost = step_costs(bp, alpha, beta, decimals)
    base = np.asarray(result["base_rewards"], dtype=np.float64)
    expert = np.asarray(result["expert_steps"], dtype=np.float64)
    switches = np.asarray(result["switches"], dtype=np.float64)
    rewards = base - expert_cost * expert - switch_cost * switches
    return summarize_outcomes(rewards, base, np.asarray(result["lengths"]), expert, switches,
                              steps=int(result["steps"]))


def alpha_key(alpha: float) -> str:
    """A directory-safe name of α (``0.2`` -> ``alpha_0.2``)."""
    return f"alpha_{float(alpha):g}"


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in EPISODE_LISTS}


def run_candidate_grid(cfg: DictConfig, setup: Any, algorithm: Any, policy: Any,
                       train_env: Any, make_evaluator, console, run_dir: Path,
                       save) -> dict[str, Any]:
    """Shared-rollout α grid for a :class:`CandidateSearch` ``algorithm``.

    :param make_evaluator: ``split -> Evaluator`` over CoordEnvs of that split.
    :param save: ``(path, policy, metadata) -> None``, writes a coordinator checkpoint.
    :returns: the job summary's ``per_alpha`` list and the candidate table.
    """
    co = cfg.coordination
    alphas = [float(a) for a in co.alphas]
    beta, bp = float(co.switch_agent_cost_weight), float(setup.bp)
    decimals = co.get("cost_decimals")

    def score(result: dict[str, Any], alpha: float) -> dict[str, Any]:
        return rescore(result, alpha, beta, bp, decimals)
    candidates = algorithm.candidates(policy, train_env)
    console.print(f"[bold]{len(candidates)} candidate(s)[/] for {cfg.algorithm.name}, "
                  f"{len(alphas)} alpha(s), validators {', '.join(VALIDATORS)}: each candidate "
                  "plays each validation split once")
    played: dict[str, list[dict[str, Any]]] = {split: [] for split in VALIDATORS}
    params: list[dict[str, Any]] = []
    for i, cand in enumerate(candidates):
        policy.set_params(cand)
        params.append(_plain(policy.get_params()))
        for split in VALIDATORS:
            played[split].append(make_evaluator(split).evaluate(policy))
        console.print(f"  [{i + 1}/{len(candidates)}] {policy.describe()}")

    choice: dict[str, list[int]] = {}
    for split in VALIDATORS:
        choice[split] = [
            int(np.argmax([score(r, a)["reward_mean"] for r in played[split]]))
            for a in alphas
        ]
    tested: dict[int, dict[str, Any]] = {}
    for i in sorted({i for idx in choice.values() for i in idx}):
        policy.set_params(candidates[i])
        tested[i] = make_evaluator("test").evaluate(policy)

    selection = co.selection_split
    per_alpha = []
    for j, alpha in enumerate(alphas):
        entry: dict[str, Any] = {"alpha": alpha, "beta": beta, "selection_split": selection}
        for split in VALIDATORS:
            i = choice[split][j]
            entry[split] = _brief(score(played[split][i], alpha))
            entry["validators"] = entry.get("validators", {})
            entry["validators"][split] = {
                "index": i, "selected": params[i],
                "test": score(tested[i], alpha),  # per-episode lists: paired validator gap
            }
            policy.set_params(candidates[i])
            save(run_dir / alpha_key(alpha) / f"best_{split}.pt", policy, alpha,
                 {"selected": params[i], "selected_on": split})
        i = choice[selection][j]
        entry["selected"] = params[i]
        entry["test"] = score(tested[i], alpha)
        per_alpha.append(entry)
    table = [{"params": params[i],
              **{s: _brief(score(played[s][i], alphas[0])) for s in VALIDATORS}}
             for i in range(len(candidates))]
    return {"per_alpha": per_alpha, "candidates": table,
            "test_rollouts": len(tested), "validation_rollouts": len(candidates) * len(VALIDATORS)}


def run_learned_grid(cfg: DictConfig, run_single, run_dir: Path) -> dict[str, Any]:
    """A learning method (PPO, skyline): one training per α, each in its own sub-dir.

    :param run_single: ``(cfg, run_dir) -> summary`` of a single-α coordination run.
    """
    per_alpha = []
    for alpha in [float(a) for a in cfg.coordination.alphas]:
        sub_dir = run_dir / alpha_key(alpha)
        done = sub_dir / "summary.json"
        if done.is_file():  # finished before an interruption
            per_alpha.append(json.loads(done.read_text()))
            continue
        sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(sub):
            sub.coordination.alphas = None
            sub.coordination.expert_query_cost_weight = alpha
            sub.run_dir = str(sub_dir)
            sub.resume = (sub_dir / "last.pt").is_file()
            sub.overwrite = not sub.resume
        t0 = time.time()
        summary = run_single(sub)
        summary["wall_time_s"] = time.time() - t0
        per_alpha.append(summary)
    return {"per_alpha": per_alpha}


def check_alphas(alphas: Any) -> None:
    """``coordination.alphas`` must be a non-empty list of distinct finite numbers >= 0."""
    from duo_cli.config import ConfigError

    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise ConfigError(f"coordination.alphas must be a list of numbers, got {alphas!r}") from None
    if not values or any(not math.isfinite(a) or a < 0 for a in values) or len(set(values)) < len(values):
        raise ConfigError(
            f"coordination.alphas must be distinct finite numbers >= 0, got {list(alphas)}"
        )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
            continue  # fitted arrays (OOD detector state) are not table parameters
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def train_coord_grid(cfg: DictConfig, console, claim: Any = None) -> Path:
    """``duo train --type coord coordination.alphas=[...]``: one method over an α grid.

    A failed selection job takes back what it wrote (``claim``); a learning job keeps its
    per-α sub-runs, so re-running it resumes them.
    """
    from duo_cli import experiment as ex
    from duo_cli.algorithms.search import CandidateSearch
    from duo_cli.checkpoint import save_policy
    from duo_cli.evaluator import Evaluator
    from duo_cli.registry import resolve
    from duo_cli.run import make_run_dir, write_json, write_text

    check_alphas(cfg.coordination.alphas)
    device = ex.setup_torch(cfg)
    setup = ex.CoordSetup(cfg, device)  # checks agents and BP before anything is written
    algo_cls = resolve(cfg.algorithm._target_)
    learned = not issubclass(algo_cls, CandidateSearch)
    run_dir = make_run_dir(cfg, "coord", None if learned else claim)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    alphas = [float(a) for a in cfg.coordination.alphas]
    console.print(f"[bold]coordination[/] {cfg.algorithm.name} on {cfg.env.task} over alpha "
                  f"{', '.join(f'{a:g}' for a in alphas)} (BP={setup.bp:.4g}); run dir {run_dir}")
    t0 = time.time()
    if learned:
        def single(sub: DictConfig) -> dict[str, Any]:
            return json.loads((ex.train_coord(sub, console) / "summary.json").read_text())

        result = run_learned_grid(cfg, single, run_dir)
    else:
        result = _candidate_job(cfg, setup, algo_cls, device, console, run_dir, ex, Evaluator,
                                save_policy)
    summary = {
        "method": cfg.algorithm.name, "task": cfg.env.task, "alphas": alphas,
        "beta": float(cfg.coordination.switch_agent_cost_weight), "bp": setup.bp,
        "seed": int(cfg.seed), "selection_split": cfg.coordination.selection_split,
        "wall_time_s": time.time() - t0, **result,
    }
    _print_grid(console, summary)
    write_json(run_dir / "summary.json", summary)
    return run_dir


def _candidate_job(cfg, setup, algo_cls, device, console, run_dir, ex, evaluator_cls, save_policy):
    ev = cfg.evaluation
    num_envs = min(int(ev.num_envs), int(ev.num_episodes))
    evaluators: dict[str, Any] = {}

    def make_evaluator(split: str):
        if split not in evaluators:
            evaluators[split] = evaluator_cls(
                setup.env(split, num_envs), num_episodes=int(ev.num_episodes),
                seed=int(cfg.env[split].seed), temperature=float(ev.temperature), split=split)
        return evaluators[split]

    def save(path: Path, policy: Any, alpha: float, meta: dict[str, Any]) -> None:
        run_config = OmegaConf.to_container(cfg, resolve=True)
        run_config["coordination"]["alphas"] = None
        run_config["coordination"]["expert_query_cost_weight"] = alpha
        save_policy(path, policy, {"command": "duo train --type coord", "method": cfg.algorithm.name,
                                   "bp": setup.bp, "run_config": run_config, **meta})

    train_env = setup.env("train", int(cfg.env.num_envs))
    policy = ex.build_coord_policy(cfg, train_env, device)
    ctx = ex._context(cfg, run_dir, console, device)
    try:
        return run_candidate_grid(cfg, setup, algo_cls(cfg.algorithm, ctx), policy, train_env,
                                  make_evaluator, console, run_dir, save)
    finally:
        train_env.close()
        for e in evaluators.values():
            e.env.close()
        ctx.close()


def _print_grid(console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    from duo_cli.tables import fmt, fmt_ci

    table = Table(title=f"{summary['method']} on {summary['task']}: test, per alpha")
    for col in ("alpha", "reward ± CI", "expert frac", "selected"):
        table.add_column(col, justify="right" if col != "selected" else "left")
    for e in summary["per_alpha"]:
        t = e["test"]
        sel = ", ".join(f"{k}={fmt(v, 3)}" for k, v in (e.get("selected") or {}).items())
        table.add_row(f"{e['alpha']:g}", fmt_ci(t["reward_mean"], t["reward_ci95"]),
                      fmt(t.get("expert_frac")), sel or "-")
    console.print(table)

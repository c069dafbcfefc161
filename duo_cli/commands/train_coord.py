"""``duo train --type coord``: fit or select a coordinator, then score the selection on test.

The algorithm plays the validation splits (each candidate once per split, or PPO at its
eval cadence) and hands back the best policy per split with its score; only test is
played here: the choice of ``coordination.selection_split`` is "the" result, and both
validators' choices (``val_sim``: YRC-0, ``val_true``: the oracle) go to ``validators``.
With ``coordination.alphas=[...]`` one job covers an α grid
(:mod:`duo_cli.coordination.alpha_grid`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from duo_cli.commands.common import (
    build_algorithm,
    close_evaluators,
    make_evaluators,
    run_context,
    setup_torch,
)
from duo_cli.coordination.alpha_grid import VALIDATORS
from duo_cli.coordination.factory import CoordEnvFactory, build_coord_policy
from duo_cli.rundir import make_run_dir, owns_run_dir, write_json, write_text


def _coord_metadata(cfg: DictConfig, factory: CoordEnvFactory) -> dict:
    return {
        "command": "duo train --type coord",
        "method": cfg.algorithm.name,
        "bp": factory.bp,
        "run_config": OmegaConf.to_container(cfg, resolve=True),
    }


@owns_run_dir
def train_coord(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """One coordination job; writes ``config.yaml``, ``best_<split>.pt`` and ``summary.json``."""
    if cfg.coordination.get("alphas") is not None:
        return _train_coord_grid(cfg, console, claim)
    from duo_cli.checkpoint import load_checkpoint
    from duo_cli.checks import check_resume, load_params
    from duo_cli.tables import print_eval_table

    device = setup_torch(cfg)
    factory = CoordEnvFactory(cfg, device)  # checks agents and BP before anything is written
    check_resume(cfg, "coord")
    run_dir = make_run_dir(cfg, "coord", claim)
    selection = cfg.coordination.selection_split
    console.print(
        f"[bold]coordination[/] {cfg.algorithm.name} on {cfg.env.task}: "
        f"alpha={cfg.coordination.expert_query_cost_weight} "
        f"beta={cfg.coordination.switch_agent_cost_weight} BP={factory.bp:.4g}; "
        f"selecting on {selection}; run dir {run_dir}"
    )
    num_episodes = cfg.evaluation.num_episodes
    train_env = factory.env("train", int(cfg.env.num_envs))
    # both validators from the same training/candidates: YRC-0 (val_sim) and the oracle
    splits = [selection, *(s for s in VALIDATORS if s != selection)]
    evaluators = make_evaluators(cfg, splits, num_episodes, factory.env)
    policy = build_coord_policy(cfg, train_env, device)
    if cfg.resume and (run_dir / "last.pt").is_file():  # its weights must fit, before any write
        load_params(policy, load_checkpoint(run_dir / "last.pt")["state_dict"],
                    str(run_dir / "last.pt"))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    ctx = run_context(cfg, run_dir, console, device, _coord_metadata(cfg, factory))
    t0 = time.time()
    try:
        trained = build_algorithm(cfg, ctx).train(policy, train_env, evaluators)
        train_env.close()
        best = trained.best[selection]
        test = make_evaluators(cfg, ["test"], num_episodes, factory.env)
        validators = _score_validators(trained.best, splits, policy, test["test"])
        results = {selection: best.result, "test": validators[selection]["test"]}
        close_evaluators(test)
    finally:
        close_evaluators(evaluators)
        ctx.close()
    print_eval_table(console, results, title=f"{cfg.algorithm.name}: selected on {selection}")
    summary = {
        "method": cfg.algorithm.name,
        "task": cfg.env.task,
        "alpha": float(cfg.coordination.expert_query_cost_weight),
        "beta": float(cfg.coordination.switch_agent_cost_weight),
        "bp": factory.bp,
        "seed": int(cfg.seed),
        "selection_split": selection,
        "selected": best.selected,
        "checkpoint": str(best.path),
        "wall_time_s": time.time() - t0,
        "eval_num_envs": evaluators[selection].env.num_envs,
        selection: best.result,
        "test": results["test"],
        "validators": validators,
        "train": {k: v for k, v in trained.summary.items() if k != "candidates"},
    }
    write_json(run_dir / "summary.json", summary)
    return run_dir


def _score_validators(best: dict, splits: list[str], policy: Any, test: Any) -> dict[str, Any]:
    """Each validator's choice scored on test; a choice two validators share plays once."""
    out: dict[str, Any] = {}
    for split in splits:
        chosen = best[split]
        same = next((s for s in out if best[s].selected == chosen.selected), None)
        if same is None:
            policy.set_params(chosen.params)
            result = test.evaluate(policy)
        else:
            result = out[same]["test"]
        out[split] = {"selected": chosen.selected, "result": chosen.result, "test": result}
    policy.set_params(best[splits[0]].params)
    return out


def _train_coord_grid(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """``coordination.alphas=[...]``: one method over an α grid.

    A failed selection job takes back what it wrote (``claim``); a learning job keeps its
    per-α sub-runs, so re-running it resumes them.
    """
    from duo_cli.algorithms.search import CandidateSearch
    from duo_cli.coordination.alpha_grid import (
        print_grid,
        run_candidate_grid,
        run_learned_grid,
    )
    from duo_cli.registry import resolve

    device = setup_torch(cfg)
    factory = CoordEnvFactory(cfg, device)  # checks agents and BP before anything is written
    learned = not issubclass(resolve(cfg.algorithm._target_), CandidateSearch)
    run_dir = make_run_dir(cfg, "coord", None if learned else claim)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    alphas = [float(a) for a in cfg.coordination.alphas]
    console.print(f"[bold]coordination[/] {cfg.algorithm.name} on {cfg.env.task} over alpha "
                  f"{', '.join(f'{a:g}' for a in alphas)} (BP={factory.bp:.4g}); run dir {run_dir}")
    t0 = time.time()
    if learned:
        def single(sub: DictConfig) -> dict[str, Any]:
            return json.loads((train_coord(sub, console) / "summary.json").read_text())

        result = run_learned_grid(cfg, single, run_dir)
    else:
        train_env = factory.env("train", int(cfg.env.num_envs))
        ctx = run_context(cfg, run_dir, console, device)
        try:
            result = run_candidate_grid(cfg, factory, build_algorithm(cfg, ctx),
                                        build_coord_policy(cfg, train_env, device), train_env,
                                        run_dir)
        finally:
            train_env.close()
            ctx.close()
    summary = {
        "method": cfg.algorithm.name, "task": cfg.env.task, "alphas": alphas,
        "beta": float(cfg.coordination.switch_agent_cost_weight), "bp": factory.bp,
        "seed": int(cfg.seed), "selection_split": cfg.coordination.selection_split,
        "wall_time_s": time.time() - t0, **result,
    }
    print_grid(console, summary)
    write_json(run_dir / "summary.json", summary)
    return run_dir

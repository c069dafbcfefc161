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

from duo_cli.algorithms.base import AlgorithmResult
from duo_cli.checkpoint import load_checkpoint
from duo_cli.checks import load_params
from duo_cli.commands.common import check_resume, run_context, setup_torch
from duo_cli.coordination.alpha_grid import (
    VALIDATORS,
    print_grid,
    run_candidate_grid,
    run_learned_grid,
)
from duo_cli.coordination.problem import CoordProblem
from duo_cli.envs import single_layout
from duo_cli.evaluation.evaluator import close_evaluators
from duo_cli.rundir import make_run_dir, owns_run_dir, write_json, write_text
from duo_cli.summaries import AlphaResult, Choice, JobSummary, job_traits
from duo_cli.tables import print_eval_table


@owns_run_dir
def train_coord(cfg: DictConfig, console: Console, claim: Any = None) -> Path:
    """One coordination job; writes ``config.yaml``, ``best_<split>.pt`` and ``summary.json``.

    Reads top to bottom: the problem (agents and BP, checked before anything is
    written), the run dir, the algorithm's result, the summary.
    """
    problem = CoordProblem(cfg, setup_torch(cfg))
    if cfg.coordination.get("alphas") is not None:
        return _train_coord_grid(problem, console, claim)
    check_resume(cfg, "coord")
    run_dir = make_run_dir(cfg, "coord", claim)
    selection = cfg.coordination.selection_split
    console.print(
        f"[bold]coordination[/] {problem.method} on {cfg.env.task}: alpha={problem.alpha:g} "
        f"beta={problem.beta:g} BP={problem.bp:.4g}; selecting on {selection}; run dir {run_dir}"
    )
    t0 = time.time()
    trained, validators, eval_envs = _train_and_test(problem, run_dir, console)
    best = trained.best[selection]
    results = {selection: best.result, "test": validators[selection].test}
    print_eval_table(console, results, title=f"{problem.method}: selected on {selection}")
    summary = JobSummary(
        method=problem.method, task=cfg.env.task, seed=int(cfg.seed),
        traits=job_traits(problem.algorithm_class, cfg),
        results=[AlphaResult(alpha=problem.alpha, beta=problem.beta, test=results["test"],
                             selection_split=selection, selected=best.selected,
                             validation={selection: best.result}, validators=validators)],
        bp=problem.bp, wall_time_s=time.time() - t0,
        test_single_layout=single_layout(cfg.env, "test"),
        extra={"checkpoint": str(best.path), "eval_num_envs": eval_envs,
               "train": {k: v for k, v in trained.summary.items() if k != "candidates"}},
    )
    write_json(run_dir / "summary.json", summary.to_json())
    return run_dir


def _train_and_test(problem: CoordProblem, run_dir: Path, console: Console
                    ) -> tuple[AlgorithmResult, dict[str, Choice], int]:
    """Run the algorithm on train with both validators (YRC-0's val_sim and the oracle's
    val_true, the selection split first); score each validator's choice on test."""
    cfg = problem.cfg
    splits = [cfg.coordination.selection_split,
              *(s for s in VALIDATORS if s != cfg.coordination.selection_split)]
    train_env = problem.env("train")
    evaluators = problem.evaluators(splits)
    policy = problem.policy(train_env)
    last = run_dir / "last.pt"
    if cfg.resume and last.is_file():  # its weights must fit, before any write
        load_params(policy, load_checkpoint(last)["state_dict"], str(last))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    ctx = run_context(cfg, run_dir, console, problem.device, problem.checkpoint_metadata())
    try:
        trained = problem.algorithm(ctx).train(policy, train_env, evaluators)
        train_env.close()
        test = problem.evaluators(["test"])
        validators = _score_validators(trained.best, splits, policy, test["test"])
        close_evaluators(test)
    finally:
        close_evaluators(evaluators)
        ctx.close()
    return trained, validators, evaluators[splits[0]].env.num_envs


def _score_validators(best: dict, splits: list[str], policy: Any, test: Any
                      ) -> dict[str, Choice]:
    """Each validator's choice scored on test; a choice two validators share plays once."""
    out: dict[str, Choice] = {}
    for split in splits:
        chosen = best[split]
        same = next((s for s in out if best[s].selected == chosen.selected), None)
        if same is None:
            policy.set_params(chosen.params)
            result = test.evaluate(policy)
        else:
            result = out[same].test
        out[split] = Choice(selected=chosen.selected, result=chosen.result, test=result)
    policy.set_params(best[splits[0]].params)
    return out


def _train_coord_grid(problem: CoordProblem, console: Console, claim: Any = None) -> Path:
    """``coordination.alphas=[...]``: one method over an α grid.

    A method that shares rollouts across α plays its candidates once and is rescored per
    α (a failure takes back what it wrote, ``claim``); any other trains once per α in
    its own sub-run, which a re-run resumes.
    """
    cfg = problem.cfg
    shared = problem.algorithm_class.shares_rollouts
    run_dir = make_run_dir(cfg, "coord", claim if shared else None)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    alphas = [float(a) for a in cfg.coordination.alphas]
    console.print(f"[bold]coordination[/] {problem.method} on {cfg.env.task} over alpha "
                  f"{', '.join(f'{a:g}' for a in alphas)} (BP={problem.bp:.4g}); run dir {run_dir}")
    t0 = time.time()
    if shared:
        train_env = problem.env("train")
        ctx = run_context(cfg, run_dir, console, problem.device)
        try:
            per_alpha, extra = run_candidate_grid(problem, problem.algorithm(ctx),
                                                  problem.policy(train_env), train_env, run_dir)
        finally:
            train_env.close()
            ctx.close()
    else:
        def single(sub: DictConfig) -> dict[str, Any]:
            return json.loads((train_coord(sub, console) / "summary.json").read_text())

        per_alpha, extra = run_learned_grid(cfg, single, run_dir)
    summary = JobSummary(
        method=problem.method, task=cfg.env.task, seed=int(cfg.seed),
        traits=job_traits(problem.algorithm_class, cfg), results=per_alpha, grid=True,
        beta=problem.beta, bp=problem.bp, selection_split=cfg.coordination.selection_split,
        wall_time_s=time.time() - t0, test_single_layout=single_layout(cfg.env, "test"),
        extra=extra,
    )
    print_grid(console, summary)
    write_json(run_dir / "summary.json", summary.to_json())
    return run_dir

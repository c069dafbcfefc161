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

import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.table import Table

from duo_cli.checkpoint import save_policy
from duo_cli.coordination.env import step_costs
from duo_cli.coordination.problem import CoordProblem
from duo_cli.errors import ConfigError
from duo_cli.evaluation.evaluator import close_evaluators
from duo_cli.evaluation.statistics import summarize_outcomes, without_episodes
from duo_cli.summaries import VALIDATORS, AlphaResult, Choice, JobSummary, SummaryError, read_summary
from duo_cli.tables import fmt, fmt_ci


def rescore(result: dict[str, Any], alpha: float, beta: float, bp: float,
            decimals: int | None = None) -> dict[str, Any]:
    """The evaluation ``result`` as if played at cost weights (α, β) with base penalty ``bp``.

    ``decimals`` rounds the per-step costs as ``coordination.cost_decimals`` does.
    """
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


def run_candidate_grid(problem: CoordProblem, algorithm: Any, policy: Any,
                       train_env: Any, run_dir: Path) -> dict[str, Any]:
    """Shared-rollout α grid for a :class:`~duo_cli.algorithms.search.CandidateSearch`.

    Each candidate plays both validators once (:meth:`CandidateSearch.play`); the best
    per α and validator is chosen by rescoring those rollouts, and each distinct
    chosen candidate plays test once.

    :param problem: the job's coordination problem (its config has the α grid).
    :returns: the job summary's results (one per α) and its further keys: the
        candidate table and the number of rollouts.
    """
    cfg = problem.cfg
    co = cfg.coordination
    alphas = [float(a) for a in co.alphas]
    beta, bp = float(co.switch_agent_cost_weight), float(problem.bp)
    decimals = co.get("cost_decimals")

    def score(result: dict[str, Any], alpha: float) -> dict[str, Any]:
        return rescore(result, alpha, beta, bp, decimals)
    algorithm.ctx.console.print(
        f"{len(alphas)} alpha(s), validators {', '.join(VALIDATORS)}: each candidate plays "
        "each validation split once")
    evaluators = problem.evaluators([*VALIDATORS, "test"])
    try:
        played = algorithm.play(policy, train_env, {s: evaluators[s] for s in VALIDATORS},
                                show_results=False)
        choice = {split: [int(np.argmax([score(c.results[split], a)["reward_mean"]
                                         for c in played])) for a in alphas]
                  for split in VALIDATORS}
        tested: dict[int, dict[str, Any]] = {}
        for i in sorted({i for idx in choice.values() for i in idx}):
            policy.set_params(played[i].params)
            tested[i] = evaluators["test"].evaluate(policy)
    finally:
        close_evaluators(evaluators)

    selection = co.selection_split
    per_alpha = []
    for j, alpha in enumerate(alphas):
        validation, validators = {}, {}
        for split in VALIDATORS:
            i = choice[split][j]
            validation[split] = without_episodes(score(played[i].results[split], alpha))
            # per-episode lists in test: the paired validator gap
            validators[split] = Choice(test=score(tested[i], alpha), selected=played[i].plain,
                                       index=i)
            policy.set_params(played[i].params)
            _save_selected(problem, run_dir / alpha_key(alpha) / f"best_{split}.pt", policy,
                           alpha, {"selected": played[i].plain, "selected_on": split})
        i = choice[selection][j]
        per_alpha.append(AlphaResult(alpha, beta, test=score(tested[i], alpha),
                                     selection_split=selection, selected=played[i].plain,
                                     validation=validation, validators=validators))
    table = [{"params": c.plain,
              **{s: without_episodes(score(c.results[s], alphas[0])) for s in VALIDATORS}}
             for c in played]
    return per_alpha, {"candidates": table, "test_rollouts": len(tested),
                       "validation_rollouts": len(played) * len(VALIDATORS)}


def _save_selected(problem: CoordProblem, path: Path, policy: Any, alpha: float,
                   meta: dict[str, Any]) -> None:
    """A coordinator checkpoint whose ``run_config`` is the single-α job at ``alpha``."""
    metadata = problem.checkpoint_metadata()
    run_config = metadata["run_config"]
    run_config["coordination"]["alphas"] = None
    run_config["coordination"]["expert_query_cost_weight"] = alpha
    save_policy(path, policy, {**metadata, **meta})


def run_learned_grid(cfg: DictConfig, run_single, run_dir: Path
                     ) -> tuple[list[AlphaResult], dict[str, Any]]:
    """A learning method (PPO, skyline): one training per α, each in its own sub-dir.

    :param run_single: ``(cfg) -> summary`` (its JSON data) of a single-α coordination run.
    :returns: the job summary's results, one per α: each the whole summary of its
        single-α run, and its further keys (none).
    """
    per_alpha = []
    for alpha in [float(a) for a in cfg.coordination.alphas]:
        sub_dir = run_dir / alpha_key(alpha)
        done = sub_dir / "summary.json"
        if done.is_file():  # finished before an interruption
            try:
                per_alpha.append(_entry(read_summary(done).to_json()))
            except SummaryError as exc:
                raise ConfigError(f"{done}: {exc}; remove it to re-run alpha {alpha:g}") from None
            continue
        sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(sub):
            sub.coordination.alphas = None
            sub.coordination.expert_query_cost_weight = alpha
            sub.run_dir = str(sub_dir)
            sub.resume = (sub_dir / "last.pt").is_file()
            sub.overwrite = not sub.resume
        t0 = time.time()
        entry = _entry(run_single(sub))
        entry.extra["wall_time_s"] = time.time() - t0
        per_alpha.append(entry)
    return per_alpha, {}


def _entry(single: dict[str, Any]) -> AlphaResult:
    """A single-α run's summary as one entry of ``per_alpha``: its result, with the
    rest of that summary (``train``, ``checkpoint``, ...) kept verbatim."""
    JobSummary.from_json(single)  # refuses what is not a single-α job summary
    return AlphaResult.from_json(single)


def print_grid(console, summary: JobSummary) -> None:
    table = Table(title=f"{summary.method} on {summary.task}: test, per alpha")
    for col in ("alpha", "reward ± CI", "expert frac", "selected"):
        table.add_column(col, justify="right" if col != "selected" else "left")
    for r in summary.results:
        t = r.test
        sel = ", ".join(f"{k}={fmt(v, 3)}" for k, v in (r.selected or {}).items())
        table.add_row(f"{r.alpha:g}", fmt_ci(t["reward_mean"], t["reward_ci95"]),
                      fmt(t.get("expert_frac")), sel or "-")
    console.print(table)

"""Coordination methods on fake envs (no Procgen): policies and candidate search (the PPO
coordinator: ``test_coord_ppo_learns.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from coord_policies import EXPERT, NOVICE, base_obs, make_ctx, spec
from fakes import FakeCoordEnv
from omegaconf import OmegaConf

from duo_cli.algorithms.search import (
    Always,
    AskEveryKSearch,
    LogitSearch,
    RandomSearch,
    collect_novice_obs,
)
from duo_cli.checkpoint import load_checkpoint
from duo_cli.evaluation.evaluator import Evaluator
from duo_cli.policies.always import AlwaysPolicy
from duo_cli.policies.ask_every_k import AskEveryKPolicy
from duo_cli.policies.logit import METRICS, LogitPolicy, confidence
from duo_cli.policies.random import RandomPolicy

# -- logit confidence metrics -------------------------------------------------------------

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
#: softmax([ln 2, 0, 0]) = [1/2, 1/4, 1/4]; softmax([0, 0, 0]) = [1/3, 1/3, 1/3]
CONFIDENT = [LN2, 0.0, 0.0]
UNIFORM = [0.0, 0.0, 0.0]
EXPECTED = {
    #            confident row                       uniform row
    "max_logit": (LN2, 0.0),
    "max_prob": (0.5, 1 / 3),
    "margin": (0.25, 0.0),
    # negative entropy: sum p log p
    "entropy": (0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25), -LN3),
    # log-sum-exp: log(2 + 1 + 1), log(3)
    "energy": (LN4, LN3),
}


def test_metric_set_is_the_documented_one():
    assert set(METRICS) == set(EXPECTED)


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_confidence_hand_computed(metric):
    scores = confidence(metric, np.array([CONFIDENT, UNIFORM]))
    assert scores.shape == (2,)
    np.testing.assert_allclose(scores, EXPECTED[metric], rtol=0, atol=1e-9)


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_confident_row_scores_higher_than_uniform(metric):
    rows = np.array([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                     [3.0, 1.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5]])
    s = confidence(metric, rows)
    assert s[0] > s[1], s
    assert s[2] > s[3], s


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_confidence_is_numerically_stable(metric):
    s = confidence(metric, np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0]]))
    assert np.isfinite(s).all(), s
    assert s[0] > s[1]


def test_entropy_is_negative_entropy():
    # a one-hot distribution has entropy 0 (the maximum of negative entropy)
    s = confidence("entropy", np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(s, [0.0, -LN2], atol=1e-9)


def test_unknown_metric_names_the_valid_choices():
    with pytest.raises(ValueError, match="no_such_metric") as info:
        confidence("no_such_metric", np.zeros((1, 2)))
    for name in EXPECTED:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="max_logit"):
        LogitPolicy({"metric": "no_such_metric", "threshold": None}, spec())


def test_logit_policy_queries_exactly_below_threshold():
    policy = LogitPolicy({"metric": "max_logit", "threshold": 2.0}, spec(4))
    logits = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [1.999, 2.0]])
    obs = {**base_obs(4), "novice_logits": logits}
    np.testing.assert_array_equal(policy.decide(obs), [True, False, False, False])
    action = policy.act(obs)
    assert action.dtype == torch.int64
    np.testing.assert_array_equal(action.numpy(), [EXPERT, NOVICE, NOVICE, NOVICE])
    # torch logits work too (the PPO path hands tensors around)
    obs_t = {**obs, "novice_logits": torch.from_numpy(logits)}
    np.testing.assert_array_equal(policy.decide(obs_t), [True, False, False, False])


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_logit_policy_decision_matches_score(metric):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 5)) * 2
    obs = {**base_obs(50), "novice_logits": logits}
    policy = LogitPolicy({"metric": metric, "threshold": None}, spec(50))
    scores = policy.score(obs)
    threshold = float(np.median(scores))
    policy.set_params({"metric": metric, "threshold": threshold})
    np.testing.assert_array_equal(policy.decide(obs), scores < threshold)
    assert policy.get_params() == {"metric": metric, "threshold": threshold}


# -- percentile candidates ----------------------------------------------------------------


@pytest.mark.parametrize("metric", ["max_logit", "entropy", "margin"])
def test_logit_search_thresholds_are_percentiles_of_novice_scores(tmp_path, metric):
    num_envs, steps, fit_steps = 4, 7, 5
    table = np.random.default_rng(0).normal(size=(steps, num_envs, 3)).astype(np.float32) * 3
    env = FakeCoordEnv(num_envs=num_envs, ep_length=3, logits=table)
    policy = LogitPolicy({"metric": metric, "threshold": None}, env)
    percentiles = [0, 10, 50, 90, 100]
    cfg = OmegaConf.create({"name": "logit", "percentiles": percentiles, "fit_steps": fit_steps})
    search = LogitSearch(cfg, make_ctx(tmp_path, seed=7))
    cands = search.candidates(policy, env)
    # the novice alone played fit_steps steps (reset + fit_steps - 1 steps), seeded by ctx.seed
    assert env.reset_seeds == [7]
    assert len(env.actions) == fit_steps - 1
    assert all((a == NOVICE).all() for a in env.actions)
    expected = np.percentile(confidence(metric, table[:fit_steps].reshape(-1, 3)), percentiles)
    assert [c["metric"] for c in cands] == [metric] * len(percentiles)
    np.testing.assert_allclose([c["threshold"] for c in cands], expected, rtol=1e-6)
    assert all(isinstance(c["threshold"], float) for c in cands)
    # the 0th percentile never queries on the fit states, the 100th queries all but the max
    fit = {"novice_logits": table[:fit_steps].reshape(-1, 3)}
    policy.set_params(cands[0])
    assert not policy.decide(fit).any()
    policy.set_params(cands[-1])
    assert policy.decide(fit).sum() == fit_steps * num_envs - 1


def test_collect_novice_obs_stacks_states():
    table = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    env = FakeCoordEnv(num_envs=2, ep_length=2, logits=table)
    out = collect_novice_obs(env, "novice_logits", 4, seed=3)
    np.testing.assert_array_equal(out, table[:4].reshape(-1, 3))


def test_simple_searches_list_their_candidates(tmp_path):
    env = FakeCoordEnv(num_envs=2)
    ctx = make_ctx(tmp_path)
    assert RandomSearch({"name": "random", "probs": [0, 0.5, 1]}, ctx).candidates(
        RandomPolicy({"p": 0.5}, env), env) == [{"p": 0.0}, {"p": 0.5}, {"p": 1.0}]
    assert AskEveryKSearch({"name": "k", "candidates": [1, 5]}, ctx).candidates(
        AskEveryKPolicy({"k": 5}, env), env) == [{"k": 1}, {"k": 5}]
    assert Always({"name": "always"}, ctx).candidates(
        AlwaysPolicy({"agent": "expert"}, env), env) == [{"agent": "expert"}]


# -- ask every k ----------------------------------------------------------------------------


def test_ask_every_k_period():
    policy = AskEveryKPolicy({"k": 3}, spec(2))
    policy.reset(np.ones(2, dtype=bool))
    asks = np.array([policy.decide(base_obs(2)) for _ in range(8)])
    np.testing.assert_array_equal(asks[:, 0], [1, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(asks[:, 1], asks[:, 0])


def test_ask_every_k_counter_resets_per_row_at_episode_end():
    policy = AskEveryKPolicy({"k": 3}, spec(2))
    policy.reset(np.ones(2, dtype=bool))
    first = [policy.decide(base_obs(2)).tolist() for _ in range(2)]  # steps 0, 1 of both
    assert first == [[True, True], [False, False]]
    policy.reset(np.array([True, False]))  # row 0's episode ended after 2 steps
    nxt = [policy.decide(base_obs(2)).tolist() for _ in range(4)]
    # row 0 restarts at step 0 (asks now and 3 steps later); row 1 continues at step 2
    assert [r[0] for r in nxt] == [True, False, False, True]
    assert [r[1] for r in nxt] == [False, True, False, False]


def test_ask_every_k_one_always_asks_and_bad_k_refused():
    policy = AskEveryKPolicy({"k": 1}, spec(3))
    policy.reset(np.ones(3, dtype=bool))
    assert all(policy.decide(base_obs(3)).all() for _ in range(4))
    with pytest.raises(ValueError, match="k"):
        policy.set_params({"k": 0})


def test_ask_every_k_in_evaluator_counts_expert_steps():
    env = FakeCoordEnv(num_envs=2, ep_length=7)
    policy = AskEveryKPolicy({"k": 3}, env)
    res = Evaluator(env, num_episodes=4, seed=0).evaluate(policy)
    # steps 0, 3, 6 of every 7-step episode
    assert res["expert_frac"] == pytest.approx(3 / 7)
    assert res["episodes"] == 4


# -- random -----------------------------------------------------------------------------


def test_random_extremes():
    env = spec(64)
    never = RandomPolicy({"p": 0.0}, env)
    always = RandomPolicy({"p": 1.0}, env)
    for _ in range(5):
        assert not never.decide(base_obs(64)).any()
        assert always.decide(base_obs(64)).all()


def test_random_rate_and_same_stream_after_eval():
    policy = RandomPolicy({"p": 0.3}, spec(1000), seed=5)
    policy.eval()
    first = [policy.decide(base_obs(1000)) for _ in range(3)]
    assert 0.25 < np.mean(first) < 0.35
    policy.eval()
    second = [policy.decide(base_obs(1000)) for _ in range(3)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = RandomPolicy({"p": 0.3}, spec(1000), seed=6)
    other.eval()
    assert not np.array_equal(other.decide(base_obs(1000)), first[0])


def test_random_evaluations_are_reproducible():
    env = FakeCoordEnv(num_envs=4, ep_length=5)
    policy = RandomPolicy({"p": 0.5}, env, seed=1)
    ev = Evaluator(env, num_episodes=8, seed=0)
    a, b = ev.evaluate(policy), ev.evaluate(policy)
    assert a["rewards"] == b["rewards"] and a["expert_frac"] == b["expert_frac"]
    assert 0.2 < a["expert_frac"] < 0.8


# -- always -----------------------------------------------------------------------------


@pytest.mark.parametrize(("agent", "who"), [("novice", NOVICE), ("expert", EXPERT)])
def test_always(agent, who):
    policy = AlwaysPolicy({"agent": agent}, spec(3))
    np.testing.assert_array_equal(policy.act(base_obs(3)).numpy(), [who] * 3)
    assert policy.get_params() == {"agent": agent}
    env = FakeCoordEnv(num_envs=2, ep_length=3)
    res = Evaluator(env, num_episodes=2, seed=0).evaluate(AlwaysPolicy({"agent": agent}, env))
    assert res["expert_frac"] == float(who)


def test_always_invalid_agent():
    with pytest.raises(ValueError, match="novice, expert"):
        AlwaysPolicy({"agent": "oracle"}, spec())


# -- candidate search selection -----------------------------------------------------------


def test_candidate_search_selects_best_per_split_and_saves_it(tmp_path):
    # on val_sim the expert is worth its cost; on val_true the novice is better
    evaluators = {
        "val_sim": Evaluator(FakeCoordEnv(num_envs=4, ep_length=3, novice_reward=0.0,
                                          expert_reward=1.0, expert_cost=0.2), 8, seed=1),
        "val_true": Evaluator(FakeCoordEnv(num_envs=4, ep_length=3, novice_reward=0.5,
                                           expert_reward=1.0, expert_cost=0.8), 8, seed=2),
    }
    train_env = FakeCoordEnv(num_envs=4)
    policy = RandomPolicy({"p": 0.5}, train_env, seed=0)
    ctx = make_ctx(tmp_path)
    ctx.metadata = {"method": "random"}
    cfg = OmegaConf.create({"name": "random", "probs": [0.0, 0.5, 1.0]})
    result = RandomSearch(cfg, ctx).train(policy, train_env, evaluators).summary

    assert [r["params"] for r in result["candidates"]] == [{"p": 0.0}, {"p": 0.5}, {"p": 1.0}]
    assert result["best"]["val_sim"]["params"] == {"p": 1.0}
    assert result["best"]["val_sim"]["index"] == 2
    assert result["best"]["val_true"]["params"] == {"p": 0.0}
    assert result["best"]["val_sim"]["result"]["reward_mean"] == pytest.approx(3 * 0.8)
    assert result["best"]["val_true"]["result"]["reward_mean"] == pytest.approx(3 * 0.5)
    assert "rewards" not in result["best"]["val_sim"]["result"]

    for split, p in (("val_sim", 1.0), ("val_true", 0.0)):
        ckpt = load_checkpoint(tmp_path / f"best_{split}.pt")
        assert ckpt["kind"] == "coord"
        assert ckpt["state_dict"] == {"p": p}
        meta = ckpt["metadata"]
        assert meta["selected"] == {"p": p}
        assert meta["selected_on"] == split
        assert meta["method"] == "random"
        assert set(meta["eval"]) == {split}
        # the saved checkpoint rebuilds a policy that scores what was recorded
        fresh = RandomPolicy(ckpt["config"]["policy"], train_env, seed=0)
        fresh.set_params(ckpt["state_dict"])
        assert evaluators[split].evaluate(fresh)["reward_mean"] == pytest.approx(
            meta["eval"][split]["reward_mean"])
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


def test_logit_search_selects_the_known_best_threshold(tmp_path):
    # novice logits alternate between confident (max_logit 5) and unsure (max_logit 0) rows;
    # the selection split rewards the expert, so the highest threshold (asks most) wins
    table = np.zeros((2, 4, 3), dtype=np.float32)
    table[0, :, 0] = 5.0
    env = FakeCoordEnv(num_envs=4, ep_length=2, logits=table)
    ev_env = FakeCoordEnv(num_envs=4, ep_length=2, logits=table, novice_reward=0.0,
                          expert_reward=1.0, expert_cost=0.1)
    policy = LogitPolicy({"metric": "max_logit", "threshold": None}, env)
    cfg = {"name": "logit", "percentiles": [0, 100], "fit_steps": 2}
    result = LogitSearch(cfg, make_ctx(tmp_path)).train(policy, env, {"val_sim": Evaluator(
        ev_env, 4, seed=0)}).summary
    assert [r["params"]["threshold"] for r in result["candidates"]] == [0.0, 5.0]
    assert result["best"]["val_sim"]["params"] == {"metric": "max_logit", "threshold": 5.0}
    assert result["best"]["val_sim"]["result"]["expert_frac"] == 0.5
    ckpt = load_checkpoint(tmp_path / "best_val_sim.pt")
    assert ckpt["metadata"]["selected"] == {"metric": "max_logit", "threshold": 5.0}

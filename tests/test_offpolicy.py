"""Off-policy evaluation: the estimators by hand, their unbiasedness by enumeration, the
refusal of steps without a behaviour probability, and every coordinator's p(expert)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fakes import FakeCoordEnv

from duo_cli.errors import DuoError
from duo_cli.evaluation.offpolicy import (
    effective_sample_size,
    estimate,
    pdis_returns,
    weigh,
    weighted_pdis,
)
from duo_cli.policies.always import AlwaysPolicy
from duo_cli.policies.ask_every_k import AskEveryKPolicy
from duo_cli.policies.coord_ppo import CoordPPOPolicy
from duo_cli.policies.logit import LogitPolicy
from duo_cli.policies.ood import OODPolicy
from duo_cli.policies.random import RandomPolicy
from duo_cli.serve.offpolicy import action_terms, choice_terms, complete_episodes
from duo_cli.serve.replay import Replayed, action_probs
from duo_cli.serve.store import StepColumns

# two episodes: rewards, behaviour and target probabilities of the logged decisions
R = [[1.0, 2.0], [0.0, 1.0, 3.0]]
B = [[0.5, 0.5], [0.5, 0.25, 0.5]]
E = [[1.0, 0.0], [1.0, 1.0, 1.0]]


# -- the estimators by hand -------------------------------------------------------------------

def test_pdis_and_weighted_pdis_by_hand():
    w = weigh(R, B, E)
    # rho: episode 0 [2, 0], episode 1 [2, 8, 16]
    np.testing.assert_array_equal(w.rho, [[2, 0, 0], [2, 8, 16]])
    # PDIS per episode: 2*1 + 0*2 = 2; 2*0 + 8*1 + 16*3 = 56
    np.testing.assert_array_equal(pdis_returns(w), [2, 56])
    # WPDIS: t0 (2*1 + 2*0)/4 = 0.5; t1 (0*2 + 8*1)/8 = 1; t2 (0 + 16*3)/16 = 3
    assert weighted_pdis(w) == pytest.approx(4.5)
    res = estimate(w)
    assert res.pdis == pytest.approx(29.0) and res.wpdis == pytest.approx(4.5)
    # final weights [0, 16]: ESS = 16^2 / 16^2 = 1, one episode of nonzero weight
    assert res.ess == pytest.approx(1.0) and res.matched == 1
    assert res.episodes == 2 and res.steps == 5


def test_rewards_fixed_before_a_decision_take_the_previous_weight():
    w = weigh(R, B, E, before=[[-1.0, -1.0], [0.0, -2.0, 0.0]])
    # before-weights rho[t-1]: episode 0 [1, 2], episode 1 [1, 2, 8]
    # PDIS: 2 - 1 - 2 = -1; 56 + 0 - 4 + 0 = 52
    np.testing.assert_array_equal(pdis_returns(w), [-1, 52])
    # WPDIS adds t0 (-1 + 0)/2 = -0.5, t1 (2*-1 + 2*-2)/4 = -1.5, t2 0 (episode 0 ended)
    assert weighted_pdis(w) == pytest.approx(4.5 - 2.0)


def test_a_step_no_episode_could_reach_adds_nothing_to_the_weighted_estimate():
    w = weigh([[1.0, 5.0]], [[0.5, 0.5]], [[1.0, 0.0]])
    assert weighted_pdis(w) == pytest.approx(1.0)  # t1: weights all 0 -> 0, not nan


def test_on_policy_weights_give_the_mean_return():
    rng = np.random.default_rng(0)
    rewards = [rng.random(rng.integers(1, 6)) for _ in range(40)]
    probs = [rng.uniform(0.1, 1.0, len(r)) for r in rewards]
    res = estimate(weigh(rewards, probs, probs))
    mean = np.mean([r.sum() for r in rewards])
    assert res.pdis == pytest.approx(mean) and res.wpdis == pytest.approx(mean)
    assert res.ess == pytest.approx(40) and res.pdis_ci[0] < mean < res.pdis_ci[1]
    assert estimate(weigh(rewards, probs, probs)).pdis_ci == res.pdis_ci  # seeded


def test_effective_sample_size():
    assert effective_sample_size(np.ones(7)) == pytest.approx(7)
    assert effective_sample_size([4.0, 0.0, 0.0]) == pytest.approx(1)
    assert effective_sample_size([1.0, 3.0]) == pytest.approx(16 / 10)
    assert effective_sample_size(np.zeros(3)) == 0.0


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        weigh([[1.0]], [[0.0]], [[1.0]])
    with pytest.raises(ValueError, match="episode 0"):
        weigh([[1.0, 2.0]], [[0.5]], [[1.0]])


# -- both weightings are unbiased: exact expectation over every 2-step trajectory ---------------

NOVICE_PI = {0: [0.7, 0.3], 1: [0.4, 0.6], 2: [0.9, 0.1]}  # pi(a | state), states 0, 1, 2
EXPERT_PI = {0: [0.2, 0.8], 1: [0.5, 0.5], 2: [0.1, 0.9]}
BEHAVIOUR = {0: 0.5, 1: 0.3, 2: 0.6}  # p(expert | state)
TARGETS = {"stochastic": {0: 0.8, 1: 0.1, 2: 0.5}, "deterministic": {0: 1.0, 1: 0.0, 2: 1.0}}
EXPERT_COST, SWITCH_COST = 0.3, 0.2
REWARD = {(0, 0): 0.0, (0, 1): 1.0, (1, 0): 2.0, (1, 1): 5.0}  # after step 1, by (a0, a1)


def _trajectories(p_expert: dict[int, float]):
    """Every (actors, actions, states) of the toy problem with its probability: state 0,
    then state 1 + a0; the base reward a0 after step 0 and REWARD[a0, a1] after step 1."""
    for c0, a0, c1, a1 in itertools.product((0, 1), repeat=4):
        s = (0, 1 + a0)
        pc = [p_expert[s[0]] if c0 else 1 - p_expert[s[0]], p_expert[s[1]] if c1 else
              1 - p_expert[s[1]]]
        pa = [(EXPERT_PI if c else NOVICE_PI)[st][a] for c, st, a in ((c0, s[0], a0),
                                                                    (c1, s[1], a1))]
        yield (c0, c1), (a0, a1), s, float(np.prod(pc) * np.prod(pa))


def _logged(actors, actions, states):
    """The log record, its steps and the target's view of one trajectory."""
    cost = [EXPERT_COST * actors[0], EXPERT_COST * actors[1]
            + SWITCH_COST * (actors[1] != actors[0])]
    b = [BEHAVIOUR[s] for s in states]
    steps = StepColumns(actor=["expert" if c else "novice" for c in actors], action=list(actions),
                        reward=[float(actions[0]), REWARD[actions]], cost=cost, p_expert=b,
                        p_choice=[p if c else 1 - p for p, c in zip(b, actors, strict=True)])
    rec = {"base_return": float(sum(steps.reward))}
    return rec, steps, cost


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("kind", ["choice", "action"])
def test_pdis_is_unbiased_by_enumeration(kind, target):
    tau = TARGETS[target]
    truth = sum(p * (a[0] + REWARD[a] - _logged(c, a, s)[2][0] - _logged(c, a, s)[2][1])
                for c, a, s, p in _trajectories(tau))
    expected = 0.0
    for actors, actions, states, p in _trajectories(BEHAVIOUR):
        rec, steps, _ = _logged(actors, actions, states)
        rp = Replayed(np.array([tau[s] for s in states]),
                      np.array([NOVICE_PI[s][a] for s, a in zip(states, actions, strict=True)]),
                      np.array([EXPERT_PI[s][a] for s, a in zip(states, actions, strict=True)]))
        terms = (choice_terms(rec, steps, rp) if kind == "choice" else
                 action_terms(rec, steps, rp, EXPERT_COST, SWITCH_COST))
        expected += p * pdis_returns(weigh(*[[t] for t in terms]))[0]
    assert expected == pytest.approx(truth, abs=1e-12)


def test_action_probabilities_at_a_temperature():
    logits = np.array([[0.0, np.log(3.0)], [2.0, 1.0]])
    np.testing.assert_allclose(action_probs(logits, np.array([1, 1]), 1.0), [0.75, 1 / (1 + np.e)])
    np.testing.assert_allclose(action_probs(logits, np.array([1, 1]), 0.0), [1.0, 0.0])


# -- what the log must hold -------------------------------------------------------------------

def _record(actors, p_choice, status="ended"):
    n = len(actors)
    return {"status": status, "length": n, "alpha": 0.4, "beta": 0.0, "bp": 0.1,
            "base_return": 1.0, "return": 1.0,
            "steps": {"actor": actors, "p_choice": p_choice, "obs_row": list(range(n)),
                      "reward": [0.0] * n, "cost": [0.0] * n}}


def test_steps_without_a_behaviour_probability_refuse_the_log():
    ok = _record(["novice", "expert"], [0.5, 0.5])
    app = _record(["novice", "application", "application"], [0.5, None, None])
    with pytest.raises(DuoError, match="2 step.* in 1 episode.* no behaviour probability"):
        complete_episodes([ok, app], "log")
    kept, excluded = complete_episodes([ok, _record(["expert"], [0.5], "abandoned"),
                                        _record([], [], "ended")], "log")
    assert kept == [ok] and excluded == {"abandoned": 1, "empty (no step)": 1}
    old = {**ok, "steps": {"actor": ["novice"], "reward": [0.0], "cost": [0.0]}}  # schema 1
    with pytest.raises(DuoError, match="no behaviour probability"):
        complete_episodes([old], "log")


def test_duo_eval_from_log_refuses_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from duo_cli.cli import app

    (tmp_path / "config.yaml").write_text("{}\n")
    lines = [json.dumps(_record(["novice", "application"], [0.5, None]))]
    (tmp_path / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "none.pt"), "--from-log",
                                   str(tmp_path), f"run_dir={tmp_path / 'out'}"])
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert "1 step(s) in 1 episode(s) have no behaviour probability" in line
    assert not (tmp_path / "out").exists()


# -- every coordinator gives p(expert), the probability its act chooses the expert -------------

def _env(n=4):
    return SimpleNamespace(num_envs=n, NOVICE=0, EXPERT=1)


def test_choice_probs_of_the_rule_based_coordinators():
    obs = {"base_obs": np.zeros((3, 2, 2, 3), np.uint8),
           "novice_logits": np.array([[5.0, 0.0], [1.0, 0.0], [3.0, 0.0]])}
    np.testing.assert_array_equal(RandomPolicy({"p": 0.3}, _env()).choice_probs(obs), [0.3] * 3)
    for agent, p in (("expert", 1.0), ("novice", 0.0)):
        assert list(AlwaysPolicy({"agent": agent}, _env()).choice_probs(obs)) == [p] * 3
    logit = LogitPolicy({"metric": "max_logit", "threshold": 3.0}, _env())
    np.testing.assert_array_equal(logit.choice_probs(obs), [0.0, 1.0, 0.0])  # score < 3
    np.testing.assert_array_equal(logit.choice_probs(obs), logit.decide(obs))
    ood = OODPolicy({"feature": "novice_logits", "detector": {}, "threshold": 2.0}, _env())
    ood.detector = SimpleNamespace(decision_function=lambda x: x[:, 0])  # score: first column
    np.testing.assert_array_equal(ood.choice_probs(obs), [1.0, 0.0, 1.0])  # score >= 2
    k3 = AskEveryKPolicy({"k": 3}, _env(1))
    seen = []
    for _ in range(7):
        seen.append(float(k3.choice_probs(obs)[0]))
        seen.append(float(k3.choice_probs(obs)[0]))  # asking does not advance the counter
        k3.act({"base_obs": obs["base_obs"][:1]})
    assert seen == [1.0, 1.0, 0, 0, 0, 0, 1.0, 1.0, 0, 0, 0, 0, 1.0, 1.0]


def test_choice_probs_of_the_ppo_coordinator_are_its_act_distribution():
    env = FakeCoordEnv(num_envs=2000)
    policy = CoordPPOPolicy({"features": ["novice_hidden", "novice_dist"], "hidden_dim": 8,
                             "bf16": False, "obs_model": None}, env)
    obs, _ = env.reset(seed=3)
    with torch.no_grad():
        logits = policy.forward(obs).logits.double()
    for temp in (1.0, 0.5):
        p = policy.choice_probs(obs, temp)
        np.testing.assert_allclose(p, torch.softmax(logits / temp, -1)[:, 1].numpy(), rtol=1e-6)
        torch.manual_seed(0)
        drawn = np.mean([policy.act(obs, temp).numpy().mean() for _ in range(20)])
        assert drawn == pytest.approx(p.mean(), abs=0.01)  # 40000 draws: sd 0.0025
    greedy = policy.choice_probs(obs, 0.0)
    np.testing.assert_array_equal(greedy, policy.act(obs, 0.0).numpy())

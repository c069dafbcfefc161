"""The online learner behind ``serve.learn=true``: segments, GAE, lag, exclusions, parity."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from duo_cli.algorithms.ppo import PPO
from duo_cli.algorithms.rollout import RewardScaler, Rollout, compute_gae
from duo_cli.models.base import ModelOutput
from duo_cli.rundir import RunContext
from duo_cli.serve.learner import OnlineLearner


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 8)
        self.pi, self.v = nn.Linear(8, 2), nn.Linear(8, 1)

    def forward(self, obs):
        h = torch.tanh(self.body(obs["x"].float()))
        return ModelOutput(self.pi(h), self.v(h).squeeze(-1), h)


class _Policy:
    """A coordinator with ``model`` and ``forward(obs dict)`` (what the learner needs)."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.model = _Net()

    def forward(self, obs):
        return self.model({k: torch.as_tensor(v) for k, v in obs.items()})

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def reset(self, done):
        pass


def _ppo(tmp_path, **overrides) -> PPO:
    cfg = {"total_timesteps": 1000, "num_steps": 8, "learning_rate": 0.01, "anneal_lr": False,
           "gamma": 0.9, "gae_lambda": 0.8, "num_minibatches": 1, "update_epochs": 2,
           "norm_adv": True, "clip_coef": 0.2, "clip_vloss": True, "ent_coef": 0.01,
           "vf_coef": 0.5, "max_grad_norm": 0.5, "target_kl": None, "chunk_size": None,
           "normalize_reward": False, "eval_every": 0, "save_every": 1, "snapshot_every": 0}
    cfg.update(overrides)
    return PPO(cfg, RunContext(tmp_path, console=Console(file=io.StringIO()), progress=False))


def _obs(x: float) -> dict[str, np.ndarray]:
    return {"x": np.array([x, 1.0 - x], dtype=np.float32)}


def _act(learner, key, x, cost=0.0):
    actor, p, logp, value = learner.choose({"x": _obs(x)["x"][None]})
    learner.on_act(key, _obs(x), int(actor[0]), float(logp[0]), float(value[0]), cost)
    return int(actor[0]), float(p[0]), float(logp[0]), float(value[0])


def test_segments_gae_by_hand(tmp_path):
    learner = OnlineLearner(_Policy(), _ppo(tmp_path), steps_per_update=3, max_policy_lag=1)
    # episode a: 2 steps then ends; episode b: 2 complete steps and a pending third
    for key in "ab":
        _act(learner, key, 0.1)
        learner.on_reward(key, 1.0)
        _act(learner, key, 0.2, cost=0.25)
    learner.on_end("a")
    learner.on_reward("b", 2.0)
    _, _, _, v_pending = _act(learner, "b", 0.3)
    assert learner.ready
    segments = learner.take_segments()
    by_key = {s.key: s for s in segments}
    assert by_key["a"].ended and not by_key["b"].ended
    assert by_key["b"].bootstrap == pytest.approx(v_pending)
    assert [s.reward for s in by_key["b"].steps] == [1.0, 2.0 - 0.25]
    rollout, adv, ret = learner.batch(segments)
    # segment a: rewards (1, -0.25), ends: GAE by hand with its logged values
    va = [s.value for s in by_key["a"].steps]
    d1 = -0.25 - va[1]
    d0 = 1.0 + 0.9 * va[1] - va[0]
    vb = [s.value for s in by_key["b"].steps]
    e1 = 1.75 + 0.9 * v_pending - vb[1]
    e0 = 1.0 + 0.9 * vb[1] - vb[0]
    order = [s.key for s in segments]
    expected = {"a": [d0 + 0.72 * d1, d1], "b": [e0 + 0.72 * e1, e1]}
    got = adv[:, 0].tolist()
    want = expected[order[0]] + expected[order[1]]
    assert got == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(ret, adv + rollout.values)
    # the pending step of b stays for the next update
    assert learner._running["b"].steps[0].value == pytest.approx(v_pending)


def test_segments_of_different_lengths_get_each_its_own_gae(tmp_path):
    """One GAE over right-aligned segments equals GAE run on each segment alone."""
    from duo_cli.serve.learner import Segment, ServedStep

    learner = OnlineLearner(_Policy(), _ppo(tmp_path), steps_per_update=1, max_policy_lag=1)
    rng = np.random.default_rng(0)
    shapes = [(3, True, 0.0), (1, False, 0.7), (5, False, -0.4), (2, True, 0.0)]
    segments = [Segment([ServedStep(_obs(float(rng.random())), 0, -0.5, float(rng.normal()), 0,
                                    float(rng.normal())) for _ in range(n)], ended, boot, f"e{i}")
                for i, (n, ended, boot) in enumerate(shapes)]
    _, adv, ret = learner.batch(segments)
    want = []
    for seg in segments:
        rewards = torch.tensor([[s.reward] for s in seg.steps])
        values = torch.tensor([[s.value] for s in seg.steps])
        a, _ = compute_gae(rewards, values, torch.zeros_like(rewards),
                           torch.tensor([seg.bootstrap]), torch.tensor([float(seg.ended)]),
                           0.9, 0.8)
        want.append(a)
    torch.testing.assert_close(adv, torch.cat(want), rtol=0, atol=0)  # the same float ops
    assert ret.shape == (11, 1)


def test_ratio_is_one_for_server_sampled_steps(tmp_path):
    """The logged behaviour log-probability is the policy's own: PPO's first ratio is 1."""
    policy = _Policy()
    learner = OnlineLearner(policy, _ppo(tmp_path), steps_per_update=4, max_policy_lag=1)
    for i in range(5):
        _act(learner, "e", i / 5)
    rollout, _, _ = learner.batch(learner.take_segments())
    with torch.no_grad():
        logp = policy.forward({"x": rollout.obs["x"][:, 0]}).logits.log_softmax(-1)
    new = logp.gather(-1, rollout.actions[:, :1]).squeeze(-1)
    ratio = (new - rollout.logprobs[:, 0]).exp()
    # one forward of one row at act time vs of four rows here: equal to float32 rounding
    torch.testing.assert_close(ratio, torch.ones(4), rtol=0, atol=1e-6)


def test_stale_steps_are_dropped_and_counted(tmp_path):
    learner = OnlineLearner(_Policy(), _ppo(tmp_path), steps_per_update=1, max_policy_lag=0)
    _act(learner, "old", 0.1)
    _act(learner, "old", 0.2)
    learner.version = 1  # an update happened since: the two steps above are one behind
    _act(learner, "old", 0.3)
    learner.on_end("old")
    segments = learner.take_segments()
    assert [len(s.steps) for s in segments] == [1]
    assert learner.excluded["stale"] == 2


def test_a_step_the_coordinator_did_not_choose_cuts_the_segment(tmp_path):
    learner = OnlineLearner(_Policy(), _ppo(tmp_path), steps_per_update=1, max_policy_lag=1)
    _act(learner, "e", 0.1)
    _, _, _, v1 = _act(learner, "e", 0.2)
    learner.on_break("e", "application_action")
    assert learner.excluded == {"application_action": 1, "before_break": 1}
    (seg,) = learner.take_segments()
    assert len(seg.steps) == 1 and not seg.ended and seg.bootstrap == pytest.approx(v1)


def test_update_increments_version_and_equals_in_process_ppo(tmp_path):
    """Lock-step served episodes give the update in-process PPO computes from the same
    steps (one minibatch: the gradient does not depend on the samples' order)."""
    lengths, steps, n = (3, 5), 8, 2
    served = OnlineLearner(_Policy(1), _ppo(tmp_path / "s"), steps_per_update=1,
                           max_policy_lag=1)
    ref_policy = _Policy(1)
    ppo = _ppo(tmp_path / "r")
    rollout = Rollout({"x": np.zeros((n, 2), np.float32)}, steps, n)
    torch.manual_seed(5)
    t_in_ep, ep_id = [0] * n, [0] * n
    done_prev = torch.zeros(n)
    for t in range(steps):
        obs = {"x": np.stack([_obs(0.1 * t_in_ep[i] + 0.3 * i)["x"] for i in range(n)])}
        actor, _, logp, value = served.choose(obs)
        rollout.store_obs(t, obs)
        rollout.dones[t] = done_prev
        rollout.actions[t] = torch.as_tensor(actor)
        rollout.logprobs[t] = torch.as_tensor(logp, dtype=torch.float32)
        rollout.values[t] = torch.as_tensor(value, dtype=torch.float32)
        for i in range(n):
            key = f"{i}-{ep_id[i]}"
            served.on_act(key, {"x": obs["x"][i]}, actor[i], logp[i], value[i], 0.1 * actor[i])
            reward = float(actor[i] == 1) - 0.1 * actor[i]
            served.on_reward(key, float(actor[i] == 1))
            rollout.rewards[t, i] = reward
            t_in_ep[i] += 1
            done_prev[i] = float(t_in_ep[i] == lengths[i])
            if t_in_ep[i] == lengths[i]:
                served.on_end(key)
                t_in_ep[i], ep_id[i] = 0, ep_id[i] + 1
    obs = {"x": np.stack([_obs(0.1 * t_in_ep[i] + 0.3 * i)["x"] for i in range(n)])}
    _, _, _, value = served.choose(obs)
    for i in range(n):  # the pending steps: their values bootstrap the running episodes
        served.on_act(f"{i}-{ep_id[i]}", {"x": obs["x"][i]}, 0, -0.7, value[i], 0.0)
    adv, ret = compute_gae(rollout.rewards, rollout.values, rollout.dones,
                           torch.as_tensor(value, dtype=torch.float32), done_prev,
                           ppo.hp.gamma, ppo.hp.gae_lambda)
    ref_policy.model.load_state_dict(served.policy.model.state_dict())
    optimizer = torch.optim.Adam(ref_policy.model.parameters(), lr=0.01, eps=1e-5)
    ppo.update(ref_policy, optimizer, rollout, adv, ret)
    served.update()
    assert served.version == 1 and served.trained_steps == steps * n
    # both updates run on this machine from the same steps; only the order of the samples in
    # the (one) minibatch differs, so the float32 sums differ in the last bits (~1e-7 here, on
    # any CPU), while each Adam step moves every weight by about lr = 1e-2, so a wrong
    # advantage, log-prob or return shows far above 1e-6
    for a, b in zip(served.policy.model.state_dict().values(),
                    ref_policy.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [17, 9, 3])
def test_update_on_a_batch_that_does_not_divide_stays_finite(tmp_path, steps):
    """A served batch of any size: 17 steps in 8 minibatches used to leave a last minibatch
    of one row, whose normalised advantage (std of one value) was NaN, and so were the
    weights after the step. Now the minibatches are 8 near-equal parts (sizes 2 or 3)."""
    ppo = _ppo(tmp_path, num_minibatches=8)
    policy = _Policy()
    rollout = Rollout({"x": np.zeros((1, 2), np.float32)}, steps, 1)
    for t in range(steps):
        rollout.store_obs(t, {"x": np.array([[0.1 * t, -0.2 * t]], np.float32)})
    rollout.actions[:, 0] = torch.arange(steps) % 2
    rollout.logprobs[:] = -0.69
    advantages = torch.linspace(-1.0, 1.0, steps).reshape(steps, 1)
    stats = ppo.update(policy, ppo.make_optimizer(policy.model), rollout, advantages,
                       advantages + 0.5)
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert all(torch.isfinite(p).all() for p in policy.model.parameters())


def test_reward_scaler_one_env_in_floats_equals_the_array_form():
    """``scale_one`` is ``__call__`` for one env: the same doubles, step by step (and clipped)."""
    rng = np.random.default_rng(2)
    arrays, floats = RewardScaler(1, 0.9), RewardScaler(1, 0.9)
    ret = 0.0
    for t in range(50):
        reward, done = float(rng.normal() * 3 + (1e3 if t == 7 else 0.0)), t % 6 == 5
        want = float(arrays(np.array([reward]), np.array([done]))[0])
        got, ret = floats.scale_one(reward, ret, done)
        assert got == want and ret == float(arrays.ret[0])
    assert floats.state_dict() == arrays.state_dict()

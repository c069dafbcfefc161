"""PPO's collection: what the rollout holds after it, sampling, deferred reward scaling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fakes import FakeVecEnv, TinyMLP, action_reward
from rich.console import Console
from test_ppo import ppo_cfg

from duo_cli.algorithms.ppo import PPO
from duo_cli.algorithms.rollout import RewardScaler, Rollout
from duo_cli.policies.agent import AgentPolicy
from duo_cli.policies.base import sample_actions
from duo_cli.rundir import RunContext

NUM_ACTIONS = 3
REWARDS = [0.0, 1.0, 0.25]


def _collect(tmp_path, scaler=None, steps: int = 6):
    """One collection of ``steps`` steps of 2 envs (episodes of 2 and 3 steps)."""
    env = FakeVecEnv(2, NUM_ACTIONS, ep_lengths=[2, 3], reward_fn=action_reward(REWARDS),
                     obs_shape=(2, 1, 1))
    torch.manual_seed(0)
    policy = AgentPolicy(TinyMLP(obs_dim=2, num_actions=NUM_ACTIONS))
    ctx = RunContext(run_dir=tmp_path, seed=0, console=Console(file=io.StringIO()),
                     progress=False)
    algo = PPO(ppo_cfg(num_steps=steps), ctx)
    obs, _ = env.reset(seed=0)
    rollout = Rollout(obs, steps, 2)
    out = algo.collect_rollout(policy, env, rollout, obs, torch.tensor([1.0, 1.0]), scaler)
    return policy, rollout, out


def test_rollout_holds_what_the_policy_saw_and_did(tmp_path):
    policy, rollout, (next_obs, next_done, returns, lengths) = _collect(tmp_path)
    obs = rollout.obs.reshape(6, 2, -1)
    # FakeVecEnv's frames hold the step inside the episode: 2- and 3-step episodes
    np.testing.assert_array_equal(obs[:, 0, 0].numpy(), [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(obs[:, 1, 0].numpy(), [0, 1, 2, 0, 1, 2])
    # dones[t]: obs t starts an episode (the first one too: next_done came in as 1)
    np.testing.assert_array_equal(rollout.dones.numpy(),
                                  [[1, 1], [0, 0], [1, 0], [0, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(next_done.numpy(), [1, 1])
    np.testing.assert_array_equal(rollout.rewards.numpy(),
                                  np.asarray(REWARDS, np.float32)[rollout.actions.numpy()])
    # the policy again on all 12 rows at once: another batch size than the collection's 2
    # may round the last bits differently (BLAS blocking, Intel or AMD), well inside
    # assert_close's float32 tolerance (rtol 1.3e-6, atol 1e-5); a wrong row or action
    # moves a log-probability by far more
    with torch.no_grad():
        out = policy.forward(rollout.obs.reshape(12, 2, 1, 1))
    logp = out.logits.log_softmax(-1).gather(-1, rollout.actions.reshape(12, 1))[:, 0]
    torch.testing.assert_close(rollout.logprobs.reshape(-1), logp)
    torch.testing.assert_close(rollout.values.reshape(-1), out.value)
    assert sorted(lengths) == [2, 2, 2, 3, 3]
    assert len(returns) == 5


def test_deferred_scaling_is_the_per_step_scaler(tmp_path):
    """Scaling after the rollout (``scale_steps``) gives what scaling each step did."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(7, 3)).astype(np.float32) * 4
    dones = (rng.random((7, 3)) < 0.3).astype(np.float32)
    step_by_step = RewardScaler(3, gamma=0.9)
    expected = np.stack([step_by_step(r, d.astype(bool)) for r, d in zip(rewards, dones, strict=True)])
    deferred = RewardScaler(3, gamma=0.9)
    scaled = rewards.copy()
    deferred.scale_steps(scaled, dones)
    # exact: the same float64 numpy operations in the same order, on any CPU
    np.testing.assert_array_equal(scaled, expected.astype(np.float32))
    assert deferred.state_dict() == step_by_step.state_dict()


def test_collection_scales_rewards_as_the_scaler_does(tmp_path):
    _, raw, (_, next_done, _, _) = _collect(tmp_path / "raw")
    scaler = RewardScaler(2, gamma=0.9)
    _, scaled, _ = _collect(tmp_path / "scaled", scaler)
    expected = RewardScaler(2, gamma=0.9)
    ends = np.vstack([raw.dones.numpy()[1:], next_done.numpy()[None]])  # steps that end one
    want = [expected(r, e.astype(bool))
            for r, e in zip(raw.rewards.numpy(), ends, strict=True)]
    # the same operations as the scaler's; rtol 1e-6 only for the float32 storage
    np.testing.assert_allclose(scaled.rewards.numpy(), np.stack(want), rtol=1e-6)
    assert scaler.state_dict() == pytest.approx(expected.state_dict())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_actions_draws_what_multinomial_draws(temperature):
    """Gumbel-max on the logits: the same actions ``torch.multinomial`` of the softmax
    draws from the same generator state (it divides by such exponential noise)."""
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    ours = torch.stack([sample_actions(logits, temperature) for _ in range(200)])
    torch.manual_seed(7)
    probs = torch.softmax(logits / temperature, -1)
    theirs = torch.stack([torch.multinomial(probs, 1)[:, 0] for _ in range(200)])
    # Equal in exact arithmetic (argmax of p/E against argmax of logits - log E); float
    # rounding, which differs between CPUs' exp/log kernels, can flip a near-tie, about
    # 1e-7 of draws (all 64,000 agree here). Another sampler, or the same noise used any
    # other way, agrees on about a third of them.
    assert (ours != theirs).float().mean().item() <= 1e-3


def test_sample_actions_greedy_at_temperature_zero():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.0]])
    assert sample_actions(logits, 0.0).tolist() == [1, 0]

"""The PPO coordinator on fake coordination envs: it learns to ask when the novice is
useless and to stay away from an expert that costs more than it brings, keeps its best
checkpoint, and refuses features it cannot have."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fakes import FakeCoordEnv
from rich.console import Console

from duo_cli.algorithms.ppo import PPO
from duo_cli.checkpoint import load_checkpoint
from duo_cli.evaluation.evaluator import Evaluator
from duo_cli.policies.coord_ppo import CoordPPOPolicy
from duo_cli.rundir import RunContext

EXPERT = FakeCoordEnv.EXPERT


def make_ctx(run_dir) -> RunContext:
    return RunContext(run_dir=run_dir, seed=0, console=Console(file=io.StringIO(), width=150),
                      progress=False)


def ppo_cfg(**overrides) -> dict:
    cfg = {
        "name": "ppo", "total_timesteps": 16 * 16 * 10, "num_steps": 16,
        "learning_rate": 3e-3, "anneal_lr": False, "gamma": 0.99, "gae_lambda": 0.95,
        "num_minibatches": 4, "update_epochs": 4, "norm_adv": True, "clip_coef": 0.2,
        "clip_vloss": True, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5,
        "target_kl": None, "chunk_size": 256, "normalize_reward": False, "eval_every": 0,
        "save_every": 1000, "snapshot_every": 0,
    }
    cfg.update(overrides)
    return cfg


PPO_POLICY = {"features": ["novice_hidden", "novice_dist"], "hidden_dim": 32, "bf16": False,
              "obs_model": None}


def expert_prob(policy: CoordPPOPolicy, seed: int = 123) -> torch.Tensor:
    obs, _ = FakeCoordEnv(num_envs=256).reset(seed=seed)
    with torch.no_grad():
        return torch.softmax(policy.forward(obs).logits.float(), -1)[:, EXPERT]


def train_coordinator(tmp_path, ep_length: int, **rewards) -> tuple[CoordPPOPolicy, dict]:
    env = FakeCoordEnv(num_envs=16, ep_length=ep_length, **rewards)
    policy = CoordPPOPolicy(PPO_POLICY, env)
    p0 = expert_prob(policy)
    assert 0.3 < p0.mean().item() < 0.7  # starts undecided
    result = PPO(ppo_cfg(), make_ctx(tmp_path)).train(policy, env, {}).summary
    assert result["global_step"] == 16 * 16 * 10
    return policy, result


@pytest.mark.parametrize("ep_length", [1, 4])
def test_ppo_coordinator_calls_expert_when_novice_is_useless(tmp_path, ep_length):
    policy, _ = train_coordinator(tmp_path, ep_length, novice_reward=0.0, expert_reward=1.0,
                                  expert_cost=0.2)
    p = expert_prob(policy)
    assert p.mean().item() > 0.9 and p.min().item() > 0.8, p
    env = FakeCoordEnv(num_envs=8, ep_length=ep_length, novice_reward=0.0, expert_reward=1.0,
                       expert_cost=0.2)
    res = Evaluator(env, num_episodes=16, seed=0).evaluate(policy)
    assert res["expert_frac"] > 0.9
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["episode_return"] > 0.7 * ep_length


def test_ppo_coordinator_avoids_an_expert_that_costs_more_than_it_brings(tmp_path):
    policy, _ = train_coordinator(tmp_path, 1, novice_reward=0.9, expert_reward=1.0,
                                  expert_cost=0.5)
    p = expert_prob(policy)
    assert p.mean().item() < 0.1 and p.max().item() < 0.2, p


def test_ppo_coordinator_saves_best_and_reloads(tmp_path):
    env = FakeCoordEnv(num_envs=16, ep_length=1, novice_reward=0.0, expert_reward=1.0)
    policy = CoordPPOPolicy(PPO_POLICY, env)
    ev = Evaluator(FakeCoordEnv(num_envs=4, ep_length=1, expert_reward=1.0), 8, seed=0)
    cfg = ppo_cfg(total_timesteps=16 * 16 * 3, eval_every=1)
    result = PPO(cfg, make_ctx(tmp_path)).train(policy, env, {"val_sim": ev}).summary
    assert set(result["best"]) == {"val_sim"}
    ckpt = load_checkpoint(tmp_path / "best_val_sim.pt")
    assert ckpt["kind"] == "coord"
    assert ckpt["config"]["policy"]["features"] == PPO_POLICY["features"]
    fresh = CoordPPOPolicy(ckpt["config"]["policy"], env)
    fresh.set_params(ckpt["state_dict"])
    assert ev.evaluate(fresh)["reward_mean"] == pytest.approx(result["best"]["val_sim"])


def test_coord_ppo_feature_validation():
    env = FakeCoordEnv(num_envs=2)
    with pytest.raises(ValueError, match="novice_hidden"):
        CoordPPOPolicy({**PPO_POLICY, "features": ["no_such_feature"]}, env)
    with pytest.raises(ValueError, match="open_expert"):
        CoordPPOPolicy({**PPO_POLICY, "features": ["expert_hidden"]}, env)

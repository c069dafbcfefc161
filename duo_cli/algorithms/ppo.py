"""Proximal Policy Optimisation (clipped objective, GAE), for agents and coordinators.

One iteration reads top to bottom: :meth:`PPO.collect_rollout` plays ``num_steps``
steps, :meth:`PPO.compute_advantages` runs GAE, :meth:`PPO.update` takes the clipped
gradient steps; :meth:`PPO.train` adds evaluation, best checkpoints and logging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from duo_cli.algorithms.base import Algorithm, AlgorithmResult, BestKeeper
from duo_cli.algorithms.rollout import RewardScaler, Rollout, compute_gae, to_device
from duo_cli.checkpoint import CheckpointError, load_checkpoint, save_policy
from duo_cli.errors import ConfigError, first_line
from duo_cli.models.base import weights_fixed
from duo_cli.models.rows import memoised
from duo_cli.policies.base import sample_actions
from duo_cli.rundir import RunContext
from duo_cli.settings import setting
from duo_cli.tables import metrics_progress, print_eval_table

logger = logging.getLogger(__name__)

#: the loss statistics :meth:`PPO.update` returns (means over its gradient steps)
STATS = ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")


@dataclass(frozen=True)
class PPOSettings:
    """PPO's hyper-parameters (``conf/algorithm/base/ppo.yaml`` gives their values)."""

    total_timesteps: int = setting(low=1, doc="env steps to train for")
    num_steps: int = setting(low=1, doc="rollout length per env")
    learning_rate: float = setting(low=0, doc="Adam's learning rate")
    anneal_lr: bool = setting(doc="decay the learning rate linearly to 0")
    gamma: float = setting(low=0, high=1, doc="discount")
    gae_lambda: float = setting(low=0, high=1, doc="GAE's lambda")
    num_minibatches: int = setting(low=1, doc="minibatches per epoch")
    update_epochs: int = setting(low=1, doc="passes over each rollout")
    norm_adv: bool = setting(doc="normalise advantages per minibatch")
    clip_coef: float = setting(low=0, low_open=True, doc="ratio (and value) clipping")
    clip_vloss: bool = setting(doc="clip the value loss")
    ent_coef: float = setting(low=0, doc="entropy bonus")
    vf_coef: float = setting(low=0, doc="value loss weight")
    max_grad_norm: float = setting(low=0, low_open=True, doc="gradient norm clip")
    target_kl: float | None = setting(low=0, low_open=True, doc="stop an update past this KL")
    chunk_size: int | None = setting(low=1, doc="samples per forward/backward (accumulated)")
    normalize_reward: bool = setting(doc="divide rewards by a running return std")
    eval_every: int = setting(low=0, doc="evaluate every N iterations (0 = never)")
    save_every: int = setting(low=1, doc="save last.pt every N iterations")
    snapshot_every: int = setting(low=0, doc="keep step_<N>.pt every N iterations (0 = never)")


@dataclass(frozen=True)
class AgentPPOSettings(PPOSettings):
    """PPO for agents: also an agent checkpoint to start from."""

    init_from: str | None = setting(doc="an agent checkpoint whose weights start the run")


class PPO(Algorithm):
    """PPO with value clipping, advantage normalisation, entropy bonus and grad clipping."""

    learns = True
    shares_rollouts = False

    Settings = PPOSettings

    @classmethod
    def check_settings(cls, settings: PPOSettings, num_envs: int) -> None:
        batch = int(num_envs) * settings.num_steps
        if settings.num_minibatches > batch:
            raise ConfigError(
                f"bad value for algorithm.num_minibatches: {settings.num_minibatches}; must be "
                f"<= env.num_envs * algorithm.num_steps = {batch}"
            )

    def __init__(self, cfg: Mapping[str, Any], ctx: RunContext):
        super().__init__(cfg, ctx)
        self.hp = self.settings

    def make_optimizer(self, model: nn.Module) -> torch.optim.Adam:
        """Adam over ``model``'s parameters at this run's learning rate (training and the
        serve learner both take theirs here): the fused kernel where the parameters'
        device has one (CPU and CUDA do). On the coordinator's net its step takes 0.3 ms
        against 2.7 ms for the per-tensor loop, one CPU thread: a fifth of the update once
        the net runs on distinct rows only.
        """
        params = list(model.parameters())
        try:
            return torch.optim.Adam(params, lr=self.hp.learning_rate, eps=1e-5, fused=True)
        except RuntimeError:  # a device without fused Adam kernels
            return torch.optim.Adam(params, lr=self.hp.learning_rate, eps=1e-5)

    # -- one iteration ------------------------------------------------------------------

    def collect_rollout(self, policy: Any, env: Any, rollout: Rollout, next_obs: Any,
                        next_done: torch.Tensor, scaler: RewardScaler | None):
        """Play ``num_steps`` steps into ``rollout``; returns the state after it and the
        finished episodes' returns and lengths.

        Per step: one copy of the observation into the rollout on the training device (the
        policy's forward reads it there), the forward, the action sampled
        (:func:`~duo_cli.policies.base.sample_actions`) and one copy of it back to the host.
        Everything else waits for the rollout's end: the log-probabilities (from the stored
        logits), the reward scaling (the same sequence of running statistics) and one copy
        each of the rewards and ends to the device. In the loop each operation costs 2-5x
        what it costs alone, as the env and the nets take turns with the caches. With the
        same seed, training is bit for bit what it was when all of it ran per step (commit
        495adde; README, "The limit on the very iterations it bounds").
        """
        ep_returns: list[float] = []
        ep_lengths: list[int] = []
        policy.eval()
        forward = memoised(policy.forward, getattr(policy, "model", None))
        values, actions = rollout.values, rollout.actions
        logits = None
        # ends[t] marks that obs[t] starts an episode; ends[num_steps]: the obs after it
        rewards, ends = rollout.host_rewards, rollout.host_ends
        ends[0] = next_done.cpu().numpy()
        # the weights stay fixed for the whole rollout: a bf16 trunk casts them once
        with weights_fixed(rollout.device), torch.no_grad():
            for step in range(rollout.num_steps):
                rollout.store_obs(step, next_obs)
                out = forward(rollout.obs_at(step))
                if logits is None:
                    logits = rollout.logits_buffer(out.logits.shape[-1])
                logits[step] = out.logits
                values[step] = out.value
                actions[step] = sample_actions(logits[step], 1.0)
                next_obs, reward, terminated, truncated, info = env.step(
                    actions[step].cpu().numpy())
                done = np.logical_or(terminated, truncated)
                rewards[step], ends[step + 1] = reward, done
                policy.reset(done)
                if "_episode" in info:
                    mask = info["_episode"]
                    ep_returns.extend(info["episode"]["r"][mask].tolist())
                    ep_lengths.extend(info["episode"]["l"][mask].tolist())
        if scaler is not None:
            scaler.scale_steps(rewards, ends[1:])
        next_done = rollout.take_host_steps()
        rollout.logprobs.copy_(logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0])
        return next_obs, next_done, ep_returns, ep_lengths

    def compute_advantages(self, policy: Any, rollout: Rollout, next_obs: Any,
                           next_done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and returns, bootstrapped from the value after the rollout."""
        with torch.no_grad():
            next_value = policy.forward(to_device(next_obs, rollout.device)).value.float()
        return compute_gae(rollout.rewards, rollout.values, rollout.dones, next_value,
                           next_done, self.hp.gamma, self.hp.gae_lambda)

    def update(self, policy: Any, optimizer: torch.optim.Optimizer, rollout: Rollout,
               advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """``update_epochs`` passes of clipped minibatch steps; the mean losses per step.

        The loss statistics stay on the device and reach the host once, at the end (with
        ``target_kl`` set, each minibatch's KL is read to decide whether to stop).
        """
        hp = self.hp
        batch_size = rollout.num_steps * rollout.num_envs
        batch = {**rollout.flat(), "advantages": advantages.reshape(-1),
                 "returns": returns.reshape(-1)}
        stats = torch.zeros(len(STATS), device=rollout.device)
        n_updates = 0
        policy.train()
        for _epoch in range(hp.update_epochs):
            perm = torch.randperm(batch_size).to(rollout.device)
            # num_minibatches parts as equal as they come: a batch that does not divide (the
            # serve learner's) leaves no minibatch of a row or two, whose advantages have no
            # std (a one-row minibatch made them NaN, and the weights with them)
            for mb in torch.tensor_split(perm, min(hp.num_minibatches, batch_size)):
                mb_adv = batch["advantages"][mb]
                if hp.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                optimizer.zero_grad(set_to_none=True)
                mb_kl = self._minibatch_backward(policy, rollout, batch, mb, mb_adv, stats)
                nn.utils.clip_grad_norm_(policy.model.parameters(), hp.max_grad_norm)
                optimizer.step()
                n_updates += 1
                if hp.target_kl is not None and float(mb_kl) > hp.target_kl:
                    return _means(stats, n_updates)
        return _means(stats, n_updates)

    def _minibatch_backward(self, policy: Any, rollout: Rollout, batch: dict[str, torch.Tensor],
                            mb: torch.Tensor, mb_adv: torch.Tensor,
                            stats: torch.Tensor) -> torch.Tensor:
        """Accumulate one minibatch's gradient in chunks of ``chunk_size``; its approx KL.

        ``stats`` (``STATS``, on the device) gains the minibatch's weighted statistics.
        """
        hp = self.hp
        chunk = min(hp.chunk_size or len(mb), len(mb))
        clip = hp.clip_coef
        mb_kl = torch.zeros((), device=stats.device)
        for c in range(0, len(mb), chunk):
            idx = mb[c:c + chunk]
            weight = len(idx) / len(mb)
            old_logprob, old_value = batch["logprobs"][idx], batch["values"][idx]
            ret = batch["returns"][idx]
            out = policy.forward(rollout.obs_rows(idx))
            logp_all = out.logits.float().log_softmax(-1)
            new_logprob = logp_all.gather(-1, batch["actions"][idx][:, None]).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
            new_value = out.value.float()
            logratio = new_logprob - old_logprob
            ratio = logratio.exp()
            adv = mb_adv[c:c + chunk]
            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
            if hp.clip_vloss:
                v_clipped = old_value + (new_value - old_value).clamp(-clip, clip)
                v_loss = 0.5 * torch.max((new_value - ret) ** 2, (v_clipped - ret) ** 2).mean()
            else:
                v_loss = 0.5 * ((new_value - ret) ** 2).mean()
            loss = pg_loss - hp.ent_coef * entropy + hp.vf_coef * v_loss
            (loss * weight).backward()
            with torch.no_grad():
                kl = ((ratio - 1) - logratio).mean()
                clipfrac = ((ratio - 1.0).abs() > clip).float().mean()
                # in STATS' order
                stats += torch.stack([pg_loss, v_loss, entropy, kl, clipfrac]) * weight
                mb_kl += kl * weight
        return mb_kl

    # -- the loop -----------------------------------------------------------------------

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> AlgorithmResult:
        hp, ctx = self.hp, self.ctx
        num_envs = env.num_envs
        batch_size = num_envs * hp.num_steps
        num_iterations = max(1, hp.total_timesteps // batch_size)
        optimizer = self.make_optimizer(policy.model)
        scaler = RewardScaler(num_envs, hp.gamma) if hp.normalize_reward else None
        state = {"iteration": 0, "global_step": 0, "best": {}}
        if ctx.resume_checkpoint is not None:
            self._resume(policy, optimizer, scaler, state)
        keeper = BestKeeper(ctx.run_dir, ctx.metadata)
        keeper.restore(list(state["best"]), map_location=ctx.device)

        next_obs, _ = env.reset(seed=ctx.seed + state["global_step"])
        policy.reset(np.ones(num_envs, dtype=bool))
        rollout = Rollout(next_obs, hp.num_steps, num_envs, ctx.device)
        next_done = torch.zeros(num_envs, device=ctx.device)
        results: dict[str, Any] = {}
        with metrics_progress(ctx.console, hp.total_timesteps, enabled=ctx.progress) as progress:
            progress.advance_to(state["global_step"])
            for iteration in range(state["iteration"], num_iterations):
                t_start = time.perf_counter()
                if hp.anneal_lr:
                    lr = hp.learning_rate * (1.0 - iteration / num_iterations)
                    optimizer.param_groups[0]["lr"] = lr
                next_obs, next_done, ep_returns, ep_lengths = self.collect_rollout(
                    policy, env, rollout, next_obs, next_done, scaler)
                rollout_time = time.perf_counter() - t_start
                advantages, returns = self.compute_advantages(policy, rollout, next_obs, next_done)
                metrics = self.update(policy, optimizer, rollout, advantages, returns)

                state["iteration"] = iteration + 1
                state["global_step"] += batch_size
                elapsed = time.perf_counter() - t_start
                metrics.update(
                    iteration=iteration + 1,
                    episode_return=float(np.mean(ep_returns)) if ep_returns else float("nan"),
                    episode_length=float(np.mean(ep_lengths)) if ep_lengths else float("nan"),
                    episodes=len(ep_returns),
                    learning_rate=optimizer.param_groups[0]["lr"],
                    sps=batch_size / elapsed,
                    rollout_sps=batch_size / rollout_time,
                )
                last_iter = iteration + 1 == num_iterations
                due = hp.eval_every and (iteration + 1) % hp.eval_every == 0
                if evaluators and (due or last_iter):
                    progress.pause()
                    results = self._evaluate(policy, evaluators, keeper, state, metrics)
                    progress.resume()
                ctx.log_metrics(state["global_step"], metrics)
                progress.update(state["global_step"], metrics)
                if hp.snapshot_every and (iteration + 1) % hp.snapshot_every == 0:
                    self._save(policy, f"step_{state['global_step']}.pt", state)
                if (iteration + 1) % hp.save_every == 0 or last_iter:
                    self._save(policy, "last.pt", state, optimizer, scaler)
        summary = {"global_step": state["global_step"], "best": state["best"], "eval": results}
        return AlgorithmResult(best=keeper.best, summary=summary)

    def _evaluate(self, policy: Any, evaluators: Mapping[str, Any], keeper: BestKeeper,
                  state: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        """Score ``policy`` on every split; keep it where it is the best so far."""
        step = state["global_step"]
        results = {split: ev.evaluate(policy) for split, ev in evaluators.items()}
        for split, res in results.items():
            metrics[f"eval/{split}/reward_mean"] = res["reward_mean"]
            metrics[f"eval/{split}/reward_ci95"] = res["reward_ci95"]
            if "expert_frac" in res:  # coordinators: how often the expert was asked
                metrics[f"eval/{split}/expert_frac"] = res["expert_frac"]
            keeper.offer(split, res, policy, {"global_step": step}, global_step=step)
        state["best"] = keeper.scores()
        print_eval_table(self.ctx.console, results, title=f"evaluation at step {step:,}",
                         best=state["best"])
        return results

    def _save(self, policy: Any, name: str, state: dict[str, Any], optimizer=None,
              scaler: RewardScaler | None = None) -> None:
        """A checkpoint in the run dir; with ``optimizer``, the state to resume from."""
        meta = {**self.ctx.metadata, "global_step": state["global_step"]}
        extra = {}
        if optimizer is not None:
            extra["train_state"] = {
                "optimizer": optimizer.state_dict(),
                "reward_scaler": scaler.state_dict() if scaler else {},
                "torch_rng": torch.get_rng_state(),
                "iteration": state["iteration"],
                "global_step": state["global_step"],
                "best": state["best"],
            }
        save_policy(self.ctx.run_dir / name, policy, meta, **extra)

    def _resume(self, policy: Any, optimizer: torch.optim.Optimizer,
                scaler: RewardScaler | None, state: dict[str, Any]) -> None:
        """Weights, optimizer, reward scaler, RNG and counters from ``run_dir/last.pt``."""
        ctx = self.ctx
        last_path = ctx.resume_checkpoint
        ckpt = load_checkpoint(last_path, map_location=ctx.device)
        try:
            policy.set_params(ckpt["state_dict"])
            train_state = ckpt["train_state"]
            optimizer.load_state_dict(train_state["optimizer"])
            if scaler is not None and train_state.get("reward_scaler"):
                scaler.load_state_dict(train_state["reward_scaler"])
            torch.set_rng_state(train_state["torch_rng"])
            state.update(iteration=int(train_state["iteration"]),
                         global_step=int(train_state["global_step"]),
                         best=dict(train_state["best"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot resume from {last_path}: it does not fit this run ({first_line(exc)})"
            ) from None
        ctx.trim_metrics(state["global_step"])  # rows logged after last.pt was saved
        ctx.console.print(f"resumed from {last_path} at step {state['global_step']:,} "
                          f"(iteration {state['iteration']})")


def _means(stats: torch.Tensor, n_updates: int) -> dict[str, float]:
    """``STATS`` summed over ``n_updates`` gradient steps -> their means (one host sync)."""
    return dict(zip(STATS, (stats / max(n_updates, 1)).tolist(), strict=True))


class AgentPPO(PPO):
    """PPO for agents (``duo train --type agent``): may start from an agent checkpoint."""

    Settings = AgentPPOSettings

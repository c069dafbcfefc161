"""Proximal Policy Optimisation (clipped objective, GAE), for agents and coordinators."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from duo_cli.algorithms.base import Algorithm
from duo_cli.checkpoint import CheckpointError, load_checkpoint, save_policy
from duo_cli.run import RunContext
from duo_cli.tables import metrics_progress, print_eval_table

logger = logging.getLogger(__name__)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a rollout of shape ``(T, N)``.

    ``dones[t]`` marks that ``obs[t]`` starts a new episode; ``next_value`` is
    the value of the state after the rollout and bootstraps the last step
    unless ``next_done`` says that state starts a new episode.
    Returns ``(advantages, returns)``.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        if t == steps - 1:
            nonterminal = 1.0 - next_done
            next_values = next_value
        else:
            nonterminal = 1.0 - dones[t + 1]
            next_values = values[t + 1]
        delta = rewards[t] + gamma * next_values * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        advantages[t] = last
    return advantages, advantages + values


class RewardScaler:
    """Divides rewards by a running std of the discounted return (as in gym's NormalizeReward)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.ret = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + reward
        self._update(self.ret)
        self.ret[done] = 0.0
        scaled = reward / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip)

    def _update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = x.mean(), x.var(), x.size
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": float(self.mean), "var": float(self.var), "count": float(self.count)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def _alloc_obs(obs: Any, steps: int) -> Any:
    if isinstance(obs, Mapping):
        return {k: _alloc_obs(v, steps) for k, v in obs.items()}
    arr = torch.as_tensor(obs)
    return torch.zeros((steps, *arr.shape), dtype=arr.dtype)


def _store_obs(buf: Any, t: int, obs: Any) -> None:
    if isinstance(buf, dict):
        for k, v in buf.items():
            _store_obs(v, t, obs[k])
    else:
        buf[t].copy_(torch.as_tensor(obs))


def _to_tensor(obs: Any) -> Any:
    if isinstance(obs, Mapping):
        return {k: _to_tensor(v) for k, v in obs.items()}
    return torch.as_tensor(obs)


def _flat_index(buf: Any, idx: torch.Tensor) -> Any:
    if isinstance(buf, dict):
        return {k: _flat_index(v, idx) for k, v in buf.items()}
    # index_select copies whole rows: ~6x faster than advanced indexing for frames
    return torch.index_select(buf.reshape(-1, *buf.shape[2:]), 0, idx)


class PPO(Algorithm):
    """PPO with value clipping, advantage normalisation, entropy bonus and grad clipping.

    Config keys (see ``conf/algorithm/ppo.yaml``): ``total_timesteps``,
    ``num_steps``, ``learning_rate``, ``anneal_lr``, ``gamma``, ``gae_lambda``,
    ``num_minibatches``, ``update_epochs``, ``norm_adv``, ``clip_coef``,
    ``clip_vloss``, ``ent_coef``, ``vf_coef``, ``max_grad_norm``, ``target_kl``,
    ``chunk_size`` (gradient accumulation chunk), ``normalize_reward``,
    ``eval_every``, ``save_every`` (iterations).
    """

    def __init__(self, cfg: Mapping[str, Any], ctx: RunContext):
        super().__init__(cfg, ctx)

    @staticmethod
    def validate_config(cfg: Mapping[str, Any], num_envs: int = 1) -> None:
        """Refuse bad PPO settings with one line before a rollout is spent (``ConfigError``)."""
        from duo_cli.config import ConfigError, check_bool, check_number

        w = "algorithm."
        for key in ("total_timesteps", "num_steps", "num_minibatches", "update_epochs"):
            check_number(cfg, key, integer=True, low=1, where=w)
        for key in ("eval_every", "save_every", "snapshot_every"):
            check_number(cfg, key, integer=True, low=0, nullable=True, where=w)
        check_number(cfg, "chunk_size", integer=True, low=1, nullable=True, where=w)
        check_number(cfg, "learning_rate", low=0, where=w)
        check_number(cfg, "gamma", low=0, high=1, where=w)
        check_number(cfg, "gae_lambda", low=0, high=1, where=w)
        for key in ("clip_coef", "max_grad_norm"):
            check_number(cfg, key, low=0, low_open=True, where=w)
        for key in ("ent_coef", "vf_coef"):
            check_number(cfg, key, low=0, where=w)
        check_number(cfg, "target_kl", low=0, low_open=True, nullable=True, where=w)
        for key in ("anneal_lr", "norm_adv", "clip_vloss", "normalize_reward"):
            check_bool(cfg, key, where=w)
        batch = int(num_envs) * int(cfg["num_steps"])
        if int(cfg["num_minibatches"]) > batch:
            raise ConfigError(
                f"bad value for algorithm.num_minibatches: {cfg['num_minibatches']}; must be <= "
                f"env.num_envs * algorithm.num_steps = {batch}"
            )
        init_from = cfg.get("init_from")
        if init_from is not None and (not isinstance(init_from, str) or not init_from):
            raise ConfigError(f"bad value for algorithm.init_from: {init_from!r}; expected a path")

    def train(self, policy: Any, env: Any, evaluators: Mapping[str, Any]) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        device = ctx.device
        num_envs = env.num_envs
        num_steps = int(cfg["num_steps"])
        batch_size = num_envs * num_steps
        num_minibatches = int(cfg["num_minibatches"])
        minibatch_size = batch_size // num_minibatches
        chunk = min(int(cfg.get("chunk_size") or minibatch_size), minibatch_size)
        total_timesteps = int(cfg["total_timesteps"])
        num_iterations = max(1, total_timesteps // batch_size)
        gamma, lam = float(cfg["gamma"]), float(cfg["gae_lambda"])
        clip_coef, ent_coef, vf_coef = (
            float(cfg["clip_coef"]), float(cfg["ent_coef"]), float(cfg["vf_coef"])
        )
        max_grad_norm = float(cfg["max_grad_norm"])
        update_epochs = int(cfg["update_epochs"])
        norm_adv, clip_vloss = bool(cfg["norm_adv"]), bool(cfg["clip_vloss"])
        target_kl = cfg.get("target_kl")
        lr = float(cfg["learning_rate"])
        anneal_lr = bool(cfg["anneal_lr"])
        eval_every = int(cfg.get("eval_every") or 0)
        save_every = int(cfg.get("save_every") or 1)
        snapshot_every = int(cfg.get("snapshot_every") or 0)

        model: nn.Module = policy.model
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
        scaler = RewardScaler(num_envs, gamma) if cfg.get("normalize_reward", True) else None
        state = {"iteration": 0, "global_step": 0, "best": {}}

        last_path = ctx.resume_checkpoint
        if last_path is not None:
            ckpt = load_checkpoint(last_path, map_location=device)
            try:
                policy.set_params(ckpt["state_dict"])
                train_state = ckpt["train_state"]
                optimizer.load_state_dict(train_state["optimizer"])
                if scaler is not None and train_state.get("reward_scaler"):
                    scaler.load_state_dict(train_state["reward_scaler"])
                torch.set_rng_state(train_state["torch_rng"])
                state.update(
                    iteration=int(train_state["iteration"]),
                    global_step=int(train_state["global_step"]),
                    best=dict(train_state["best"]),
                )
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise CheckpointError(
                    f"cannot resume from {last_path}: it does not fit this run ({reason})"
                ) from None
            ctx.trim_metrics(state["global_step"])  # rows logged after last.pt was saved
            ctx.console.print(
                f"resumed from {last_path} at step {state['global_step']:,} "
                f"(iteration {state['iteration']})"
            )

        def save(path_name: str, extra: dict[str, Any] | None = None, train_state=False) -> None:
            meta = {**ctx.metadata, "global_step": state["global_step"], **(extra or {})}
            payload_extra = {}
            if train_state:
                payload_extra["train_state"] = {
                    "optimizer": optimizer.state_dict(),
                    "reward_scaler": scaler.state_dict() if scaler else {},
                    "torch_rng": torch.get_rng_state(),
                    "iteration": state["iteration"],
                    "global_step": state["global_step"],
                    "best": state["best"],
                }
            save_policy(ctx.run_dir / path_name, policy, meta, **payload_extra)

        # rollout storage, allocated once
        next_obs_np, _ = env.reset(seed=ctx.seed + state["global_step"])
        policy.reset(np.ones(num_envs, dtype=bool))
        obs_buf = _alloc_obs(next_obs_np, num_steps)
        actions = torch.zeros((num_steps, num_envs), dtype=torch.long)
        logprobs = torch.zeros((num_steps, num_envs))
        rewards = torch.zeros((num_steps, num_envs))
        dones = torch.zeros((num_steps, num_envs))
        values = torch.zeros((num_steps, num_envs))
        next_done = torch.zeros(num_envs)

        start_iteration = state["iteration"]
        results: dict[str, Any] = {}
        with metrics_progress(ctx.console, total_timesteps, enabled=ctx.progress) as progress:
            progress.advance_to(state["global_step"])
            for iteration in range(start_iteration, num_iterations):
                t_start = time.perf_counter()
                if anneal_lr:
                    optimizer.param_groups[0]["lr"] = lr * (1.0 - iteration / num_iterations)
                policy.eval()
                ep_returns: list[float] = []
                ep_lengths: list[int] = []
                for step in range(num_steps):
                    _store_obs(obs_buf, step, next_obs_np)
                    dones[step] = next_done
                    with torch.no_grad():
                        out = policy.forward(_to_tensor(next_obs_np))
                        logp_all = out.logits.float().log_softmax(-1)
                        action = torch.multinomial(logp_all.exp(), 1)
                        logprobs[step] = logp_all.gather(-1, action).squeeze(-1).cpu()
                        values[step] = out.value.cpu()
                    actions[step] = action.squeeze(-1).cpu()
                    next_obs_np, reward, terminated, truncated, info = env.step(
                        actions[step].numpy()
                    )
                    done = np.logical_or(terminated, truncated)
                    if scaler is not None:
                        reward = scaler(reward, done)
                    rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
                    next_done = torch.as_tensor(done, dtype=torch.float32)
                    policy.reset(done)
                    if "_episode" in info:
                        mask = info["_episode"]
                        ep_returns.extend(info["episode"]["r"][mask].tolist())
                        ep_lengths.extend(info["episode"]["l"][mask].tolist())
                rollout_time = time.perf_counter() - t_start

                with torch.no_grad():
                    next_value = policy.forward(_to_tensor(next_obs_np)).value.cpu()
                advantages, returns = compute_gae(
                    rewards, values, dones, next_value, next_done, gamma, lam
                )

                # optimise
                policy.train()
                b_logprobs = logprobs.reshape(-1)
                b_actions = actions.reshape(-1)
                b_adv = advantages.reshape(-1)
                b_returns = returns.reshape(-1)
                b_values = values.reshape(-1)
                stats = {"pg_loss": 0.0, "v_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0,
                         "clipfrac": 0.0}
                n_updates = 0
                stop = False
                for _epoch in range(update_epochs):
                    perm = torch.randperm(batch_size)
                    for start in range(0, batch_size, minibatch_size):
                        mb = perm[start:start + minibatch_size]
                        mb_adv = b_adv[mb]
                        if norm_adv:
                            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                        optimizer.zero_grad(set_to_none=True)
                        mb_kl = 0.0
                        for c in range(0, len(mb), chunk):
                            idx = mb[c:c + chunk]
                            weight = len(idx) / len(mb)
                            out = policy.forward(_flat_index(obs_buf, idx))
                            logp_all = out.logits.float().log_softmax(-1)
                            new_logprob = logp_all.gather(
                                -1, b_actions[idx].to(device)[:, None]
                            ).squeeze(-1).cpu()
                            entropy = -(logp_all.exp() * logp_all).sum(-1).mean().cpu()
                            new_value = out.value.cpu()
                            logratio = new_logprob - b_logprobs[idx]
                            ratio = logratio.exp()
                            adv = mb_adv[c:c + chunk]
                            pg_loss = torch.max(
                                -adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)
                            ).mean()
                            if clip_vloss:
                                v_clipped = b_values[idx] + (new_value - b_values[idx]).clamp(
                                    -clip_coef, clip_coef
                                )
                                v_loss = 0.5 * torch.max(
                                    (new_value - b_returns[idx]) ** 2,
                                    (v_clipped - b_returns[idx]) ** 2,
                                ).mean()
                            else:
                                v_loss = 0.5 * ((new_value - b_returns[idx]) ** 2).mean()
                            loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
                            (loss * weight).backward()
                            with torch.no_grad():
                                kl = ((ratio - 1) - logratio).mean().item()
                                mb_kl += kl * weight
                                stats["approx_kl"] += kl * weight
                                stats["clipfrac"] += (
                                    ((ratio - 1.0).abs() > clip_coef).float().mean().item() * weight
                                )
                                stats["pg_loss"] += pg_loss.item() * weight
                                stats["v_loss"] += v_loss.item() * weight
                                stats["entropy"] += entropy.item() * weight
                        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                        optimizer.step()
                        n_updates += 1
                        if target_kl is not None and mb_kl > float(target_kl):
                            stop = True
                            break
                    if stop:
                        break

                state["iteration"] = iteration + 1
                state["global_step"] += batch_size
                elapsed = time.perf_counter() - t_start
                metrics = {k: v / max(n_updates, 1) for k, v in stats.items()}
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
                due = eval_every and (iteration + 1) % eval_every == 0
                if evaluators and (due or last_iter):
                    progress.pause()
                    results = {split: ev.evaluate(policy) for split, ev in evaluators.items()}
                    for split, res in results.items():
                        metrics[f"eval/{split}/reward_mean"] = res["reward_mean"]
                        metrics[f"eval/{split}/reward_ci95"] = res["reward_ci95"]
                        best = state["best"].get(split)
                        if best is None or res["reward_mean"] > best:
                            state["best"][split] = res["reward_mean"]
                            summary = {k: v for k, v in res.items() if not isinstance(v, list)}
                            save(f"best_{split}.pt", {
                                "eval": {split: summary}, "selected_on": split,
                                "selected": {"global_step": state["global_step"]},
                            })
                    print_eval_table(
                        ctx.console, results,
                        title=f"evaluation at step {state['global_step']:,}", best=state["best"],
                    )
                    progress.resume()
                ctx.log_metrics(state["global_step"], metrics)
                progress.update(state["global_step"], metrics)
                if snapshot_every and (iteration + 1) % snapshot_every == 0:
                    save(f"step_{state['global_step']}.pt")
                if (iteration + 1) % save_every == 0 or last_iter:
                    save("last.pt", train_state=True)
        return {"global_step": state["global_step"], "best": state["best"], "eval": results}

"""Online PPO from served episodes: the learner behind ``duo serve ... serve.learn=true``.

The server samples the coordinator's choice itself (:meth:`OnlineLearner.choose`: one
forward gives the choice, its behaviour log-probability and the value), and tells the
learner what happened per episode: an act (:meth:`~OnlineLearner.on_act`), rewards
(:meth:`~OnlineLearner.on_reward`), a step the coordinator did not choose
(:meth:`~OnlineLearner.on_break`) and the end (:meth:`~OnlineLearner.on_end`).  A step
is complete when its reward is final (the episode's next act or its end).  Once
``steps_per_update`` steps are complete, :meth:`~OnlineLearner.update` runs the same
:meth:`PPO.update <duo_cli.algorithms.ppo.PPO.update>` as ``duo train --type coord``:

* PPO's ratio uses the logged behaviour log-probability, never a recomputed one;
* a step chosen by weights more than ``max_policy_lag`` updates old is dropped (counted);
* an episode still running at an update is cut there and bootstrapped from the value of
  its pending step (the one whose reward is not final yet); the pending step stays for
  the next update;
* an ended episode does not bootstrap (truncation counts as an end, as in
  ``duo train``); a step the coordinator did not choose (the application's own action, an
  external expert without a probability) ends its segment: the coordinator step before it
  is dropped too, since its outcome is not the coordinator's (both counted), and the
  segment bootstraps from that dropped step's value.

Episodes started with ``training_enabled=false`` never reach the learner (the service
counts them).  Each update increments :attr:`OnlineLearner.version` by one.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from duo_cli.algorithms.rollout import RewardScaler, Rollout, compute_gae, to_device
from duo_cli.models.rows import memoised

logger = logging.getLogger(__name__)

#: why a served step was kept out of a PPO batch (the keys of :attr:`OnlineLearner.excluded`)
EXCLUDED = ("training_disabled", "application_action", "no_probability", "before_break",
            "stale", "abandoned", "interrupted")


@dataclass
class ServedStep:
    """One coordinator decision as the learner keeps it.

    :param obs: the coordinator's observation of the row (arrays without a batch axis).
    :param action: the coordinator's choice (0 novice, 1 expert).
    :param logprob: the behaviour log-probability of ``action`` (the weights that chose it).
    :param value: the value those weights gave the observation.
    :param version: the weights' version (:attr:`OnlineLearner.version` at the choice).
    :param reward: the coordinator's reward: the base rewards reported until the next
        decision minus the step's cost.
    """

    obs: dict[str, np.ndarray]
    action: int
    logprob: float
    value: float
    version: int
    reward: float = 0.0


@dataclass
class Segment:
    """Consecutive complete steps of one episode, and how the last one continues.

    :param steps: the steps, oldest first.
    :param ended: the episode ended after the last step (no bootstrap).
    :param bootstrap: the value of the state after the last step (used unless ``ended``).
    :param key: the episode's id.
    """

    steps: list[ServedStep]
    ended: bool
    bootstrap: float = 0.0
    key: str = ""


@dataclass
class _Running:
    steps: list[ServedStep] = field(default_factory=list)


class OnlineLearner:
    """PPO's update applied to served steps.

    :param policy: the coordinator being trained (a :class:`CoordPPOPolicy`).
    :param ppo: the :class:`~duo_cli.algorithms.ppo.PPO` whose settings and update apply.
    :param steps_per_update: complete steps that trigger an update.
    :param max_policy_lag: steps chosen by weights older than this many updates are dropped.
    :param device: where the coordinator trains.
    """

    def __init__(self, policy: Any, ppo: Any, steps_per_update: int, max_policy_lag: int,
                 device: Any = "cpu") -> None:
        self.policy, self.ppo = policy, ppo
        self.steps_per_update = int(steps_per_update)
        self.max_policy_lag = int(max_policy_lag)
        self.device = torch.device(device)
        self.optimizer = ppo.make_optimizer(policy.model)
        self.version = 0
        self.trained_steps = 0
        self.excluded: Counter[str] = Counter()
        self.last_stats: dict[str, float] = {}
        #: rewards divided by a running std of the discounted return (``normalize_reward``)
        self.scaler = RewardScaler(1, ppo.hp.gamma) if ppo.hp.normalize_reward else None
        self._returns: dict[str, float] = {}
        self._running: dict[str, _Running] = {}
        self._segments: list[Segment] = []
        self._complete = 0
        #: the coordinator's forward while its weights stay fixed: a new one after each update
        self._forward = self._fixed_forward()

    # -- acting ---------------------------------------------------------------------------
    def _fixed_forward(self) -> Any:
        """The coordinator's forward for as long as its weights stay as they are now:
        memoised per row where its inputs repeat (as in PPO's collection)."""
        return memoised(self.policy.forward, getattr(self.policy, "model", None))

    @torch.no_grad()
    def choose(self, coord_obs: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample the coordinator's choice per row, as PPO's collection does.

        :returns: ``(actor, p_expert, logprob, value)``: the choice, p(expert), the
            log-probability of the choice and the value (all from one forward).
        """
        self.policy.eval()
        out = self._forward(to_device(coord_obs, self.device))  # the memo: CPU only
        logp_all = out.logits.float().log_softmax(-1)
        action = torch.multinomial(logp_all.exp(), 1)
        logprob = logp_all.gather(-1, action).squeeze(-1)
        packed = torch.stack([action.squeeze(-1).float(), logp_all[:, 1].exp(), logprob,
                              out.value.float()], dim=1).cpu().numpy().astype(np.float64)
        return (packed[:, 0].astype(np.int64), packed[:, 1], packed[:, 2], packed[:, 3])

    # -- what the episodes report ---------------------------------------------------------
    def on_act(self, key: str, obs: dict[str, np.ndarray], action: int, logprob: float,
               value: float, cost: float) -> None:
        """A coordinator decision of episode ``key``: the previous step's reward is final."""
        run = self._running.setdefault(key, _Running())
        if run.steps:
            self._complete += 1
        run.steps.append(ServedStep({k: np.array(v) for k, v in obs.items()}, int(action),
                                    float(logprob), float(value), self.version, -float(cost)))

    def on_reward(self, key: str, reward: float) -> None:
        """Base reward reported for episode ``key``'s latest step."""
        run = self._running.get(key)
        if run is not None and run.steps:
            run.steps[-1].reward += float(reward)

    def on_break(self, key: str, reason: str) -> None:
        """A step of episode ``key`` the coordinator did not choose (``reason`` in ``EXCLUDED``).

        The pending coordinator step is dropped (its outcome is not the coordinator's) and
        the steps before it form a segment bootstrapped from its value.
        """
        self.excluded[reason] += 1
        run = self._running.pop(key, None)
        if run is None or not run.steps:
            return
        pending = run.steps.pop()
        self.excluded["before_break"] += 1
        if run.steps:
            self._segments.append(Segment(run.steps, False, pending.value, key))

    def on_end(self, key: str) -> None:
        """Episode ``key`` ended (terminated, truncated or abandoned): no bootstrap."""
        run = self._running.pop(key, None)
        if run is not None and run.steps:
            self._complete += 1
            self._segments.append(Segment(run.steps, True, 0.0, key))

    def exclude(self, reason: str, steps: int = 1) -> None:
        """Count ``steps`` served steps that never reach the learner (``reason`` in ``EXCLUDED``)."""
        self.excluded[reason] += int(steps)

    # -- learning -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Enough complete steps for an update."""
        return self._complete >= self.steps_per_update

    def take_segments(self) -> list[Segment]:
        """The complete steps as segments, oldest version first dropped past the lag.

        Running episodes are cut at their pending step (kept for the next update).
        """
        segments, self._segments = self._segments, []
        for key, run in self._running.items():
            if len(run.steps) > 1:
                done, pending = run.steps[:-1], run.steps[-1]
                segments.append(Segment(done, False, pending.value, key))
                run.steps = [pending]
        self._complete = 0
        oldest = self.version - self.max_policy_lag
        kept = []
        for seg in segments:
            fresh = [s for s in seg.steps if s.version >= oldest]
            self.excluded["stale"] += len(seg.steps) - len(fresh)
            if fresh:  # versions only grow along an episode: a prefix was dropped
                kept.append(Segment(fresh, seg.ended, seg.bootstrap, seg.key))
        return kept

    def update(self) -> dict[str, float]:
        """One PPO update on the complete steps; the version then increases by one."""
        return self.apply(self.take_segments())

    def apply(self, segments: list[Segment]) -> dict[str, float]:
        """PPO's update on ``segments`` (from :meth:`take_segments`); the version + 1.

        Nothing else of the learner is touched, so it may run in a worker thread while
        the episodes keep reporting to the learner from the event loop.
        """
        if not segments:
            return {}
        rollout, advantages, returns = self.batch(segments)
        self.last_stats = self.ppo.update(self.policy, self.optimizer, rollout, advantages,
                                          returns)
        self._forward = self._fixed_forward()
        self.version += 1
        self.trained_steps += rollout.num_steps
        logger.info("update %d on %d served steps", self.version, rollout.num_steps)
        return self.last_stats

    def batch(self, segments: list[Segment]
              ) -> tuple[Rollout, torch.Tensor, torch.Tensor]:
        """Segments as a one-column rollout with GAE advantages and returns per segment.

        The segments' GAE runs as one :func:`compute_gae` over their columns, each right
        aligned (padded before its first step), so that each ends at the last row, where
        its own bootstrap and end apply; the padding lies in the past of every real step,
        which GAE never reads.
        """
        steps = [s for seg in segments for s in seg.steps]
        dev = self.device
        obs = {k: torch.from_numpy(np.stack([s.obs[k] for s in steps]))[:, None]
               for k in steps[0].obs}
        rollout = Rollout({k: v[0] for k, v in obs.items()}, len(steps), 1, dev)
        rollout.store_obs(slice(None), obs)
        rewards = self._scaled_rewards(segments)
        cols = torch.tensor([[s.action, s.logprob, s.value, r] for s, r in zip(
            steps, rewards, strict=True)], dtype=torch.float64)
        rollout.actions[:, 0] = cols[:, 0].long().to(dev)
        rollout.logprobs[:, 0] = cols[:, 1].float().to(dev)
        rollout.values[:, 0] = cols[:, 2].float().to(dev)
        rollout.rewards[:, 0] = cols[:, 3].float().to(dev)
        lengths = [len(seg.steps) for seg in segments]
        longest = max(lengths)
        row = torch.cat([torch.arange(longest - n, longest) for n in lengths]).to(dev)
        col = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)]).to(dev)
        padded = torch.zeros(2, longest, len(segments), device=dev)
        padded[0, row, col] = rollout.rewards[:, 0]
        padded[1, row, col] = rollout.values[:, 0]
        ends = torch.tensor([[seg.bootstrap, float(seg.ended)] for seg in segments],
                            device=dev)
        adv, _ = compute_gae(padded[0], padded[1], torch.zeros_like(padded[0]), ends[:, 0],
                             ends[:, 1], self.ppo.hp.gamma, self.ppo.hp.gae_lambda)
        adv = adv[row, col][:, None]
        return rollout, adv, adv + rollout.values

    def _scaled_rewards(self, segments: list[Segment]) -> list[float]:
        """The steps' rewards, scaled like in-process PPO's when ``normalize_reward`` is on.

        Each episode's discounted return runs on across its segments (and updates).
        """
        out = []
        for seg in segments:
            for i, s in enumerate(seg.steps):
                if self.scaler is None:
                    out.append(s.reward)
                    continue
                done = seg.ended and i == len(seg.steps) - 1
                scaled, self._returns[seg.key] = self.scaler.scale_one(
                    s.reward, self._returns.get(seg.key, 0.0), done)
                out.append(scaled)
            if seg.ended:
                self._returns.pop(seg.key, None)
        return out

    # -- durable state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` keeps to resume learning (with the weights)."""
        return {"optimizer": self.optimizer.state_dict(), "model_version": self.version,
                "trained_steps": self.trained_steps, "excluded": dict(self.excluded),
                "reward_scaler": self.scaler.state_dict() if self.scaler else {},
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["model_version"])
        self.trained_steps = int(state["trained_steps"])
        self.excluded = Counter({k: int(v) for k, v in state.get("excluded", {}).items()})
        if self.scaler is not None and state.get("reward_scaler"):
            self.scaler.load_state_dict(state["reward_scaler"])
        torch.set_rng_state(state["torch_rng"])

"""What ``duo serve`` does per call, independent of HTTP: episodes, batching, the log, reaping."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from duo_cli.groups import ServeSettings
from duo_cli.serve import wire
from duo_cli.serve.batcher import MicroBatcher
from duo_cli.serve.episodes import (
    ACTING,
    ACTORS,
    APPLICATION,
    AWAITING_EXPERT,
    EXPERT,
    READY,
    Episode,
    EpisodeTable,
)
from duo_cli.serve.learning import save_learner
from duo_cli.serve.store import EpisodeLog

logger = logging.getLogger(__name__)


class Service:
    """Serves one coordinator (:class:`~duo_cli.serve.coordinator.ServedCoordinator`).

    :param coordinator: the loaded coordinator.
    :param log: where finished episodes go.
    :param limits: the ``serve`` settings: admission, time-out and batching limits.
    """

    def __init__(self, coordinator: Any, log: EpisodeLog, limits: ServeSettings):
        self.coord = coordinator
        self.log = log
        space = coordinator.observation_space
        log.open_observations(space.dtype, space.shape)
        self.limits = limits
        self.table = EpisodeTable(limits.max_concurrent)
        self.executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="duo-forward")
                         if limits.forward_thread else None)
        self.batcher = MicroBatcher(self._forward, limits.max_batch, limits.max_wait_ms / 1000,
                                    self.table.ready_count, self.executor)
        self.meta = {"checkpoint": str(coordinator.path), "model_version": coordinator.version,
                     "method": coordinator.method, "alpha": coordinator.alpha,
                     "beta": coordinator.beta, "bp": coordinator.bp,
                     "temperature": coordinator.temperature}
        self.counts = {"episodes_started": 0, "episodes_ended": 0, "episodes_truncated": 0,
                       "episodes_abandoned": 0, "episodes_interrupted": 0, "acts": 0,
                       "expert_steps": 0, "cost": 0.0, "rejected_429": 0}
        #: the latest acts' latencies (``/metrics``' quantiles)
        self.act_seconds: deque[float] = deque(maxlen=10_000)
        self._reaper: asyncio.Task | None = None
        self.started = time.time()
        #: the run dir (set by :func:`duo_cli.serve.server.build`): where learning saves
        self.run_dir = Path(log.path).parent
        self._learn_lock = asyncio.Lock()
        self.learn_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self) -> None:
        self.batcher.start()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def shutdown(self) -> None:
        """Answer queued acts, log every live episode as interrupted, close the log."""
        if self._reaper is not None:
            self._reaper.cancel()
        await self.batcher.stop()
        for ep in list(self.table.live.values()):
            self.log.append(self._close(ep, "interrupted", "server shutdown"))
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.log.close()

    async def _reap_forever(self) -> None:
        timeout = self.limits.episode_timeout_s
        interval = min(1.0, timeout / 4)
        while True:
            await asyncio.sleep(interval)
            for ep in self.table.idle(timeout):
                logger.info("episode %s abandoned after %.0f s without a call", ep.episode_id,
                            timeout)
                record = self._close(ep, "abandoned", f"client time-out: no call for {timeout:g} s")
                await asyncio.to_thread(self.log.append, record)

    def _close(self, ep: Episode, status: str, reason: str) -> dict[str, Any]:
        """Free the episode's state (in the event loop) and return its log record."""
        self.table.remove(ep, status)
        self.counts[f"episodes_{status}"] += 1
        learner = self.coord.learner
        if learner is not None and ep.training_enabled:
            if status in ("ended", "truncated"):
                learner.on_end(ep.episode_id)
            else:  # the episode did not end in the game: cut where it stopped
                learner.on_break(ep.episode_id, status)
        return ep.record(status, reason, self.meta)

    # -- calls ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        c = self.coord
        return {"status": "ok", **self.meta, "expert": "external" if self.limits.external_expert
                else "model", "active_episodes": len(self.table.live),
                "max_concurrent": self.limits.max_concurrent,
                "open_expert": c.open_expert, "num_actions": c.num_actions,
                "observation": {"shape": list(c.observation_space.shape),
                                "dtype": str(c.observation_space.dtype)},
                "uptime_s": time.time() - self.started, **self._learning()}

    def _learning(self) -> dict[str, Any]:
        """What ``/v1/health`` says about learning (nothing when it is off)."""
        learner = self.coord.learner
        if learner is None:
            return {"learning": False}
        return {"learning": True, "model_updates": learner.version,
                "trained_steps": learner.trained_steps, "learn_steps": learner.steps_per_update,
                "max_policy_lag": learner.max_policy_lag, "excluded": dict(learner.excluded),
                "learn_error": self.learn_error}

    def start_episode(self, body: dict[str, Any]) -> dict[str, Any]:
        wire.check_keys(body, ("episode_id", "training_enabled", "expert"), "start_episode")
        expert = wire.get_str(body, "expert", ("model", "external"))
        external = self.limits.external_expert if expert is None else expert == "external"
        try:
            ep = self.table.start(wire.get_episode_id(body),
                                  wire.get_bool(body, "training_enabled", True), external,
                                  self.coord.episode_policy())
        except wire.ApiError as exc:
            if exc.status == 429:
                self.counts["rejected_429"] += 1
            raise
        self.counts["episodes_started"] += 1
        return {"episode_id": ep.episode_id, "expert": "external" if external else "model"}

    async def act(self, episode_id: str, body: dict[str, Any]) -> dict[str, Any]:
        (out,) = await self._acts([(episode_id, body)])
        if isinstance(out, wire.ApiError):
            raise out
        return out

    async def _acts(self, calls: list[tuple[str, dict[str, Any]]]
                    ) -> list[dict[str, Any] | wire.ApiError]:
        """Episodes' acts answered by one batch (per call: the answer, or the refusal);
        then one PPO update if the learner has enough complete steps."""
        out: list[Any] = [None] * len(calls)
        pending = []
        for i, (episode_id, body) in enumerate(calls):
            try:
                ep, out[i] = self._open(episode_id, body, "act", ("observation", "request_id"),
                                        READY)
                if out[i] is None:
                    obs = wire.decode_observation(body.get("observation"),
                                                  self.coord.observation_space)
                    ep.state = ACTING
                    ep.touch()
                    pending.append((i, ep, obs, body))
            except wire.ApiError as exc:
                out[i] = exc
        if not pending:
            return out
        t0 = time.perf_counter()
        try:
            decisions = await self.batcher.submit_many(
                [(obs, ep.policy, ep.external_expert) for _, ep, obs, _ in pending])
        finally:
            for _, ep, _, _ in pending:
                ep.state = READY
                ep.touch()
        self.act_seconds.extend([time.perf_counter() - t0] * len(pending))
        for (i, ep, obs, body), decision in zip(pending, decisions, strict=True):
            if isinstance(decision, BaseException):
                raise decision
            out[i] = self._record_act(ep, obs, body, decision)
        learner = self.coord.learner
        if learner is not None and learner.ready:
            await self._learn()
        return out

    def _record_act(self, ep: Episode, obs: Any, body: dict[str, Any], decision: Any
                    ) -> dict[str, Any]:
        """Log one answered act (episode, counts, learner) and return its answer."""
        row = self.log.add_observation(obs)
        cost = ep.record_step(decision.actor, decision.action, decision.novice_action,
                              self.coord.expert_cost, self.coord.switch_cost,
                              decision.p_expert, decision.version, row)
        self.counts["acts"] += 1
        self.counts["expert_steps"] += decision.actor == EXPERT
        self.counts["cost"] += cost
        if decision.actor == EXPERT and decision.action is None:
            ep.state = AWAITING_EXPERT
        out = {"episode_id": ep.episode_id, "step": ep.length - 1, "actor": ACTORS[decision.actor],
               "action": decision.action, "novice_action": decision.novice_action, "cost": cost,
               "p_expert": decision.p_expert, "model_version": decision.version,
               "model_updates": decision.updates}
        ep.remember("act", body, out)
        learner = self.coord.learner
        if learner is not None:
            if not ep.training_enabled:
                learner.exclude("training_disabled")
            else:
                learner.on_act(ep.episode_id, decision.coord_obs, decision.actor,
                               decision.logprob, decision.value, cost)
        return out

    async def step(self, body: dict[str, Any]) -> dict[str, Any]:
        """Many episodes' calls in one request, answered per item (``{"error", "status"}``
        for a refused item: one bad item refuses only itself).

        An item names an ``episode_id`` and may carry, applied in this order: ``reward``
        (the base reward since the episode's last act), ``end`` (``"ended"`` or
        ``"truncated"``: the episode ends, no act), ``start`` (``true``: start the episode,
        with ``training_enabled`` and ``expert`` as in ``POST /v1/episodes``), and
        ``observation`` (act on it; the items' acts share forwards).  Ends and starts run
        before any act, in the items' order.
        """
        wire.check_keys(body, ("items",), "step")
        items = body.get("items")
        if not isinstance(items, list) or not 0 < len(items) <= 2 * self.limits.max_concurrent:
            raise wire.ApiError(422, f"field 'items' must be a list of 1 to "
                                     f"{2 * self.limits.max_concurrent} objects")
        out: list[Any] = [None] * len(items)
        acts = []
        for i, item in enumerate(items):
            try:
                out[i] = await self._step_prelude(item)
                if out[i] is None:
                    acts.append(i)
            except wire.ApiError as exc:
                out[i] = {"error": exc.message, "status": exc.status}
        results = await self._acts([(items[i]["episode_id"],
                                     {"observation": items[i]["observation"]}) for i in acts])
        for i, res in zip(acts, results, strict=True):
            out[i] = ({"error": res.message, "status": res.status}
                      if isinstance(res, wire.ApiError) else res)
        return {"results": out}

    async def _step_prelude(self, item: Any) -> dict[str, Any] | None:
        """An item's reward, end and start; its answer, or ``None`` when it acts next."""
        if not isinstance(item, dict):
            raise wire.ApiError(422, f"each item must be a JSON object, got {type(item).__name__}")
        wire.check_keys(item, ("episode_id", "reward", "end", "start", "training_enabled",
                               "expert", "observation"), "a step item")
        episode_id = item.get("episode_id")
        if not isinstance(episode_id, str):
            raise wire.ApiError(422, "each item needs an 'episode_id' string")
        if item.get("reward") is not None:
            self.log_returns(episode_id, {"reward": item["reward"]})
        end = wire.get_str(item, "end", ("ended", "truncated"))
        if end is not None:
            return await self.end(episode_id, {"truncated": end == "truncated"})
        started = None
        if item.get("start"):
            started = self.start_episode({k: item[k] for k in ("training_enabled", "expert")
                                          if k in item} | {"episode_id": episode_id})
        if item.get("observation") is None:
            if started is None:
                raise wire.ApiError(422, "a step item needs 'observation', 'end' or 'start'")
            return started
        return None

    async def _learn(self) -> None:
        """One PPO update on the complete served steps, serialised with the forwards (in the
        forward thread, or in the event loop); then ``last.pt`` and the new version."""
        learner = self.coord.learner
        async with self._learn_lock:
            if not learner.ready:
                return
            segments = learner.take_segments()
            steps = sum(len(seg.steps) for seg in segments)
            try:
                if self.executor is not None:
                    await asyncio.get_running_loop().run_in_executor(
                        self.executor, self._apply, segments, steps)
                else:
                    self._apply(segments, steps)
            except Exception as exc:
                self.learn_error = f"{type(exc).__name__}: {exc}"
                logger.exception("learning failed at update %d", learner.version + 1)
                raise

    def _apply(self, segments: list, steps: int) -> None:
        learner = self.coord.learner
        stats = learner.apply(segments)
        if not stats:
            return
        save_learner(learner, self.run_dir, stats, steps, self.coord.base_version)
        self.coord.updated()
        self.meta["model_version"] = self.coord.version
        logger.info("update %d on %d served steps: model_version %s", learner.version, steps,
                    self.coord.version)

    def _forward(self, items: list[tuple]) -> list[Any]:
        obs, policies, external = zip(*items, strict=True)
        return self.coord.decide(list(obs), list(policies), list(external))

    def log_action(self, episode_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The external expert's action (after an act chose it), or an off-policy action."""
        ep, replay = self._open(episode_id, body, "log_action",
                                ("observation", "action", "request_id"), READY, AWAITING_EXPERT)
        if replay is not None:
            return replay
        action = wire.get_action(body, self.coord.num_actions)
        obs = self._check_observation(body)
        ep.touch()
        if ep.state == AWAITING_EXPERT:
            ep.actions[-1] = action
            ep.state = READY
            out = {"episode_id": ep.episode_id, "step": ep.length - 1, "actor": "expert",
                   "action": action, "cost": ep.costs[-1]}
        else:  # no coordinator chose: logged without a probability
            row = None if obs is None else self.log.add_observation(obs)
            ep.record_step(APPLICATION, action, None, 0.0, 0.0, obs_row=row)
            if self.coord.learner is not None and ep.training_enabled:
                self.coord.learner.on_break(ep.episode_id, "application_action")
            out = {"episode_id": ep.episode_id, "step": ep.length - 1, "actor": "application",
                   "action": action, "cost": 0.0}
        ep.remember("log_action", body, out)
        return out

    def log_returns(self, episode_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ep, replay = self._open(episode_id, body, "returns", ("reward", "info", "request_id"),
                                READY, AWAITING_EXPERT)
        if replay is not None:
            return replay
        reward = wire.get_number(body, "reward")
        if not math.isfinite(ep.base_return + reward):
            raise wire.ApiError(422, f"reward {reward!r} would make the episode's return infinite")
        info = body.get("info")
        if info is not None and not isinstance(info, dict):
            raise wire.ApiError(422, f"field 'info' must be a JSON object, got {type(info).__name__}")
        ep.touch()
        ep.add_reward(reward)
        if self.coord.learner is not None and ep.training_enabled:
            self.coord.learner.on_reward(ep.episode_id, reward)
        if info:
            ep.info = info
        out = {"episode_id": ep.episode_id, "base_return": ep.base_return}
        ep.remember("returns", body, out)
        return out

    async def end(self, episode_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """End an episode: ``truncated`` (a time limit, not a terminal state) is logged as such."""
        ep, _ = self._open(episode_id, body, "end", ("observation", "info", "truncated"),
                           READY, AWAITING_EXPERT)
        truncated = wire.get_bool(body, "truncated", False)
        obs = self._check_observation(body)
        if isinstance(body.get("info"), dict):
            ep.info = body["info"]
        if obs is not None:
            ep.final_obs_row = self.log.add_observation(obs)
        status = "truncated" if truncated else "ended"
        record = self._close(ep, status, "ended by the application"
                             + (" (truncated)" if truncated else ""))
        await asyncio.to_thread(self.log.append, record)  # answered once it is on disk
        return {**ep.summary(), "status": status}

    def _open(self, episode_id: str, body: dict[str, Any], call: str, keys: tuple[str, ...],
              *states: str) -> tuple[Episode, dict[str, Any] | None]:
        """Check the body's keys and find the episode; a retried call (same ``request_id``)
        gets its cached answer, any other must find the episode in one of ``states``."""
        wire.check_keys(body, keys, call)
        ep = self.table.get(episode_id)
        replay = ep.replay(call, body)
        if replay is None:
            ep.require(*states, call=call)
        return ep, replay

    def _check_observation(self, body: dict[str, Any]) -> Any:
        """An optional ``observation``, decoded: it must still fit the env's observation space."""
        if body.get("observation") is None:
            return None
        return wire.decode_observation(body["observation"], self.coord.observation_space)

"""Episodes served to an application: an explicit state machine and CoordEnv's accounting.

States: ``ready`` (the next call may be ``act``, ``log_action``, ``returns`` or ``end``),
``acting`` (an ``act`` is being answered), ``awaiting_expert`` (the application's own expert
was chosen; the next call reports its action with ``log_action``). Ended and reaped
episodes are remembered (bounded) so late calls get 410 rather than 404.

Costs follow CoordEnv (both use :func:`duo_cli.coordination.step.charge`): ``alpha * BP`` per
expert step, ``beta * BP`` per switch of actor between two coordinator steps of the same
episode (the first step is never a switch); the application's own steps cost nothing.
Rewards reported with ``returns`` accumulate onto the latest step, as in RLlib's
``ExternalEnv``.

Every step is logged (:class:`~duo_cli.serve.store.StepColumns`) with the coordinator's
p(expert), the probability of its choice, the model version that chose and the row of its
observation, so the log can be evaluated off-policy and learned from.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from duo_cli.coordination.step import EXPERT, NO_ACTOR, NOVICE, charge
from duo_cli.serve.store import SCHEMA, StepColumns
from duo_cli.serve.wire import ApiError

READY, ACTING, AWAITING_EXPERT = "ready", "acting", "awaiting_expert"
APPLICATION = 2  # a step the application took itself (log_action without an act)
ACTORS = {NOVICE: "novice", EXPERT: "expert", APPLICATION: "application"}  # wire names


@dataclass
class Episode:
    """One live episode: its coordinator state, accounting and step log."""

    episode_id: str
    training_enabled: bool
    external_expert: bool
    policy: Any = None
    state: str = READY
    started: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    prev_actor: int = NO_ACTOR
    length: int = 0
    expert_steps: int = 0
    switches: int = 0
    app_steps: int = 0
    cost: float = 0.0
    base_return: float = 0.0
    steps: StepColumns = field(default_factory=StepColumns)
    final_obs_row: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    last_request: tuple[str, str, dict] | None = None

    @property
    def actions(self) -> list[int | None]:
        return self.steps.action

    @property
    def rewards(self) -> list[float]:
        return self.steps.reward

    @property
    def costs(self) -> list[float]:
        return self.steps.cost

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def replay(self, call: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The cached answer when ``call`` is retried with the same ``request_id``."""
        rid = body.get("request_id")
        if rid is None:
            return None
        if not isinstance(rid, str) or not 0 < len(rid) <= 128:
            raise ApiError(422, "request_id must be a string of 1 to 128 characters")
        last = self.last_request
        if last is not None and last[0] == call and last[1] == rid:
            return last[2]
        return None

    def remember(self, call: str, body: dict[str, Any], out: dict[str, Any]) -> None:
        """Keep ``out`` as the answer to a retry of ``call`` (when it has a ``request_id``)."""
        rid = body.get("request_id")
        if rid is not None:
            self.last_request = (call, rid, out)

    def require(self, *states: str, call: str) -> None:
        if self.state not in states:
            hint = {ACTING: "an act of this episode is still being answered",
                    AWAITING_EXPERT: "report the external expert's action with log_action first",
                    READY: "no external expert action is awaited"}[self.state]
            raise ApiError(409, f"{call} is not allowed now: episode {self.episode_id} is "
                                f"{self.state} ({hint})")

    def record_step(self, actor: int, action: int | None, novice_action: int | None,
                    expert_cost: float, switch_cost: float, p_expert: float | None = None,
                    version: str | None = None, obs_row: int | None = None) -> float:
        """Account and log one step; returns its cost. Application steps (log_action) cost
        nothing and have no probability (``p_expert`` is ignored there).

        :param p_expert: the coordinator's p(expert) for this step (its choice's probability
            is ``p_expert`` for the expert, ``1 - p_expert`` for the novice).
        :param version: the model version that chose.
        :param obs_row: the step's observation row in the log.
        """
        cost = 0.0
        if actor != APPLICATION:
            _, step_cost, switched = charge(actor, self.prev_actor, expert_cost, switch_cost)
            cost = float(step_cost)
            self.expert_steps += actor == EXPERT
            self.switches += bool(switched)
            self.prev_actor = actor
        else:
            self.app_steps += 1
        self.length += 1
        self.cost += cost
        if actor == APPLICATION or p_expert is None:
            p_expert = p_choice = None
        else:
            p_expert = float(p_expert)
            p_choice = p_expert if actor == EXPERT else 1.0 - p_expert
        s = self.steps
        s.actor.append(ACTORS[actor])
        s.action.append(action)
        s.novice_action.append(novice_action)
        s.reward.append(0.0)
        s.cost.append(cost)
        s.p_expert.append(p_expert)
        s.p_choice.append(p_choice)
        s.model_version.append(version)
        s.obs_row.append(obs_row)
        return cost

    def add_reward(self, reward: float) -> None:
        self.base_return += reward
        if self.rewards:
            self.rewards[-1] += reward

    def summary(self) -> dict[str, Any]:
        """The figures ``end`` returns (same definitions as CoordEnv and the Evaluator)."""
        return {
            "episode_id": self.episode_id,
            "return": self.base_return - self.cost,
            "base_return": self.base_return,
            "length": self.length,
            "expert_steps": self.expert_steps,
            "expert_frac": self.expert_steps / self.length if self.length else 0.0,
            "switches": self.switches,
            "cost": self.cost,
            "application_steps": self.app_steps,
        }

    def record(self, status: str, reason: str, meta: dict[str, Any]) -> dict[str, Any]:
        """The episode log entry (layout: :mod:`duo_cli.serve.store`)."""
        return {
            "schema": SCHEMA, **self.summary(), "status": status, "reason": reason,
            "training_enabled": self.training_enabled,
            "expert": "external" if self.external_expert else "model",
            "started": self.started, "ended": time.time(), "info": self.info, **meta,
            "final_obs_row": self.final_obs_row, "steps": self.steps.to_dict(),
        }


class EpisodeTable:
    """Live episodes by id, with admission control and a memory of finished ids.

    :param max_concurrent: live episodes allowed at once (429 beyond).
    :param remember: how many finished ids are kept to answer 410.
    """

    def __init__(self, max_concurrent: int, remember: int = 100_000):
        self.max_concurrent = int(max_concurrent)
        self.live: dict[str, Episode] = {}
        self.finished: OrderedDict[str, str] = OrderedDict()
        self.remember = int(remember)

    def start(self, episode_id: str | None, training_enabled: bool, external_expert: bool,
              policy: Any) -> Episode:
        if episode_id is not None and episode_id in self.live:
            raise ApiError(409, f"episode {episode_id} is already started")
        if episode_id is not None and episode_id in self.finished:
            raise ApiError(410, f"episode {episode_id} has already {self.finished[episode_id]}")
        if len(self.live) >= self.max_concurrent:
            raise ApiError(429, f"too many concurrent episodes ({self.max_concurrent}); end some "
                                "or retry later", headers={"Retry-After": "1"})
        episode_id = episode_id or uuid.uuid4().hex
        ep = Episode(episode_id, training_enabled, external_expert, policy)
        self.live[episode_id] = ep
        return ep

    def get(self, episode_id: str) -> Episode:
        ep = self.live.get(episode_id)
        if ep is None:
            if episode_id in self.finished:
                raise ApiError(410, f"episode {episode_id} has already {self.finished[episode_id]}")
            raise ApiError(404, f"unknown episode {episode_id!r}")
        return ep

    def remove(self, ep: Episode, status: str) -> None:
        self.live.pop(ep.episode_id, None)
        self.finished[ep.episode_id] = {"ended": "ended", "truncated": "ended (truncated)",
                                        "abandoned": "been abandoned (timed out)",
                                        "interrupted": "been interrupted"}.get(status, status)
        while len(self.finished) > self.remember:
            self.finished.popitem(last=False)

    def idle(self, timeout_s: float) -> list[Episode]:
        """Episodes silent for longer than ``timeout_s`` (never one whose act is in flight)."""
        now = time.monotonic()
        return [ep for ep in self.live.values()
                if ep.state != ACTING and now - ep.last_seen > timeout_s]

    def ready_count(self) -> int:
        """Live episodes that could send an act now (used to bound the batcher's wait)."""
        return sum(ep.state == READY for ep in self.live.values())

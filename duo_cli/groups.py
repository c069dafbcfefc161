"""Typed settings of the config groups that name no class (``serve``).

Like a policy's or an algorithm's :attr:`Settings`, each is declared once here, its
values come from the group's YAML, and :func:`duo_cli.config.validate` checks the
composed node against it before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from duo_cli.settings import setting

EXPERTS = ("model", "external")


@dataclass(frozen=True)
class ServeSettings:
    """``duo serve``'s settings (``conf/serve/default.yaml`` documents each)."""

    host: str = setting(doc="address to bind (loopback by default)")
    port: int = setting(low=0, high=65535, doc="0 = a free port")
    token: str | None = setting(doc="bearer token (null = $DUO_SERVE_TOKEN)")
    max_concurrent: int = setting(low=1, doc="live episodes at once")
    episode_timeout_s: float = setting(low=0, low_open=True, doc="idle time before abandoning")
    max_batch: int = setting(low=1, doc="most acts answered by one forward")
    max_wait_ms: float = setting(low=0, doc="longest wait for a batch to fill")
    max_request_bytes: int = setting(low=1, doc="larger request bodies answer 413")
    expert: str = setting(choices=EXPERTS, doc="who acts when the expert is chosen")
    temperature: float | None = setting(low=0, doc="coordinator sampling temperature")
    forward_thread: bool = setting(doc="run forwards in a worker thread")
    bf16: bool | None = setting(doc="agents' bf16 autocast (null = as trained)")
    learn: bool = setting(doc="train the PPO coordinator from the served episodes")
    learn_steps: int | None = setting(low=1, doc="complete served steps per PPO update "
                                                 "(null = algorithm.num_steps * env.num_envs)")
    max_policy_lag: int = setting(low=0, doc="drop steps chosen by weights more than this "
                                             "many updates old")

    @property
    def external_expert(self) -> bool:
        """The application's own expert acts when the coordinator chooses the expert."""
        return self.expert == "external"

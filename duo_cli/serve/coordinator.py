"""A coordinator checkpoint rebuilt for serving, and the batched step it answers ``act`` with.

Per-step semantics are CoordEnv's: the novice runs once per observation (its logits and
hidden features are the coordinator's observation and its sampled action is the novice's
action); the expert runs only on the rows whose coordinator chose it (on every row with
``coordination.open_expert``); the coordinator acts on the CoordEnv observation dict.
This module is the only place in :mod:`duo_cli.serve` that imports duo's coordination
setup (:mod:`duo_cli.coordination.factory`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from duo_cli.checkpoint import CheckpointError, load_checkpoint
from duo_cli.commands.common import setup_torch
from duo_cli.config import ConfigError, resolve_path
from duo_cli.coordination.factory import CoordEnvFactory, build_coord_policy
from duo_cli.policies.base import Policy, sample_actions
from duo_cli.rundir import make_run_dir

logger = logging.getLogger(__name__)

NOVICE, EXPERT = 0, 1


def serve_config(cli_cfg: DictConfig, ckpt: dict, overrides: list[str] | None) -> DictConfig:
    """The coordinator's training config, with this command's ``serve`` group and value overrides.

    As in ``duo eval``: a coordinator is served in the setting it was trained in.
    """
    run_cfg = OmegaConf.create(ckpt["metadata"]["run_config"])
    values = [o for o in (overrides or []) if "=" in o and "/" not in o.split("=")[0]]
    cfg = OmegaConf.merge(run_cfg, {"serve": cli_cfg.serve}, OmegaConf.from_dotlist(values))
    for key in ("run_dir", "overwrite", "resume", "progress"):
        cfg[key] = cli_cfg[key]
    return cfg


def load_coord_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """Read a coordinator checkpoint; anything else is a one-line :class:`CheckpointError`."""
    path = resolve_path(path)
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "coord" or "run_config" not in ckpt.get("metadata", {}):
        raise CheckpointError(f"{path} is a {ckpt.get('kind')!r} checkpoint; duo serve needs a "
                              "coordinator checkpoint (kind 'coord', from duo train --type coord)")
    return path, ckpt


def new_run_dir(cfg: DictConfig) -> Path:
    return make_run_dir(cfg, "serve")


@dataclass
class Decision:
    """The answer to one ``act``: who acts and the base actions."""

    actor: int
    action: int | None
    novice_action: int


class ServedCoordinator:
    """Novice, expert and coordinator policy of a checkpoint, answering batches of steps.

    :param cfg: the serving config (see :func:`serve_config`).
    :param ckpt: the loaded coordinator checkpoint.
    :param path: where it was loaded from (reported by ``/v1/health``).
    """

    def __init__(self, cfg: DictConfig, ckpt: dict, path: Path):
        device = setup_torch(cfg)
        self.device = device
        setup = CoordEnvFactory(cfg, device)
        env = setup.env("test", 1)  # spaces, agents and costs; no game is started
        self.novice, self.expert = env.novice, env.expert
        bf16 = cfg.serve.get("bf16")
        for agent in (self.novice, self.expert):
            agent.eval()
            if bf16 is not None and hasattr(agent.model, "bf16"):
                agent.model.bf16 = bool(bf16)  # a deployment trade-off; changes numerics
        self.observation_space = env.base_env.single_observation_space
        self.num_actions = int(env.base_env.single_action_space.n)
        self.open_expert = bool(env.open_expert)
        self.alpha = float(cfg.coordination.expert_query_cost_weight)
        self.beta = float(cfg.coordination.switch_agent_cost_weight)
        self.bp = float(setup.bp)
        self.expert_cost = float(env.expert_query_cost_per_action)
        self.switch_cost = float(env.switch_agent_cost_per_action)
        self.agent_temperature = float(cfg.coordination.temperature)
        temp = cfg.serve.get("temperature")
        self.temperature = float(cfg.evaluation.temperature if temp is None else temp)
        policy = build_coord_policy(cfg, env, device)
        policy.set_params(ckpt["state_dict"])
        policy.eval()
        env.close()
        self.policy = policy
        #: stateful policies (e.g. ask_every_k's step counter) get one copy per episode
        self.stateful = type(policy).reset is not Policy.reset
        self.method = str(ckpt["metadata"].get("method", cfg.algorithm.name))
        self.path = path
        self.version = _file_digest(path)

    def episode_policy(self) -> Any | None:
        """The per-episode copy of a stateful coordinator (``None``: the shared one serves)."""
        if not self.stateful:
            return None
        policy = copy.deepcopy(self.policy)
        policy.reset(np.ones(1, dtype=bool))
        return policy

    @torch.no_grad()
    def decide(self, obs: list[np.ndarray], policies: list[Any | None],
               external: list[bool]) -> list[Decision]:
        """One step of ``len(obs)`` episodes: one novice forward, the expert on its rows only.

        :param obs: one base observation per episode.
        :param policies: per-episode coordinator copies (``None`` = the shared policy).
        :param external: rows whose expert is the application (no expert forward there).
        """
        n = len(obs)
        base = np.stack(obs)
        obs_t = torch.from_numpy(base).to(self.device)
        out = self.novice.forward(obs_t)
        novice_action = sample_actions(out.logits, self.agent_temperature).cpu().numpy()
        coord_obs = {"base_obs": base,
                     "novice_hidden": out.hidden.float().cpu().numpy(),
                     "novice_logits": out.logits.float().cpu().numpy()}
        expert_action = None
        if self.open_expert:
            eout = self.expert.forward(obs_t)
            expert_action = sample_actions(eout.logits, self.agent_temperature).cpu().numpy()
            coord_obs["expert_hidden"] = eout.hidden.float().cpu().numpy()
            coord_obs["expert_logits"] = eout.logits.float().cpu().numpy()
        actor = self._choose(coord_obs, policies)
        action = novice_action.astype(np.int64)
        ext = np.asarray(external, dtype=bool)
        rows = (actor == EXPERT) & ~ext
        if rows.any():
            if expert_action is not None:
                action[rows] = expert_action[rows]
            else:
                idx = torch.from_numpy(np.flatnonzero(rows)).to(self.device)
                eout = self.expert.forward(obs_t.index_select(0, idx))
                action[rows] = sample_actions(eout.logits, self.agent_temperature).cpu().numpy()
        return [
            Decision(int(actor[i]), None if (ext[i] and actor[i] == EXPERT) else int(action[i]),
                     int(novice_action[i]))
            for i in range(n)
        ]

    def _choose(self, coord_obs: dict[str, np.ndarray], policies: list[Any | None]) -> np.ndarray:
        """The coordinator's choice per row: shared rows in one call, own copies row by row."""
        n = len(policies)
        own = [i for i, p in enumerate(policies) if p is not None]
        actor = np.zeros(n, dtype=np.int64)
        shared = [i for i in range(n) if policies[i] is None]
        if shared:
            sub = coord_obs if len(shared) == n else {k: v[shared] for k, v in coord_obs.items()}
            actor[shared] = _as_numpy(self.policy.act(sub, self.temperature))
        for i in own:
            row = {k: v[i:i + 1] for k, v in coord_obs.items()}
            actor[i] = int(_as_numpy(policies[i].act(row, self.temperature))[0])
        if ((actor != NOVICE) & (actor != EXPERT)).any():
            raise RuntimeError(f"coordinator returned actions other than 0/1: {actor}")
        return actor


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def check_serve_config(cfg: DictConfig) -> None:
    """Value checks of the ``serve`` group (one-line :class:`ConfigError`)."""
    s = cfg.serve
    if s.expert not in ("model", "external"):
        raise ConfigError(f"unknown serve.expert {s.expert!r}; valid choices: model, external")
    for key in ("max_concurrent", "max_batch", "max_request_bytes"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"serve.{key} must be a positive integer, got {s[key]!r}")
    for key in ("episode_timeout_s", "max_wait_ms"):
        if not isinstance(s[key], int | float) or s[key] < 0 or (key == "episode_timeout_s"
                                                              and s[key] == 0):
            raise ConfigError(f"serve.{key} must be a positive number, got {s[key]!r}")
    if not isinstance(s.port, int) or not 0 <= s.port <= 65535:
        raise ConfigError(f"serve.port must be in [0, 65535] (0 = a free port), got {s.port!r}")

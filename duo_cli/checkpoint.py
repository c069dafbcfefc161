"""Checkpoints as plain data: a config dict, a state_dict and metadata.

They are written atomically (temp file + rename) and read with
``torch.load(weights_only=True)``, so a file carrying pickled code is refused
before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duo_cli import __version__
from duo_cli.errors import CheckpointError, ConfigError
from duo_cli.paths import resolve_path
from duo_cli.settings import check_value, setting, settings_fields

__all__ = ["AgentConfig", "CheckpointError", "Metadata", "PolicyCheckpoint", "load_checkpoint",
           "load_policy_checkpoint", "save_checkpoint", "save_policy"]

FORMAT = "duo/1"
#: what a policy checkpoint holds: an agent (acts in a base env) or a coordinator
KINDS = ("agent", "coord")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain containers and tensors only) atomically to ``path``.

    :raises CheckpointError: when the file cannot be written (disk full, no permission);
        the temp file is removed and an existing ``path`` is left as it was.
    """
    path = Path(path)
    data = plain({"format": FORMAT, **payload})
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600: use the umask
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        raise CheckpointError(f"cannot write checkpoint {path}: {_reason(exc)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


#: suffix of the temp files of :func:`save_checkpoint` (``.<name>.<random>.tmp``)
TMP_SUFFIX = ".tmp"


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temp files a killed :func:`save_checkpoint` left in ``directory``."""
    removed = []
    for p in Path(directory).glob(f".*.pt.*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def _reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened (torch's messages span many lines)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "No space left" in ln or "Permission denied" in ln:
            return ln
    return lines[0] if lines else type(exc).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays inside containers to Python numbers and tensors."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a duo checkpoint; refuse anything that is not plain data in duo's layout.

    :raises CheckpointError: one line saying what is wrong with the file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(exc)}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is not a duo checkpoint: not a torch zip archive (another kind of file)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused checkpoint {path}: it is not plain data ({_global_named(exc)}); "
            "duo checkpoints hold only containers, numbers, strings and tensors"
        ) from None
    except Exception as exc:  # truncated or corrupt archive
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated or corrupt ({_reason(exc)})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a duo checkpoint (format {FORMAT!r} expected)")
    return data


def load_policy_checkpoint(path: str | os.PathLike,
                           map_location: str | torch.device = "cpu") -> PolicyCheckpoint:
    """:func:`load_checkpoint` of a saved policy, read into a :class:`PolicyCheckpoint`."""
    return PolicyCheckpoint.from_payload(load_checkpoint(path, map_location), path)


def _global_named(exc: BaseException) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return f"it names {match.group(1)}"
    match = re.search(r"Unsupported operand \d+", str(exc))
    return match.group(0) if match else "unsupported pickle content"


@dataclass(frozen=True)
class AgentConfig:
    """An agent checkpoint's ``config``: what rebuilds the agent (:func:`duo_cli.agents.agent_spec`)."""

    policy: dict[str, Any]
    model: dict[str, Any]
    num_actions: int = setting(low=1)
    env: dict[str, Any] | None = None


@dataclass(frozen=True)
class Metadata:
    """A policy checkpoint's ``metadata``: who wrote it, for what, what was measured.

    Agents: ``env``, ``model``, ``init_from``, ``bp`` (the expert's reward per step on
    test) and ``bp_source``; coordinators: ``method``, ``bp`` and ``run_config`` (the
    setting :func:`duo_cli.config.checkpoint_config` rebuilds); both: the step or the
    candidate ``selected`` on ``selected_on`` with its ``eval``.  Keys a newer writer
    added are kept in ``extra``.
    """

    duo_version: str | None = None
    command: str | None = None
    global_step: int | None = None
    eval: dict[str, Any] | None = None
    selected: dict[str, Any] | None = None
    selected_on: str | None = None
    env: dict[str, Any] | None = None
    model: str | None = None
    init_from: dict[str, Any] | None = None
    bp: float | None = None
    bp_source: str | None = None
    method: str | None = None
    run_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Any = "checkpoint") -> Metadata:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**_checked(cls, {k: v for k, v in data.items() if k in known}, where,
                              "metadata"),
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}


@dataclass
class PolicyCheckpoint:
    """A saved policy: its ``kind`` (agent, coord), the ``config`` that rebuilds it, its
    weights or parameters, typed :class:`Metadata`, and a run's ``train_state`` (last.pt)."""

    kind: str
    config: dict[str, Any]
    state_dict: dict[str, Any]
    metadata: Metadata
    train_state: dict[str, Any] | None = None

    @property
    def agent(self) -> AgentConfig:
        """The typed ``config`` of an agent checkpoint."""
        return AgentConfig(**{k: self.config.get(k) for k in ("policy", "model", "num_actions",
                                                                "env")})

    @classmethod
    def from_payload(cls, data: dict[str, Any], path: Any = "checkpoint") -> PolicyCheckpoint:
        """The checkpoint in ``data`` (a loaded file), its layout checked: one-line errors."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{path} is not a valid duo checkpoint: {what}")

        kind = data.get("kind")
        if kind not in KINDS:
            raise bad(f"kind {kind!r}; valid choices: {', '.join(KINDS)}")
        for key in ("config", "state_dict", "metadata"):
            if not isinstance(data.get(key), dict):
                raise bad(f"{key!r} is missing or not a mapping")
        for key in data["state_dict"]:
            if not isinstance(key, str):
                raise bad(f"state_dict key {key!r} is not a string")
        ckpt = cls(kind, data["config"], data["state_dict"],
                   Metadata.from_dict(data["metadata"], path), data.get("train_state"))
        if kind == "agent":
            _checked(AgentConfig, ckpt.config, path, "config")
            for key in ("model", "policy"):
                if not isinstance(ckpt.config[key].get("_target_"), str):
                    raise bad(f"config.{key} has no _target_")
        elif ckpt.metadata.run_config is None:
            raise bad("metadata.run_config is missing or not a mapping")
        return ckpt

    def payload(self) -> dict[str, Any]:
        """What :func:`save_checkpoint` writes."""
        out = {"kind": self.kind, "config": self.config, "state_dict": self.state_dict,
               "metadata": self.metadata.to_dict()}
        return out if self.train_state is None else {**out, "train_state": self.train_state}


def _checked(cls: type, data: dict[str, Any], path: Any, where: str) -> dict[str, Any]:
    """``data``'s values checked against the field types of ``cls`` (one-line error)."""
    try:
        return {name: check_value(f"{where}.{name}", data.get(name), hint, meta)
                for name, hint, meta in settings_fields(cls) if name != "extra"}
    except ConfigError as exc:
        raise CheckpointError(f"{path} is not a valid duo checkpoint: {exc}") from None


def save_policy(
    path: str | os.PathLike, policy: Any, metadata: dict[str, Any], **extra: Any
) -> Path:
    """Save a policy as ``{kind, config, state_dict, metadata}`` (plus ``extra`` entries).

    ``policy.config`` (a plain dict) must say how to rebuild the policy.
    """
    ckpt = PolicyCheckpoint(getattr(policy, "kind", "policy"), policy.config,
                            policy.get_params(),
                            Metadata.from_dict({"duo_version": __version__, **metadata}, path),
                            extra.pop("train_state", None))
    return save_checkpoint(path, {**ckpt.payload(), **extra})


def load_coord_checkpoint(path: str | os.PathLike) -> tuple[Path, PolicyCheckpoint]:
    """Read a coordinator checkpoint; anything else is a one-line :class:`CheckpointError`."""
    path = resolve_path(path)
    ckpt = load_policy_checkpoint(path)
    if ckpt.kind != "coord":
        raise CheckpointError(f"{path} is a {ckpt.kind!r} checkpoint; duo serve needs a "
                              "coordinator checkpoint (kind 'coord', from duo train --type coord)")
    return path, ckpt

"""Checkpoints as plain data: a config dict, a state_dict and metadata.

They are written atomically (temp file + rename) and read with
``torch.load(weights_only=True)``, so a file carrying pickled code is refused
before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "duo/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or unsafe."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain containers and tensors only) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a duo checkpoint; refuse anything that is not plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refused checkpoint {path}: it is not plain data ({first})"
        ) from None
    except Exception as exc:  # truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a duo checkpoint (format {FORMAT!r} expected)")
    return data


def save_policy(
    path: str | os.PathLike, policy: Any, metadata: dict[str, Any], **extra: Any
) -> Path:
    """Save a policy as ``{kind, config, state_dict, metadata}`` (plus ``extra`` entries).

    ``policy.config`` (a plain dict) must say how to rebuild the policy.
    """
    from duo_cli import __version__

    payload = {
        "kind": getattr(policy, "kind", "policy"),
        "config": policy.config,
        "state_dict": policy.get_params(),
        "metadata": {"duo_version": __version__, **metadata},
        **extra,
    }
    return save_checkpoint(path, payload)

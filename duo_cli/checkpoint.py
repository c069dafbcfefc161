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

import numpy as np
import torch

FORMAT = "duo/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or unsafe."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain containers and tensors only) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = plain({"format": FORMAT, **payload})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600: use the umask
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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

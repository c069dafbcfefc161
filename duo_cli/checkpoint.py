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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duo_cli import __version__
from duo_cli.errors import CheckpointError
from duo_cli.paths import resolve_path

__all__ = ["CheckpointError", "load_checkpoint", "load_policy_checkpoint", "save_checkpoint",
           "save_policy"]

FORMAT = "duo/1"


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
                           map_location: str | torch.device = "cpu") -> dict:
    """:func:`load_checkpoint` of a saved policy, its layout checked by :func:`check_layout`."""
    data = load_checkpoint(path, map_location)
    check_layout(data, path)
    return data


def _global_named(exc: BaseException) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return f"it names {match.group(1)}"
    match = re.search(r"Unsupported operand \d+", str(exc))
    return match.group(0) if match else "unsupported pickle content"


def check_layout(data: dict, path: Any = "checkpoint") -> None:
    """The keys and types a duo checkpoint has: ``kind``, ``config``, ``state_dict``, ``metadata``."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a valid duo checkpoint: {what}")

    kind = data.get("kind")
    if kind not in ("agent", "coord"):
        raise bad(f"kind {kind!r}; valid choices: agent, coord")
    for key, typ in (("config", dict), ("state_dict", dict), ("metadata", dict)):
        if not isinstance(data.get(key), typ):
            raise bad(f"{key!r} is missing or not a mapping")
    for key in data["state_dict"]:
        if not isinstance(key, str):
            raise bad(f"state_dict key {key!r} is not a string")
    conf = data["config"]
    if kind == "agent":
        for key in ("model", "policy"):
            if not isinstance(conf.get(key), dict) or not isinstance(conf[key].get("_target_"), str):
                raise bad(f"config.{key} has no _target_")
        n = conf.get("num_actions")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad(f"config.num_actions {n!r} is not a positive int")
    elif not isinstance(data["metadata"].get("run_config"), dict):
        raise bad("metadata.run_config is missing or not a mapping")


def save_policy(
    path: str | os.PathLike, policy: Any, metadata: dict[str, Any], **extra: Any
) -> Path:
    """Save a policy as ``{kind, config, state_dict, metadata}`` (plus ``extra`` entries).

    ``policy.config`` (a plain dict) must say how to rebuild the policy.
    """
    payload = {
        "kind": getattr(policy, "kind", "policy"),
        "config": policy.config,
        "state_dict": policy.get_params(),
        "metadata": {"duo_version": __version__, **metadata},
        **extra,
    }
    return save_checkpoint(path, payload)


def load_coord_checkpoint(path: str | os.PathLike) -> tuple[Path, dict]:
    """Read a coordinator checkpoint; anything else is a one-line :class:`CheckpointError`."""
    path = resolve_path(path)
    ckpt = load_policy_checkpoint(path)
    if ckpt["kind"] != "coord":
        raise CheckpointError(f"{path} is a {ckpt['kind']!r} checkpoint; duo serve needs a "
                              "coordinator checkpoint (kind 'coord', from duo train --type coord)")
    return path, ckpt

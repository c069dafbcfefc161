"""The wire format of ``duo serve``: JSON bodies, observations, one-line errors.

An observation is either ``{"dtype": "uint8", "shape": [64, 64, 3], "data": "<base64 of the
raw C-order bytes>"}`` or plain nested JSON lists; both are checked against the env's
observation space (shape, dtype, finiteness, bounds) before anything runs on them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import numpy as np

#: client-chosen episode ids: short, printable, safe in logs and URLs
EPISODE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())
        self.headers = headers or {}


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (an empty body is ``{}``)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


def check_keys(body: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """Refuse unknown fields, so a typo is an error rather than silently ignored."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(map(repr, unknown))} in {where}; "
                            f"valid fields: {', '.join(allowed)}")


def get_number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    """A finite JSON number field."""
    value = body.get(key, default)
    if value is None:
        raise ApiError(422, f"missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(422, f"field {key!r} must be a finite number, got {_show(value)}")
    return float(value)


def get_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(422, f"field {key!r} must be true or false, got {_show(value)}")
    return value


def get_str(body: dict[str, Any], key: str, choices: tuple[str, ...] | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (choices is not None and value not in choices):
        valid = f"; valid choices: {', '.join(choices)}" if choices else ""
        raise ApiError(422, f"field {key!r} must be a string{valid}, got {_show(value)}")
    return value


def get_episode_id(body: dict[str, Any]) -> str | None:
    value = body.get("episode_id")
    if value is None:
        return None
    if not isinstance(value, str) or not EPISODE_ID.match(value):
        raise ApiError(422, f"episode_id must match {EPISODE_ID.pattern}, got {_show(value)}")
    return value


def get_action(body: dict[str, Any], num_actions: int) -> int:
    """A base-env action: an integer in ``[0, num_actions)``."""
    value = body.get("action")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_actions:
        raise ApiError(422, f"field 'action' must be an integer in [0, {num_actions}), "
                            f"got {_show(value)}")
    return int(value)


def decode_observation(value: Any, space: Any) -> np.ndarray:
    """Decode and validate one observation against a gymnasium ``Box`` space.

    :raises ApiError: 422 naming what is wrong (shape, dtype, values).
    """
    shape, dtype = tuple(space.shape), np.dtype(space.dtype)
    if value is None:
        raise ApiError(422, "missing field 'observation'")
    if isinstance(value, dict):
        arr = _decode_array(value, shape, dtype)
    elif isinstance(value, list):
        try:
            arr = np.asarray(value)
            if arr.dtype.kind not in "iuf":
                raise TypeError(f"dtype {arr.dtype}")
            arr = arr.astype(np.float64)
        except (ValueError, TypeError, RecursionError):
            raise ApiError(422, f"observation lists must be rectangular numbers of shape "
                                f"{list(shape)}") from None
        if arr.shape != shape:
            raise ApiError(422, f"observation has shape {list(arr.shape)}; expected {list(shape)}")
        if not np.isfinite(arr).all():
            raise ApiError(422, "observation holds non-finite values")
        if dtype.kind in "iub" and not (arr == np.round(arr)).all():
            raise ApiError(422, f"observation must hold integers for dtype {dtype.name}")
        arr = _in_bounds(arr, space).astype(dtype)
        return arr
    else:
        raise ApiError(422, f"observation must be an object (dtype, shape, data) or nested lists, "
                            f"got {type(value).__name__}")
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise ApiError(422, "observation holds non-finite values")
    return _in_bounds(arr, space)


def _decode_array(value: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    extra = sorted(set(value) - {"dtype", "shape", "data"})
    if extra:
        raise ApiError(422, f"unknown observation field(s) {', '.join(map(repr, extra))}; "
                            "valid fields: dtype, shape, data")
    if value.get("dtype") != dtype.name:
        raise ApiError(422, f"observation dtype {_show(value.get('dtype'))}; expected {dtype.name!r}")
    got = value.get("shape")
    if not isinstance(got, list) or tuple(got) != shape:
        raise ApiError(422, f"observation has shape {_show(got)}; expected {list(shape)}")
    data = value.get("data")
    if not isinstance(data, str):
        raise ApiError(422, "observation 'data' must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "observation 'data' is not valid base64") from None
    want = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != want:
        raise ApiError(422, f"observation 'data' holds {len(raw)} bytes; shape {list(shape)} "
                            f"of {dtype.name} needs {want}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _in_bounds(arr: np.ndarray, space: Any) -> np.ndarray:
    low, high = np.asarray(space.low), np.asarray(space.high)
    if (arr < low).any() or (arr > high).any():
        raise ApiError(422, f"observation values outside the space's bounds "
                            f"[{low.min()}, {high.max()}]")
    return arr


def encode_array(arr: np.ndarray) -> dict[str, Any]:
    """The JSON form of an array: dtype, shape and base64 of its C-order bytes."""
    arr = np.ascontiguousarray(arr)
    return {"dtype": arr.dtype.name, "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

"""Python client of ``duo serve`` (httpx), synchronous and asyncio.

    from duo_cli.client import DuoClient

    with DuoClient("http://127.0.0.1:8000") as duo:
        eid = duo.start_episode()
        step = duo.act(eid, obs)            # {"actor", "action", "novice_action", "cost", ...}
        duo.log_returns(eid, reward)
        result = duo.end_episode(eid)       # {"return", "base_return", "length", ...}

Observations (numpy arrays) travel as ``{"dtype", "shape", "data": base64}``; JSON only,
never pickle. A refused call raises :class:`ServeError` with the status and the server's
one-line message.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from duo_cli.serve.wire import encode_array


class ServeError(RuntimeError):
    """A call ``duo serve`` refused: ``status`` and the server's one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def encode_observation(obs: Any) -> Any:
    """The wire form of an observation: arrays as base64, anything else as given."""
    return encode_array(obs) if isinstance(obs, np.ndarray) else obs


def _body(**fields: Any) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if v is not None}
    if "observation" in out:
        out["observation"] = encode_observation(out["observation"])
    return out


def _step_body(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": [_body(**item) for item in items]}


def _result(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        data = {"error": resp.text.strip()[:200]}
    if resp.status_code >= 400:
        raise ServeError(resp.status_code, data.get("error", resp.reason_phrase)
                         if isinstance(data, dict) else str(data))
    return data


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class DuoClient:
    """Blocking client; one instance may be shared by threads (httpx pools connections).

    :param url: the server, e.g. ``http://127.0.0.1:8000``.
    :param token: the bearer token if the server needs one.
    :param timeout: seconds per call.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, **kwargs: Any):
        self.http = httpx.Client(base_url=url, headers=_headers(token), timeout=timeout, **kwargs)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _result(self.http.post(path, json=body))

    def health(self) -> dict[str, Any]:
        return _result(self.http.get("/v1/health"))

    def start_episode(self, episode_id: str | None = None, training_enabled: bool = True,
                      expert: str | None = None) -> str:
        """Start an episode; ``expert`` (``model`` | ``external``) overrides the server's."""
        return self._post("/v1/episodes", _body(episode_id=episode_id, expert=expert,
                                                training_enabled=training_enabled))["episode_id"]

    def act(self, episode_id: str, observation: Any, request_id: str | None = None) -> dict:
        """Who acts on ``observation`` and the action (``None`` for an external expert)."""
        return self._post(f"/v1/episodes/{episode_id}/act",
                          _body(observation=observation, request_id=request_id))

    def step(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Many episodes' calls in one request (``POST /v1/step``): each item has an
        ``episode_id`` and any of ``reward``, ``end`` ("ended"/"truncated"), ``start``
        (true), ``observation`` (an array: act on it). One answer per item: the act's,
        the end's or the start's, or ``{"error", "status"}`` for a refused item."""
        return self._post("/v1/step", _step_body(items))["results"]

    def get_action(self, episode_id: str, observation: Any) -> int | None:
        return self.act(episode_id, observation)["action"]

    def log_action(self, episode_id: str, action: int, observation: Any = None,
                   request_id: str | None = None) -> dict:
        """The external expert's action, or an action the application took itself."""
        return self._post(f"/v1/episodes/{episode_id}/log_action",
                          _body(action=int(action), observation=observation,
                                request_id=request_id))

    def log_returns(self, episode_id: str, reward: float, info: dict | None = None,
                    request_id: str | None = None) -> dict:
        return self._post(f"/v1/episodes/{episode_id}/returns",
                          _body(reward=float(reward), info=info, request_id=request_id))

    def end_episode(self, episode_id: str, observation: Any = None,
                    truncated: bool | None = None) -> dict:
        """End an episode; ``truncated=True``: cut by a time limit, not a terminal state."""
        return self._post(f"/v1/episodes/{episode_id}/end",
                          _body(observation=observation, truncated=truncated))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DuoClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncDuoClient:
    """The same calls for asyncio (many concurrent episodes from one thread)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, **kwargs: Any):
        self.http = httpx.AsyncClient(base_url=url, headers=_headers(token), timeout=timeout,
                                      **kwargs)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _result(await self.http.post(path, json=body))

    async def health(self) -> dict[str, Any]:
        return _result(await self.http.get("/v1/health"))

    async def start_episode(self, episode_id: str | None = None, training_enabled: bool = True,
                            expert: str | None = None) -> str:
        body = _body(episode_id=episode_id, expert=expert, training_enabled=training_enabled)
        return (await self._post("/v1/episodes", body))["episode_id"]

    async def act(self, episode_id: str, observation: Any, request_id: str | None = None) -> dict:
        return await self._post(f"/v1/episodes/{episode_id}/act",
                                _body(observation=observation, request_id=request_id))

    async def step(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """See :meth:`DuoClient.step`."""
        return (await self._post("/v1/step", _step_body(items)))["results"]

    async def log_action(self, episode_id: str, action: int, observation: Any = None,
                         request_id: str | None = None) -> dict:
        return await self._post(f"/v1/episodes/{episode_id}/log_action",
                                _body(action=int(action), observation=observation,
                                      request_id=request_id))

    async def log_returns(self, episode_id: str, reward: float, info: dict | None = None,
                          request_id: str | None = None) -> dict:
        return await self._post(f"/v1/episodes/{episode_id}/returns",
                                _body(reward=float(reward), info=info, request_id=request_id))

    async def end_episode(self, episode_id: str, observation: Any = None,
                          truncated: bool | None = None) -> dict:
        return await self._post(f"/v1/episodes/{episode_id}/end",
                                _body(observation=observation, truncated=truncated))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncDuoClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

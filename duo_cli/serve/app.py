"""The HTTP face of ``duo serve`` (FastAPI): versioned JSON routes, auth, size limit, errors.

Every error is ``{"error": "<one line>"}`` with a 4xx status (5xx only for a server fault),
and the server keeps serving.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from duo_cli.serve.metrics import prometheus
from duo_cli.serve.service import Service
from duo_cli.serve.wire import ApiError, parse_body

logger = logging.getLogger(__name__)


class _Gate:
    """Every request passes here: the bearer token (if any) and the body size limit."""

    def __init__(self, token: str | None, limit: int):
        self.expected = f"Bearer {token}".encode() if token else None
        self.limit = int(limit)

    def guard(self, request: Request) -> None:
        if self.expected is None:
            return
        got = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, self.expected):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})

    async def body(self, request: Request) -> dict[str, Any]:
        """The JSON object of a POST, read at most ``limit`` bytes far."""
        self.guard(request)
        limit = self.limit
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise ApiError(413, f"request body over serve.max_request_bytes={limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body over serve.max_request_bytes={limit}")
            chunks.append(chunk)
        return parse_body(b"".join(chunks))


def create_app(service: Service, token: str | None = None) -> FastAPI:
    """The ASGI app; ``token`` (if set) is required as ``Authorization: Bearer <token>``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.startup()
        try:
            yield
        finally:
            await service.shutdown()

    app = FastAPI(title="duo serve", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    gate = _Gate(token, service.limits.max_request_bytes)
    body = gate.body

    @app.get("/v1/health")
    async def health(request: Request):
        gate.guard(request)
        return service.health()

    @app.get("/metrics")
    async def metrics(request: Request):
        gate.guard(request)
        return PlainTextResponse(prometheus(service))

    @app.post("/v1/episodes")
    async def start_episode(request: Request):
        return service.start_episode(await body(request))

    @app.post("/v1/episodes/{episode_id}/act")
    async def act(episode_id: str, request: Request):
        return JSONResponse(await service.act(episode_id, await body(request)))

    @app.post("/v1/episodes/{episode_id}/log_action")
    async def log_action(episode_id: str, request: Request):
        return service.log_action(episode_id, await body(request))

    @app.post("/v1/episodes/{episode_id}/returns")
    async def returns(episode_id: str, request: Request):
        return service.log_returns(episode_id, await body(request))

    # the hot calls answer with json.dumps directly: FastAPI's jsonable_encoder walks every
    # value of the answer first (a fifth of a step call's server time, measured)
    @app.post("/v1/step")
    async def step(request: Request):
        return JSONResponse(await service.step(await body(request)))

    @app.post("/v1/episodes/{episode_id}/end")
    async def end(episode_id: str, request: Request):
        return await service.end(episode_id, await body(request))

    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "<one line>"}``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.status_code)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /v1/health"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse({"error": f"bad request: {first.get('msg', 'invalid')}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        logger.exception("internal error on %s %s", request.method, request.url.path)
        line = " ".join(str(exc).split())[:200]
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {line}"},
                            status_code=500)

"""Running ``duo serve``: load, bind, serve with uvicorn, drain and flush on SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from duo_cli.checkpoint import load_coord_checkpoint
from duo_cli.commands.common import setup_torch
from duo_cli.config import checkpoint_config
from duo_cli.coordination.problem import CoordProblem
from duo_cli.errors import ConfigError
from duo_cli.groups import ServeSettings
from duo_cli.serve.app import create_app
from duo_cli.serve.coordinator import ServedCoordinator, new_run_dir
from duo_cli.serve.learning import (
    check_learnable,
    lost_steps,
    make_learner,
    resume_learner,
    save_learner_state,
)
from duo_cli.serve.service import Service
from duo_cli.serve.store import LOG_NAME, EpisodeLog, read_episodes
from duo_cli.settings import parse_settings

logger = logging.getLogger(__name__)

TOKEN_ENV = "DUO_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_token(cfg: DictConfig) -> str | None:
    """``serve.token``, else ``$DUO_SERVE_TOKEN``; required when binding off loopback."""
    token = cfg.serve.get("token") or os.environ.get(TOKEN_ENV) or None
    host = str(cfg.serve.host)
    if token is None and not is_loopback(host):
        raise ConfigError(f"serve.host={host} is not loopback: set serve.token=<secret> or "
                          f"${TOKEN_ENV} (clients send 'Authorization: Bearer <secret>')")
    if token is not None and len(str(token)) < 8:
        raise ConfigError("serve.token must be at least 8 characters")
    return None if token is None else str(token)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (port 0 = a free one)."""
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it every
    # response (headers and body are two writes) waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind serve.host={host} serve.port={port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def build(cli_cfg: DictConfig, checkpoint: str, overrides: list[str] | None):
    """Load the checkpoint and make the service and app; returns ``(cfg, service, app, token)``."""
    path, ckpt = load_coord_checkpoint(checkpoint)
    # the setting the coordinator was trained in, validated as duo eval does, with `serve`
    cfg = checkpoint_config(cli_cfg, ckpt.metadata.run_config, str(path), overrides,
                            groups=("serve",))
    settings = parse_settings(ServeSettings, cfg.serve, "serve")
    token = serve_token(cfg)
    # the agents and BP are checked before anything is written
    problem = CoordProblem(cfg, setup_torch(cfg))
    coord = ServedCoordinator(problem, ckpt, path, settings)
    if settings.learn:
        check_learnable(problem, coord, settings, str(path))
    run_dir = new_run_dir(cfg)
    saved = OmegaConf.merge(cfg, {"serve": {"token": "<redacted>" if cfg.serve.token else None}})
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(saved))  # never the secret
    if settings.learn:
        start_learning(problem, coord, settings, run_dir, bool(cfg.resume))
    service = Service(coord, EpisodeLog(run_dir / LOG_NAME), settings)
    service.run_dir = run_dir
    return cfg, service, create_app(service, token), token


def start_learning(problem: CoordProblem, coord: ServedCoordinator, settings: ServeSettings,
                   run_dir: Path, resume: bool) -> None:
    """Give ``coord`` its learner: fresh (``last.pt`` written at update 0), or resumed from
    the run dir's ``last.pt``, reporting the logged steps no update used."""
    learner = make_learner(problem, coord, settings, run_dir)
    if resume and (run_dir / "last.pt").is_file():
        coord.learn_with(learner, resume_learner(learner, run_dir))
        lost = lost_steps(read_episodes(run_dir) if (run_dir / LOG_NAME).is_file() else [],
                          coord.version)
        logger.warning("resumed learning at update %d (model_version %s); %d logged steps "
                       "served after that update were in no update and are lost (episodes "
                       "running at the stop were not logged)", learner.version, coord.version,
                       lost)
    else:
        coord.learn_with(learner)
        save_learner_state(learner, run_dir, coord.base_version)


def _uvicorn_config(app: Any, cfg: DictConfig):
    import uvicorn

    s = cfg.serve
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                          limit_concurrency=4 * int(s.max_concurrent) + 16,
                          timeout_graceful_shutdown=10, timeout_keep_alive=30)


def run(cli_cfg: DictConfig, checkpoint: str, overrides: list[str] | None, console) -> Path:
    """``duo serve``: serve until SIGTERM / Ctrl-C, then drain, log live episodes, flush."""
    import uvicorn

    cfg, service, app, token = build(cli_cfg, checkpoint, overrides)
    sock = bind(str(cfg.serve.host), int(cfg.serve.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(_uvicorn_config(app, cfg))
    stop = {"signal": None}

    def on_signal(signum, frame):  # uvicorn re-raises the signal after its graceful shutdown
        stop["signal"] = signum

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            c = service.coord
            console.print(f"[bold]duo serve[/] {c.method} ({c.path}) alpha={c.alpha:g} "
                          f"beta={c.beta:g} BP={c.bp:.4g}; episode log "
                          f"{service.run_dir / LOG_NAME}", soft_wrap=True)
            print(f"serving on {url}", flush=True)
        await task

    try:
        asyncio.run(main())
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        sock.close()
    console.print(f"stopped; {service.log.written} episodes in {service.run_dir / LOG_NAME}",
                  soft_wrap=True)
    return service.run_dir


class BackgroundServer:
    """``duo serve`` in a thread of this process (tests, benchmarks, notebooks).

    :param cli_cfg: a composed config (``compose([...])``) with the ``serve`` group.
    :param checkpoint: a coordinator checkpoint.
    :param overrides: value overrides applied on the checkpoint's run config.
    """

    def __init__(self, cli_cfg: DictConfig, checkpoint: str, overrides: list[str] | None = None):
        import uvicorn

        self.cfg, self.service, app, self.token = build(cli_cfg, checkpoint, overrides)
        self._sock = bind(str(self.cfg.serve.host), int(self.cfg.serve.port))
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self._server = uvicorn.Server(_uvicorn_config(app, self.cfg))
        self._thread = threading.Thread(target=self._run, name="duo-serve", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("duo serve failed to start")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    @property
    def run_dir(self) -> Path:
        return self.service.run_dir

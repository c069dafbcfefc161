"""What the ``duo serve`` tests share: a served observation and a server on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duo_cli.config import compose
from duo_cli.serve.server import BackgroundServer

REPO = Path(__file__).resolve().parents[1]
#: a frame of the served games' shape
OBS = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def server(ckpt: Path, tmp_path: Path, *overrides: str) -> BackgroundServer:
    """``duo serve ckpt`` in a background thread on a free loopback port, one torch thread."""
    cli = compose(["serve.port=0", f"run_dir={tmp_path / 'serve'}", "torch_threads=1",
                   *overrides])
    return BackgroundServer(cli, str(ckpt), ["serve.port=0", "torch_threads=1", *overrides])

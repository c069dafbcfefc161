"""Where duo's own files are: the package, the project root, the config directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def conf_dir() -> Path:
    """The directory holding ``config.yaml`` (``$DUO_CONF_DIR`` overrides)."""
    env = os.environ.get("DUO_CONF_DIR")
    return Path(env) if env else PROJECT_DIR / "conf"


def resolve_path(path: str | os.PathLike) -> Path:
    """A path as given if it exists, else relative to the duo project root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = PROJECT_DIR / p
    return alt if alt.exists() else p

"""Shared test setup: one torch thread (the machine is shared), quiet consoles."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.pop("DUO_CONF_DIR", None)

import pytest  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # lets test modules `import fakes`
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture
def quiet_console() -> Console:
    """A rich console writing to a string buffer."""
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield

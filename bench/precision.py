"""bf16 against fp32 for duo's nets, on this CPU and on the instruction sets of other CPUs.

duo's models ask for bf16 (``bf16: true``), and :func:`~duo_cli.models.base.trunk_dtype`
grants it on a CPU only where :func:`~duo_cli.models.base.cpu_computes_bf16` (AVX512-BF16 or
AMX-BF16): elsewhere torch emulates bf16. This measures why, per net, as forward+backward
time in fp32 over the time in bf16 (> 1: bf16 is faster), one thread, ratios in one process:

* ``bf16_speedup_<net>_native``: on this CPU as it is;
* ``bf16_speedup_<net>_avx512``: oneDNN and ATen held to AVX512 without BF16 (e.g. Intel
  Skylake-SP and Cascade Lake, AMD Zen 3 with AVX512 off);
* ``bf16_speedup_<net>_avx2``: held to AVX2 (most desktop CPUs, AMD Zen 2 and 3).

The lower instruction sets are emulated by ``ONEDNN_MAX_CPU_ISA`` and ``ATEN_CPU_CAPABILITY``
in a child process (they are read once, at start). ``cpu_computes_bf16`` prints what duo
decides on this CPU (1 = bf16 where asked). Nets: ``coord_grid`` (the MiniGrid coordinator's
GridCNN obs encoder, hidden 256, 512 rows), ``small_cnn`` (256 rows) and ``impala`` (64 rows),
the Procgen agents' nets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: name -> (oneDNN's ISA cap, ATen's CPU capability); None: this CPU as it is
ISAS = {"native": None, "avx512": ("AVX512_CORE", "avx512"), "avx2": ("AVX2", "avx2")}
#: net -> (class in duo_cli.models, obs shape, rows per forward, hidden width)
NETS = {
    "coord_grid": ("grid.GridCNN", (7, 7, 3), 512, 256),
    "small_cnn": ("cnn.SmallCNN", (64, 64, 3), 256, 256),
    "impala": ("cnn.ImpalaCNN", (64, 64, 3), 64, 256),
}


def emit(name: str, value: float, fmt: str = "{:.3f}") -> None:
    print(f"{name}: {fmt.format(value)}", flush=True)


def _fwd_bwd_seconds(model, obs, reps: int) -> float:
    """Median seconds of one forward+backward of ``model`` on ``obs``."""
    times = []
    for i in range(reps + 2):
        t = time.perf_counter()
        out = model(obs)
        (out.hidden.sum() + out.value.sum()).backward()
        if i >= 2:  # two warm-ups
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure(isa: str) -> None:
    """In this process: ``bf16_speedup_<net>_<isa>`` for every net (bf16 forced where asked)."""
    sys.path.insert(0, str(ROOT))
    import importlib

    import torch

    from duo_cli.models import base

    torch.set_num_threads(1)
    torch.manual_seed(0)
    base.cpu_computes_bf16 = lambda: True  # measure bf16 even where torch emulates it
    reps = 3 if isa == "avx2" else 10  # emulated bf16 is slow
    for net, (target, shape, rows, hidden) in NETS.items():
        module, name = target.split(".")
        cls = getattr(importlib.import_module(f"duo_cli.models.{module}"), name)
        high = 11 if net == "coord_grid" else 256
        obs = torch.randint(0, high, (rows, *shape), dtype=torch.uint8)
        seconds = {}
        for bf16 in (False, True):
            model = cls(num_actions=15, hidden_dim=hidden, bf16=bf16)
            seconds[bf16] = _fwd_bwd_seconds(model, obs, reps)
        emit(f"bf16_speedup_{net}_{isa}", seconds[False] / seconds[True])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from duo_cli.models.base import cpu_computes_bf16

    emit("cpu_computes_bf16", float(cpu_computes_bf16()), "{:.0f}")
    for isa, caps in ISAS.items():
        env = dict(os.environ)
        if caps is not None:
            env["ONEDNN_MAX_CPU_ISA"], env["ATEN_CPU_CAPABILITY"] = caps
        subprocess.run([sys.executable, __file__, "--isa", isa], env=env, check=False)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--isa"]:
        measure(sys.argv[2])
    else:
        main()

"""``/metrics``: what ``duo serve`` counts, in Prometheus' text format."""

from __future__ import annotations

from typing import Any

from duo_cli.serve.learner import EXCLUDED


def prometheus(service: Any) -> str:
    """The counters and gauges of a :class:`~duo_cli.serve.service.Service`."""
    b = service.batcher
    lat = sorted(service.act_seconds)
    lines = [f"duo_serve_{k}_total {v}" for k, v in service.counts.items()]
    lines += [f"duo_serve_active_episodes {len(service.table.live)}",
              f"duo_serve_queue_depth {b.depth}",
              f"duo_serve_batches_total {b.batches}",
              f"duo_serve_batched_acts_total {b.items}",
              f"duo_serve_batch_size_max {b.max_seen}"]
    learner = service.coord.learner
    if learner is not None:
        lines += [f"duo_serve_model_updates {learner.version}",
                  f"duo_serve_trained_steps_total {learner.trained_steps}"]
        lines += [f'duo_serve_excluded_steps_total{{reason="{k}"}} {learner.excluded[k]}'
                  for k in EXCLUDED]
    for q in (0.5, 0.99):
        if lat:
            lines.append(f'duo_serve_act_seconds{{quantile="{q}"}} '
                         f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.6f}")
    return "\n".join(lines) + "\n"

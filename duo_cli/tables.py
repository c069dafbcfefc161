"""Rich console output: progress bars and result tables."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def fmt_ci(mean: float, ci: float) -> str:
    return f"{fmt(mean)} ± {fmt(ci)}"


class _Progress:
    """Live bar, or (without one, e.g. under nohup) a plain line every ``every`` updates."""

    def __init__(self, progress: Progress | None, task: Any, console: Console | None = None,
                 total: int = 0, every: int = 10):
        self._p, self._task = progress, task
        self._console, self._total, self._every, self._n = console, total, every, 0

    def advance_to(self, step: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=step)

    def update(self, step: int, metrics: Mapping[str, Any]) -> None:
        ret = metrics.get("episode_return", float("nan"))
        if self._p is None:
            self._n += 1
            if self._console is not None and self._every and self._n % self._every == 0:
                self._console.print(
                    f"step {step:,}/{self._total:,}  SPS {metrics.get('sps', 0):,.0f}  "
                    f"return {fmt(ret)}", highlight=False,
                )
            return
        self._p.update(
            self._task, completed=step,
            info=f"SPS {metrics.get('sps', 0):,.0f}  return {fmt(ret)}",
        )

    def pause(self) -> None:
        if self._p is not None:
            self._p.stop()

    def resume(self) -> None:
        if self._p is not None:
            self._p.start()


@contextmanager
def metrics_progress(console: Console, total: int, enabled: bool = True) -> Iterator[_Progress]:
    """A progress bar over environment steps showing SPS and recent return."""
    if not enabled:
        yield _Progress(None, None, console, total)
        return
    progress = Progress(
        TextColumn("[bold]steps"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    task = progress.add_task("train", total=total, info="")
    with progress:
        yield _Progress(progress, task)


def print_eval_table(
    console: Console,
    results: Mapping[str, Mapping[str, Any]],
    title: str = "evaluation",
    best: Mapping[str, float] | None = None,
) -> None:
    """One row per split: reward ±95% CI, base reward, expert fraction, episode lengths.

    Coordination columns (base reward, expert fraction, switches) appear only
    when the results carry them.
    """
    coord = any("expert_frac" in r for r in results.values())
    table = Table(title=title)
    cols = ["split", "reward ± 95% CI"]
    if coord:
        cols += ["base reward", "expert frac", "switches/ep"]
    cols += ["ep len mean", "min", "max", "episodes"]
    for col in cols:
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, r in results.items():
        mark = " *" if best is not None and best.get(split) == r["reward_mean"] else ""
        row = [split + mark, fmt_ci(r["reward_mean"], r["reward_ci95"])]
        if coord:
            row += [fmt(r.get("base_reward_mean")), fmt(r.get("expert_frac")),
                    fmt(r.get("switches_mean"))]
        row += [fmt(r["episode_length_mean"], 1), str(r["episode_length_min"]),
                str(r["episode_length_max"]), str(r["episodes"])]
        table.add_row(*row)
    console.print(table)

"""Progress bars for long stages (rate, ETA and a line of key metrics), on stderr.

Standard output stays free for results (tables, ``--json``); progress goes to standard error.
When stderr is not a terminal (a ``nohup`` log, CI), the bar becomes one plain line every
``UDG_PROGRESS_INTERVAL`` seconds (default 30) with the same count, rate, ETA and metrics.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, shown once the rate is known."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s")


class _Bar:
    def __init__(
        self, progress: Progress, task_id, description: str, total: int, unit: str, plain: bool
    ):
        self._progress, self._task = progress, task_id
        self._description, self._total, self._unit, self._plain = description, total, unit, plain
        self._start = time.monotonic()
        self._last_line = self._start
        self._interval = float(os.environ.get("UDG_PROGRESS_INTERVAL", "30"))
        self._first = None

    def update(self, completed: int, **metrics: float | str) -> None:
        text = "  ".join(
            f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        self._progress.update(self._task, completed=completed, metrics=text)
        now = time.monotonic()
        if self._first is None:
            self._first = (now, completed)
        if self._plain and (now - self._last_line >= self._interval or completed >= self._total):
            self._last_line = now
            t0, c0 = self._first
            rate = (completed - c0) / (now - t0) if now > t0 and completed > c0 else 0.0
            if completed >= self._total:
                eta = "0 s"
            else:  # the rate counts from the first update, so it is unknown until the second
                eta = f"{(self._total - completed) / rate:,.0f} s" if rate > 0 else "-"
            speed = f"{rate:,.1f}" if rate > 0 else "-"
            print(
                f"{self._description}: {completed}/{self._total} {self._unit}, "
                f"{speed} {self._unit}/s, elapsed {now - self._start:,.0f} s, "
                f"eta {eta}  {text}",
                file=sys.stderr,
                flush=True,
            )


@contextmanager
def progress_bar(description: str, total: int, unit: str = "steps", completed: int = 0):
    """A bar with count, rate, elapsed time, ETA and metrics; ``bar.update(n, key=value)``."""
    enabled = console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=not enabled,
        refresh_per_second=1,  # redraws cost the learners CPU time: once a second is enough
    )
    with progress:
        task_id = progress.add_task(description, total=total, completed=completed, metrics="")
        yield _Bar(progress, task_id, description, total, unit, plain=not enabled)

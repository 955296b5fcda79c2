"""Progress bars for long stages (rate, ETA and a line of key metrics), on stderr.

Standard output stays free for results (tables, ``--json``); progress goes to standard error and
is disabled when stderr is not a terminal and ``UDG_PROGRESS`` is not set, so logs stay small.
"""

from __future__ import annotations

import os
import sys
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
    def __init__(self, progress: Progress, task_id):
        self._progress, self._task = progress, task_id

    def update(self, completed: int, **metrics: float | str) -> None:
        text = "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        self._progress.update(self._task, completed=completed, metrics=text)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "steps", completed: int = 0):
    """A bar with count, rate, elapsed time, ETA and metrics; ``bar.update(n, key=value)``."""
    enabled = console.is_terminal or bool(os.environ.get("UDG_PROGRESS"))
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
        refresh_per_second=4,
    )
    with progress:
        task_id = progress.add_task(description, total=total, completed=completed, metrics="")
        yield _Bar(progress, task_id)


def is_interactive() -> bool:
    """Whether standard output is a terminal."""
    return sys.stdout.isatty()

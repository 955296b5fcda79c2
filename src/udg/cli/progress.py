"""Progress bars for long stages (rate, ETA and a line of key metrics), on stderr.

Standard output stays free for results (tables, ``--json``); progress goes to standard error.
The bar reads "compiling…" until its first update (JAX compiles the first step's kernels,
which can take longer than many steps after it), and its rate and ETA count only the steps
after the last update that had not yet advanced the count (compilation, or stage 2's model fits
reported before its first epoch), so neither distorts them. It fits in 80 columns: the
metrics are cut with an ellipsis rather than wrapped. When stderr is not a terminal (a
``nohup`` log, CI), the bar becomes one plain line every ``UDG_PROGRESS_INTERVAL`` seconds
(default 30) with the same count, rate, ETA and metrics.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

WIDTH = 80
"""The widest line a bar (or a log line beside it) draws."""
console = Console(stderr=True, width=min(Console(stderr=True).width, WIDTH))
COMPILING = "compiling…"


def _rate_and_eta(state: dict, completed: int, total: int, now: float) -> tuple[float, float]:
    """Items per second since the first update, and the seconds left (NaN while unknown)."""
    t0, c0 = state["first"]
    rate = (completed - c0) / (now - t0) if now > t0 and completed > c0 else float("nan")
    eta = 0.0 if completed >= total else (total - completed) / rate
    return rate, eta


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or unbounded: not known yet
        return "-:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _metrics_text(metrics: dict) -> str:
    return "  ".join(
        f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def _plain_line(state: dict, completed: int, text: str, now: float) -> str:
    rate, eta = _rate_and_eta(state, completed, state["total"], now)
    speed = f"{rate:,.1f}" if rate == rate else "-"
    eta_text = f"{eta:,.0f} s" if eta == eta else "-"
    return (
        f"{state['description']}: {completed}/{state['total']} {state['unit']}, "
        f"{speed} {state['unit']}/s, elapsed {now - state['start']:,.0f} s, eta {eta_text}  {text}"
    )


def _updater(progress: Progress, task_id, state: dict, plain: bool):
    """``update(completed, **metrics)`` of one bar."""

    def update(completed: int, **metrics: float | str) -> None:
        now, text = time.monotonic(), _metrics_text(metrics)
        if state["first"] is None or completed == state["first"][1]:
            # The first step, compilation included, is done; updates that count nothing yet
            # (stage 2's model fits before its first epoch) move the origin on.
            state["first"] = (now, completed)
        rate, eta = _rate_and_eta(state, completed, state["total"], now)
        progress.update(
            task_id,
            completed=completed,
            metrics=text,
            rate=f"{rate:,.0f} {state['unit']}/s" if rate == rate else f"- {state['unit']}/s",
            eta=f"eta {_clock(eta)}",
        )
        done = completed >= state["total"]
        if plain and (now - state["last_line"] >= state["interval"] or done):
            state["last_line"] = now
            print(_plain_line(state, completed, text, now), file=sys.stderr, flush=True)

    return update


@contextmanager
def progress_bar(description: str, total: int, unit: str = "steps", completed: int = 0):
    """A bar with count, rate, ETA and metrics; ``bar.update(n, key=value)`` (the plain lines of
    a log also give the elapsed time)."""
    enabled = console.is_terminal
    cut = Column(no_wrap=True, overflow="ellipsis", max_width=20)
    progress = Progress(
        TextColumn("[bold]{task.description}", table_column=cut),
        BarColumn(bar_width=10),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn(
            "{task.fields[metrics]}",
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        console=console,
        disable=not enabled,
        expand=True,
        refresh_per_second=1,  # redraws cost the learners CPU time: once a second is enough
    )
    start = time.monotonic()
    state = {
        "description": description,
        "total": total,
        "unit": unit,
        "start": start,
        "last_line": start,
        "interval": float(os.environ.get("UDG_PROGRESS_INTERVAL", "30")),
        "first": None,
    }
    with progress:
        task_id = progress.add_task(
            description, total=total, completed=completed, metrics=COMPILING, rate="", eta=""
        )
        yield SimpleNamespace(update=_updater(progress, task_id, state, plain=not enabled))

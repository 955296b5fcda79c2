"""Progress bars: "compiling…" until the first update, rates after it, 80 columns at most."""

from __future__ import annotations

import io

from rich.console import Console

from udg.cli import progress


def _terminal(monkeypatch) -> Console:
    console = Console(file=io.StringIO(), force_terminal=True, width=progress.WIDTH, record=True)
    monkeypatch.setattr(progress, "console", console)
    return console


def test_bar_says_compiling_until_its_first_update(monkeypatch):
    console = _terminal(monkeypatch)
    with progress.progress_bar("stage 1 point K=6", total=8000):
        pass
    assert progress.COMPILING in console.export_text()


def test_bar_fits_in_80_columns_with_long_metrics(monkeypatch):
    console = _terminal(monkeypatch)
    with progress.progress_bar("stage 2 MOPO on every cell of the grid", total=8000) as bar:
        bar.update(100, cell="point-angle-300/supervised-all/seed2", ret=123.456, loss=0.25)
        bar.update(4000, cell="point-angle-300/supervised-all/seed2", ret=123.456, loss=0.25)
    frames = ["stage 2" + f for f in console.export_text().split("stage 2")[1:]]  # redraws
    assert frames and all(len(line) <= progress.WIDTH for f in frames for line in f.splitlines())
    assert progress.COMPILING not in frames[-1] and "4000/8000" in frames[-1]


def test_rate_and_eta_count_from_the_first_update():
    state = {"first": (10.0, 100)}  # the first update came after compiling, at 100 items
    rate, eta = progress._rate_and_eta(state, 300, 1100, now=12.0)
    assert (rate, eta) == (100.0, 8.0)  # 200 items in 2 s; 800 left
    rate, eta = progress._rate_and_eta(state, 100, 1100, now=10.0)
    assert rate != rate and eta != eta  # unknown until a second update
    assert progress._clock(eta) == "-:--" and progress._clock(3725.0) == "1:02:05"


def test_updates_that_count_nothing_move_the_rate_origin(monkeypatch):
    # Stage 2 reports its model fits (count still 0) before the first epoch: the time they take
    # is not a rate of epochs.
    shown = []

    class Bar:
        def update(self, task_id, **fields):
            shown.append(fields)

    state = {"description": "stage 2 MOPO", "total": 100, "unit": "epochs", "start": 0.0}
    state |= {"last_line": 0.0, "interval": 1000.0, "first": None}
    update = progress._updater(Bar(), 0, state, plain=False)
    for now, completed in ((50.0, 0), (100.0, 0), (101.0, 1), (102.0, 2)):  # fits end at 100
        monkeypatch.setattr(progress.time, "monotonic", lambda now=now: now)
        update(completed)
    assert state["first"] == (100.0, 0)
    # 2 epochs in the 2 s since the fits ended (not in 52 s), 98 left
    assert shown[-1]["rate"] == "1 epochs/s" and shown[-1]["eta"] == "eta 1:38"

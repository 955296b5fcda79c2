"""Running a grid of offline cells: in-process, or as Ray tasks on one or many machines.

A cell is a frozen dataclass (data kind, MOPO config, dataset paths, output folder) run by
:func:`run_cell`, a top-level function so Ray can ship it. Each cell writes its own folder and
:func:`~udg.experiments.offline.run_offline` returns a finished cell's stored result without
recomputing it, so a rerun of a grid only runs what is missing. Cells are deterministic given
their seed, so the local and the Ray executor give the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from udg.errors import UdgError, unknown_name

if TYPE_CHECKING:  # offline.py imports JAX; a grid's driver may not need it
    from udg.experiments.offline import OfflineConfig

EXECUTORS = ("local", "ray")
DATA_KINDS = ("udg", "random", "supervised")
"""Where a cell's datasets come from: stage 1's agents, uniformly random actions, or one SAC
agent trained on a known task."""


def cell_name(task: str, column: str, seed: int) -> str:
    """A cell's name (its key in results.json and its folder under the grid's root): made from
    its fields, never parsed back."""
    return f"{task}/{column}/seed{seed}"


@dataclass(frozen=True)
class Cell:
    """One (task, data, selection, seed) combination of a grid: MOPO on one kind of data.

    The task, the selection rule and the seed are those of ``config``, so they cannot disagree.
    """

    data: str
    """Kind of data, one of :data:`DATA_KINDS`."""
    config: OfflineConfig
    """The cell's offline run: task, selection rule, seed and MOPO settings."""
    datasets: tuple[str, ...]
    """Dataset folders the selection ranks."""
    out: str
    """The cell's output folder."""

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise unknown_name("data kind", self.data, DATA_KINDS)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def selection(self) -> str:
        return self.config.select

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def column(self) -> str:
        """The results table's column, e.g. ``udg-top1``."""
        return f"{self.data}-{self.selection}"

    @property
    def name(self) -> str:
        return cell_name(self.task, self.column, self.seed)


ModelEpochHook = Callable[[Cell, int, float], None]
"""``on_model_epoch(cell, epoch, holdout_mse)``: after each epoch of a cell's dynamics fit, with
the mean of the members' holdout MSE."""
EpochHook = Callable[[Cell, int, dict], None]
"""``on_epoch(cell, epoch, row)``: after each MOPO epoch of a cell, with the epoch's metrics."""


def run_cell(
    cell: Cell,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_model_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Run one cell (or return its stored result); the hooks follow each model and MOPO epoch."""
    from udg.experiments.offline import run_offline

    model_hook = None
    if on_model_epoch is not None:
        model_hook = lambda epoch, losses: on_model_epoch(epoch, float(losses.mean()))  # noqa: E731
    return run_offline(
        cell.config,
        [Path(p) for p in cell.datasets],
        Path(cell.out),
        on_epoch=on_epoch,
        on_model_epoch=model_hook,
    )


def run_cells(
    cells: Sequence[Cell],
    executor: str = "local",
    address: str | None = None,
    on_done: Callable[[Cell, dict], None] | None = None,
    on_epoch: EpochHook | None = None,
    on_model_epoch: ModelEpochHook | None = None,
) -> dict[str, dict]:
    """Run every cell; returns ``{cell name: result}``.

    ``on_done(cell, result)`` follows each finished cell, ``on_model_epoch`` and ``on_epoch``
    each epoch of a cell's model fit and MOPO training. Ray cells send their epochs through a
    queue that this process drains while it waits, so the hooks run here in both executors.
    """
    if executor not in EXECUTORS:
        raise UdgError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UdgError("cell names must be unique")
    if executor == "local":
        results = {}
        for cell in cells:
            hook = None if on_epoch is None else (lambda e, row, c=cell: on_epoch(c, e, row))
            model_hook = (
                None
                if on_model_epoch is None
                else (lambda e, mse, c=cell: on_model_epoch(c, e, mse))
            )
            results[cell.name] = run_cell(cell, hook, model_hook)
            if on_done is not None:
                on_done(cell, results[cell.name])
        return results
    return _run_with_ray(cells, address, on_done, on_epoch, on_model_epoch)


def run_cells_with_bar(
    cells: Sequence[Cell],
    bar,
    epochs: int,
    log: Callable[[str], None] = print,
    **run: str | None,
) -> dict[str, dict]:
    """:func:`run_cells` (``run``: executor, address) counting MOPO epochs on ``bar``.

    ``bar.update(n, **metrics)`` gets the epochs done over all cells (``epochs`` per cell, so the
    bar's total is ``len(cells) * epochs``); while a cell fits its dynamics model the count
    stays and the metrics show the model's epoch and holdout MSE. ``log`` gets a line per
    finished cell.
    """
    done = {c.name: 0 for c in cells}  # cells may run in parallel: count each one's epochs
    finished: list[str] = []

    def on_model_epoch(cell: Cell, epoch: int, mse: float) -> None:
        bar.update(sum(done.values()), cell=cell.name, model_epoch=epoch, model_mse=mse)

    def on_epoch(cell: Cell, epoch: int, row: dict) -> None:
        done[cell.name] = epoch
        metrics = {"cell": cell.name}
        if "eval_return" in row:
            metrics["ret"] = float(row["eval_return"])
        bar.update(sum(done.values()), **metrics)

    def on_done(cell: Cell, result: dict) -> None:
        done[cell.name] = epochs  # also a finished cell read back rather than rerun
        finished.append(cell.name)
        bar.update(sum(done.values()), cell=cell.name, ret=float(result["last_return"]))
        log(f"  [{len(finished)}/{len(cells)}] {cell.name}: return {result['last_return']:.1f}")

    return run_cells(
        cells, on_done=on_done, on_epoch=on_epoch, on_model_epoch=on_model_epoch, **run
    )


def _run_reporting(cell: Cell, queue) -> dict:
    """A Ray task: :func:`run_cell`, each epoch put on ``queue`` as (cell name, kind, epoch, data)."""
    return run_cell(
        cell,
        on_epoch=lambda e, row: queue.put((cell.name, "policy", e, row)),
        on_model_epoch=lambda e, mse: queue.put((cell.name, "model", e, mse)),
    )


def _run_with_ray(cells, address, on_done, on_epoch, on_model_epoch) -> dict[str, dict]:
    import ray
    from ray.util.queue import Queue

    started_here = not ray.is_initialized()
    if started_here:
        # Workers inherit the environment: keep each cell's JAX to its CPU share.
        env = {"env_vars": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}}
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=env,
                ignore_reinit_error=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UdgError(
                f"cannot start or reach Ray at {address or 'a local instance'}: "
                f"{str(err).splitlines()[0]}"
            ) from None
    try:
        by_name = {c.name: c for c in cells}
        reports = Queue(actor_options={"num_cpus": 0})

        def drain() -> None:
            count = reports.qsize()
            for name, kind, epoch, data in reports.get_nowait_batch(count) if count else []:
                if kind == "model" and on_model_epoch is not None:
                    on_model_epoch(by_name[name], epoch, data)
                elif kind == "policy" and on_epoch is not None:
                    on_epoch(by_name[name], epoch, data)

        remote = ray.remote(num_cpus=1)(_run_reporting)
        pending = {remote.remote(cell, reports): cell for cell in cells}
        results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            drain()
            for ref in done:
                cell = pending.pop(ref)
                results[cell.name] = ray.get(ref)
                if on_done is not None:
                    on_done(cell, results[cell.name])
        return {c.name: results[c.name] for c in cells}  # in the cells' order, as run locally
    finally:
        if started_here:
            ray.shutdown()

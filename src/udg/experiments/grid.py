"""Running a grid of offline cells: in-process, or as Ray tasks on one or many machines.

A cell is a plain dict (task, selection, seed, MOPO config, data paths, output folder) run by
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

from udg.errors import UdgError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Cell:
    """One (data, task, selection, seed) combination of a grid."""

    name: str
    """Unique name, also the cell's folder under the grid's root."""
    config: object
    """The :class:`~udg.experiments.offline.OfflineConfig` of the cell."""
    data: tuple[str, ...]
    """Dataset folders the selection ranks."""
    out: str
    """The cell's output folder."""


def run_cell(cell: Cell, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Run one cell (or return its stored result); ``on_epoch(epoch, row)`` after each epoch."""
    from udg.experiments.offline import run_offline

    return run_offline(cell.config, [Path(p) for p in cell.data], Path(cell.out), on_epoch=on_epoch)


def run_cells(
    cells: Sequence[Cell],
    executor: str = "local",
    address: str | None = None,
    on_done: Callable[[Cell, dict], None] | None = None,
    on_epoch: Callable[[Cell, int, dict], None] | None = None,
) -> dict[str, dict]:
    """Run every cell; returns ``{cell name: result}``.

    ``on_done(cell, result)`` follows each finished cell; ``on_epoch(cell, epoch, row)`` each
    MOPO epoch of a cell run in-process (the Ray executor reports finished cells only).
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
            results[cell.name] = run_cell(cell, hook)
            if on_done is not None:
                on_done(cell, results[cell.name])
        return results
    return _run_with_ray(cells, address, on_done)


def _run_with_ray(cells, address, on_done) -> dict[str, dict]:
    import ray

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
        remote = ray.remote(num_cpus=1)(run_cell)
        pending = {remote.remote(cell): cell for cell in cells}
        results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            results[cell.name] = ray.get(done[0])
            if on_done is not None:
                on_done(cell, results[cell.name])
        return results
    finally:
        if started_here:
            ray.shutdown()

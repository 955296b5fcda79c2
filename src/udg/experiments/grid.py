"""Running a grid of offline cells as populations: in-process, or as Ray tasks on many machines.

A cell is a frozen dataclass (data kind, offline config, dataset paths, output folder). Cells
with the same env, learner and settings form a *population* (:func:`populations`), trained as one
computation by :func:`run_batch`, a top-level function so Ray can ship it: for MOPO, one
dynamics model per distinct (data, seed) in the grid's ``models/`` folder, shared by every task
on that data; for every learner, every cell's policy on a leading cell axis. Each cell writes its own folder, and a finished
cell's stored result is read back, never recomputed, so a rerun of a grid only runs what is
missing. Cells are deterministic given their seed, alone or in any population, so both
executors and any population size give the same numbers (to float tolerance).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from udg.errors import UdgError, unknown_name

if TYPE_CHECKING:  # offline.py imports JAX; a grid's driver may not need it
    from udg.data.dataset import Dataset
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
    """One (task, data, selection, seed) combination of a grid: an offline learner (MOPO, or
    TD3+BC or IQL) on one kind of data.

    The task, the selection rule and the seed are those of ``config``, so they cannot disagree.
    """

    data: str
    """Kind of data, one of :data:`DATA_KINDS`."""
    config: OfflineConfig
    """The cell's offline run: task, selection rule, seed, learner and its settings."""
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


def populations(cells: Sequence[Cell], max_cells: int | None = None) -> list[list[Cell]]:
    """The cells grouped into populations that can train as one computation (same env, learner
    and settings), in the order of their first cell, each at most ``max_cells`` large."""
    from udg.experiments.offline import population_key

    if max_cells is not None and max_cells < 1:
        raise UdgError(f"a population needs at least 1 cell, got max_cells={max_cells}")
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(population_key(cell.config), []).append(cell)
    size = max_cells or len(cells) or 1
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def models_folder(work: str | os.PathLike[str]) -> Path:
    """Where a grid in ``work`` keeps its shared dynamics models, one file per model id."""
    return Path(work) / "models"


def run_batch(
    cells: Sequence[Cell],
    work: str,
    on_epoch: EpochHook | None = None,
    on_model_epoch: ModelEpochHook | None = None,
    loaded: dict[Path, Dataset] | None = None,
) -> list[dict]:
    """Train one population (or read back its finished cells); the results in ``cells``'
    order. ``work`` holds the grid's shared models (``models/``) and the population's
    checkpoint (``populations/<id>/``, the id made from the cells' folders); ``loaded``: the
    datasets read before, by folder."""
    from udg.experiments.offline import CellJob, run_population

    ident = hashlib.sha256("\n".join(sorted(c.out for c in cells)).encode()).hexdigest()[:16]
    folder = Path(work) / "populations" / ident
    folder.mkdir(parents=True, exist_ok=True)
    return run_population(
        [CellJob(config=c.config, data_paths=c.datasets, out=c.out) for c in cells],
        folder,
        model_dir=models_folder(work),
        on_model_epoch=None
        if on_model_epoch is None
        else lambda i, e, losses: on_model_epoch(cells[i], e, float(losses.mean())),
        on_epoch=None if on_epoch is None else lambda i, e, row: on_epoch(cells[i], e, row),
        loaded=loaded,
    )


def run_cells(
    cells: Sequence[Cell],
    work: str | os.PathLike[str],
    executor: str = "local",
    address: str | None = None,
    on_done: Callable[[Cell, dict], None] | None = None,
    on_epoch: EpochHook | None = None,
    on_model_epoch: ModelEpochHook | None = None,
    max_cells: int | None = None,
    loaded: dict[Path, Dataset] | None = None,
) -> dict[str, dict]:
    """Run every cell, population by population (:func:`populations`; ``max_cells=1`` runs
    them one by one); returns ``{cell name: result}`` in the cells' order. ``loaded``: the
    datasets read before, by folder, which the local executor's populations do not read again
    (and to which they add those they read).

    ``work`` is the grid's folder for shared models and checkpoints. ``on_done(cell, result)``
    follows each finished cell, ``on_model_epoch`` and ``on_epoch`` each epoch of a model fit
    and of a cell's MOPO training. Ray populations send their epochs through a queue that this
    process drains while it waits, so the hooks run here with both executors.
    """
    if executor not in EXECUTORS:
        raise UdgError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UdgError("cell names must be unique")
    batches = populations(cells, max_cells)
    work = str(work)
    if executor == "ray":
        results = _run_with_ray(batches, work, address, on_done, on_epoch, on_model_epoch)
        return {c.name: results[c.name] for c in cells}
    results = {}
    for batch in batches:
        for cell, result in zip(
            batch, run_batch(batch, work, on_epoch, on_model_epoch, loaded), strict=True
        ):
            results[cell.name] = result
            if on_done is not None:
                on_done(cell, result)
    return {c.name: results[c.name] for c in cells}


def run_cells_with_bar(
    cells: Sequence[Cell],
    bar,
    epochs: int,
    log: Callable[[str], None] = print,
    **run,
) -> dict[str, dict]:
    """:func:`run_cells` (``run``: work, executor, address, max_cells, loaded) counting MOPO
    epochs on ``bar``.

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


def _run_reporting(cells: list[Cell], work: str, queue) -> list[dict]:
    """A Ray task: :func:`run_batch`, each epoch put on ``queue`` as (cell name, kind, epoch,
    data)."""
    return run_batch(
        cells,
        work,
        on_epoch=lambda c, e, row: queue.put((c.name, "policy", e, row)),
        on_model_epoch=lambda c, e, mse: queue.put((c.name, "model", e, mse)),
    )


def _run_with_ray(batches, work, address, on_done, on_epoch, on_model_epoch) -> dict[str, dict]:
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
        by_name = {c.name: c for batch in batches for c in batch}
        reports = Queue(actor_options={"num_cpus": 0})

        def drain() -> None:
            count = reports.qsize()
            for name, kind, epoch, data in reports.get_nowait_batch(count) if count else []:
                if kind == "model" and on_model_epoch is not None:
                    on_model_epoch(by_name[name], epoch, data)
                elif kind == "policy" and on_epoch is not None:
                    on_epoch(by_name[name], epoch, data)

        remote = ray.remote(num_cpus=1)(_run_reporting)
        pending = {remote.remote(batch, work, reports): batch for batch in batches}
        results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            drain()
            for ref in done:
                batch = pending.pop(ref)
                for cell, result in zip(batch, ray.get(ref), strict=True):
                    results[cell.name] = result
                    if on_done is not None:
                        on_done(cell, result)
        return results
    finally:
        if started_here:
            ray.shutdown()

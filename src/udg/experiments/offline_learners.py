"""Stage 2 with a model-free learner (``--algo td3bc|iql``): train on the selected data alone,
evaluate in the real environment.

The counterpart of MOPO's population in :mod:`udg.experiments.offline`, which checks, prepares
(relabel, rank, select) and reads back these cells as it does its own and hands the prepared
cells to :func:`run_cells`. No dynamics model is fitted and no rollout is made: every cell's
learner (:mod:`udg.offline.learners`) goes on the device with a leading cell axis beside one
flat copy of the cells' distinct selections, and :func:`udg.offline.learners.epoch_kernel` runs
an epoch of every cell as one computation; every few epochs every cell's deterministic policy
plays in vectorised real environments (:func:`udg.evaluation.evaluate.evaluate_groups`, as
MOPO's cells do). Each cell writes MOPO's files but the model: ``policy.msgpack``,
``learning_curve.csv/.png``, ``result.json`` (MOPO's schema, its model fields null with the
reason), ``manifest.json``, TensorBoard curves.

Random streams of the cell's seed, as MOPO's: the learner's initialisation from ``init``, epoch
``e``'s batches and update noise from ``updates`` at ``e``, the evaluation's resets from
``evaluation`` at ``e``. A cell therefore gets the same numbers alone or in any population (to
float tolerance), and a run resumed from its last checkpoint ends with the result of an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.errors import UdgError
from udg.experiments import offline, runs, tensorboard
from udg.experiments.offline import CHECKPOINT, CURVE, CellJob, PreparedCell, kernel_epoch
from udg.offline import ALGO_LABELS, learners, model_free
from udg.offline.learners import ModelFreeConfig
from udg.offline.mopo import RealData
from udg.seeds import jax_key

TIMED = ("epochs", "evaluation")
"""The parts of a population's run whose wall time the result reports."""


@dataclass
class Population:
    """Where a population of model-free cells stands: what the functions below advance."""

    cells: list[PreparedCell]
    config: ModelFreeConfig
    state: learners.CellState
    """The cells' learners and data slices on the device, a leading cell axis on every leaf."""
    data: RealData
    kernel: Callable
    act: Callable
    checkpoint: Path
    reward_scales: list[float]
    """Per cell, the factor its task rewards were multiplied by."""
    epoch: int = 0
    history: list[list[dict]] = field(default_factory=list)
    """Per cell, one row per evaluation: epoch, eval_return, eval_std, the learner's
    curve metrics."""
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMED, 0.0))
    boards: list | None = None
    """Per cell, its TensorBoard writer (see :func:`udg.experiments.offline.write_boards`)."""
    board_rows: list[int] = field(default_factory=list)
    resumed: bool = False


def reward_scale(cell: PreparedCell) -> float:
    """The factor the cell's task rewards are trained at (:class:`ModelFreeConfig`'s
    ``reward_scale``): 1, or the IQL paper's return-range normalisation of the selected data."""
    if cell.config.learner.reward_scale == "none":
        return 1.0
    data = cell.data
    returns = data.episode_returns(cell.rewards)  # [E]
    longest = int(np.max(np.diff(data.episode_starts)))
    try:
        return model_free.return_range_scale(returns, max_episode_steps=longest)
    except ValueError as err:
        where = f"{cell.task.name}'s selection {cell.selected.name}"
        raise UdgError(f"reward_scale return_range on {where}: {err}") from None


def _observation_stats(cells: list[PreparedCell]) -> model_free.ObservationStats | None:
    """Each cell's observation mean and std over its own selection, ``[C, o]``, or None when the
    learner does not normalise."""
    if not cells[0].config.learner.learner.normalize_observations:
        return None
    stats = [model_free.observation_stats(c.data.observations) for c in cells]
    return model_free.ObservationStats(
        mean=jnp.stack([s.mean for s in stats]), std=jnp.stack([s.std for s in stats])
    )


def start_population(
    cells: list[PreparedCell], scales: Sequence[float], checkpoint: Path
) -> Population:
    """Put the cells on the device: one flat copy of every distinct selection, each cell's
    (scaled) rewards, fresh learners from each seed's ``init`` stream."""
    config = cells[0].config.learner
    learner = learners.get_learner(config.algo)
    rewards = [(c.rewards * s).astype(np.float32) for c, s in zip(cells, scales, strict=True)]
    data, slices = offline.shared_data(cells, rewards)
    keys = jnp.stack([jax_key(c.config.seed, "init") for c in cells])
    first = cells[0].data
    states = learner.create_members(
        keys, first.obs_dim, first.act_dim, config.learner, _observation_stats(cells)
    )
    return Population(
        cells=cells,
        config=config,
        state=offline._placed(learners.CellState(learner=states, **slices)),
        data=data,
        kernel=learners.epoch_kernel(config),
        act=learners.act_kernel(config),
        checkpoint=checkpoint,
        reward_scales=list(scales),
        history=[[] for _ in cells],
    )


def save_checkpoint(pop: Population) -> None:
    """Write the population's learners and epoch, and each cell's curve so far (its
    TensorBoard events first: killed before the checkpoint, a resume purges them)."""
    offline.write_boards(pop)
    runs.save_state(
        pop.checkpoint.parent,
        pop.checkpoint.name,
        learners=np.frombuffer(sac.to_bytes(pop.state.learner), np.uint8),
        epoch=np.array(pop.epoch),
        cells=np.array([c.out.name for c in pop.cells]),
    )
    for cell, rows in zip(pop.cells, pop.history, strict=True):
        runs.write_rows(cell.out, CURVE, rows)


def load_checkpoint(pop: Population) -> None:
    """Restore what :func:`save_checkpoint` wrote, if anything (each curve's rows up to it)."""
    saved = runs.load_state(pop.checkpoint.parent, pop.checkpoint.name)
    if saved is None:
        return
    try:
        restored = sac.from_bytes(pop.state.learner, saved["learners"].tobytes())
    except (KeyError, ValueError) as err:
        raise UdgError(
            f"{pop.checkpoint} does not fit this run ({err}); it may come from an older udg: "
            "delete it to train the learners from the start"
        ) from None
    pop.state = offline._placed(pop.state.replace(learner=restored))
    pop.epoch = int(saved["epoch"])
    pop.history = [
        runs.read_rows(c.out, CURVE, keep=lambda row: row["epoch"] <= pop.epoch) for c in pop.cells
    ]
    pop.resumed = True


def evaluate_population(pop: Population) -> np.ndarray:
    """Every cell's deterministic policy in the real environment (:func:`offline.evaluate_cells`);
    ``[C, episodes]``."""
    states = pop.state.learner
    return offline.evaluate_cells(
        pop.cells, pop.config.eval_episodes, pop.epoch, lambda g: pop.act(states, g)
    )


def run_epoch(pop: Population) -> list[dict]:
    """One epoch of every cell (one kernel call), then an evaluation when one is due; each
    cell's row (its learner's epoch metrics, the evaluation's)."""
    config = pop.config
    keys = jnp.stack([jax_key(c.config.seed, "updates", pop.epoch) for c in pop.cells])
    return kernel_epoch(pop, keys, config.eval_every, config.epochs, evaluate_population)


def train(pop: Population, on_epoch: Callable[[int, int, dict], None] | None = None) -> None:
    """Run the remaining epochs, recording evaluations and checkpointing as due;
    ``on_epoch(cell index, epoch, row)`` follows each cell's epoch."""
    kept = learners.get_learner(pop.config.algo).curve_metrics
    offline.train_epochs(pop, run_epoch, save_checkpoint, pop.config, kept, on_epoch)


def cell_result(pop: Population, c: int, wall: float) -> dict:
    """The result of finished cell ``c``: MOPO's schema (:func:`offline.offline_result`), its
    model's fields null, ``null_reasons`` saying why, and the reward scale trained at."""
    cell = pop.cells[c]
    label = ALGO_LABELS[pop.config.algo]
    return {
        **offline.cell_result(cell, pop.history[c]),
        "reward": None,
        "model": None,
        "dynamics": None,
        "null_reasons": {
            "reward": f"{label} makes no model steps; it trains on the data's task rewards",
            "model": f"{label} is model-free: no dynamics model is fitted",
            "dynamics": f"{label} is model-free: no dynamics model is fitted",
        },
        "reward_scale": pop.reward_scales[c],
        "updates": pop.epoch * pop.config.steps_per_epoch,
        **offline.population_time(pop, wall),
    }


def run_cells(
    jobs: Sequence[CellJob],
    todo: list[int],
    prepared: list[PreparedCell],
    work: Path,
    start: float,
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> list[dict]:
    """Train the prepared cells ``todo`` of ``jobs`` (checked, not yet claimed) as one
    population, their checkpoint in ``work``; their results in ``todo``'s order. ``start``:
    when the population's work began (its wall time counts from there)."""
    scales = [reward_scale(cell) for cell in prepared]  # refused before a folder is claimed
    offline.claim_cells(jobs, todo, prepared)
    pop = start_population(prepared, scales, Path(work) / CHECKPOINT)
    load_checkpoint(pop)
    train(pop, on_epoch)
    for board in pop.boards or []:
        tensorboard.close(board)
    wall = time.perf_counter() - start
    return offline.finish_cells(pop, pop.state.learner, cell_result, wall)

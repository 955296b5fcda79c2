"""Stage 2 runner: relabel, rank and select data for a task, train MOPO, evaluate.

The imperative shell of ``udg offline`` and of every experiment's grid. A *population* is a set
of offline cells (task, selection, seed) with the same env, learner and settings, trained as one
computation. Cells of a model-free learner (``--algo td3bc|iql``) are prepared, claimed and
finished here and trained by :mod:`udg.experiments.offline_learners`; MOPO's cells: :func:`run_population` prepares each cell (its folder, its relabelled selection,
its ranking), fits or loads one dynamics model per distinct (data, seed) — a task's reward is a
function of the predicted columns, so every task on the same data shares the model — puts the
cells' data, models, policies and model buffers on the device with a leading cell axis, and
runs :func:`udg.offline.mopo.epoch_kernel` epoch after epoch, evaluating every cell's
deterministic policy in vectorised real environments every few epochs. ``udg offline`` is a
population of one.

Every random draw comes from a named stream of :mod:`udg.seeds` of the cell's seed: the policy's
initialisation from ``init``, the model's fit from ``dynamics``, and in epoch ``e`` the rollout
starts and keys from ``rollouts`` at ``e`` and the batches and update noise from ``updates`` at
``e``. A cell therefore gets the same numbers alone or in any population (to float tolerance).
Checkpoints hold the whole population (policies, buffers, evaluation history), so an
interrupted run resumes where it stopped and ends with the result of an uninterrupted one; a
finished cell is read back, never recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.data.collect import timed
from udg.data.dataset import Dataset
from udg.data.minari_io import data_fingerprint, env_shapes, find_datasets, load_datasets
from udg.data.relabel import Ranked, parse_selection, select
from udg.envs.registry import get_env_spec, observed_columns, predicted_columns
from udg.envs.tasks import TaskSpec, get_task
from udg.errors import ConfigError, UdgError
from udg.evaluation.evaluate import evaluate_groups
from udg.experiments import runs, tensorboard
from udg.limits import check_memory
from udg.offline import ALGO_LABELS, dynamics, mopo
from udg.offline.learners import ModelFreeConfig
from udg.seeds import jax_key

MODEL_METRICS = "model_metrics.json"
"""The dynamics fit's metrics, written beside ``model.msgpack``."""
MODEL, POLICY = "model.msgpack", "policy.msgpack"
CHECKPOINT, CURVE = "checkpoint.npz", "learning_curve.csv"
"""The run folder's dynamics model, final policy, checkpoint and evaluation rows."""
TIMED = ("dynamics", "epochs", "evaluation")
"""The parts of a population's run whose wall time the result reports."""


@dataclass(frozen=True)
class OfflineConfig:
    """One offline-RL cell: a task, a selection rule over datasets, MOPO's settings, a seed."""

    task: str
    """Downstream task; the data is relabelled with its reward."""
    select: str = "top1"
    """Selection rule: top1 (UDG's), top2, top:K or all."""
    seed: int = 0
    """Seed of the model, the policy and the evaluation."""
    eval_episode_length: int | None = None
    """Time limit of evaluation episodes (None: the env's default)."""
    mopo: mopo.MOPOConfig = field(default_factory=mopo.MOPOConfig)
    """MOPO, SAC and dynamics settings (used when ``learner`` is None)."""
    learner: ModelFreeConfig | None = None
    """A model-free learner (TD3+BC or IQL) and its run's schedule, trained instead of MOPO;
    None: MOPO, the paper's learner."""

    @property
    def algo(self) -> str:
        """The cell's learner: ``mopo``, ``td3bc`` or ``iql``."""
        return "mopo" if self.learner is None else self.learner.algo

    @property
    def schedule(self) -> mopo.MOPOConfig | ModelFreeConfig:
        """The learner's settings that every learner has: ``epochs``, ``steps_per_epoch``,
        ``eval_every``, ``eval_episodes``, ``checkpoint_every``, ``observation_dims``."""
        return self.mopo if self.learner is None else self.learner

    def __post_init__(self) -> None:
        # Checked here, before a folder or a model exists, not when the first evaluation runs.
        if self.eval_episode_length is not None and self.eval_episode_length < 1:
            raise ConfigError(
                f"eval_episode_length must be at least 1 (or None), got {self.eval_episode_length}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class CellJob:
    """What to run for one cell: its config, the datasets it selects from, its folder."""

    config: OfflineConfig
    data_paths: tuple[str, ...]
    out: str
    datasets: tuple[Dataset, ...] | None = None
    """The datasets already loaded (in ``data_paths``' order), or None to load them."""


@dataclass
class PreparedCell:
    """A cell ready to train: its selection relabelled and cut to what the model sees."""

    job: CellJob
    task: TaskSpec
    data: Dataset
    """The selected data, cut to the observation entries the model and the policy see."""
    rewards: np.ndarray
    """The data's rewards under the task, ``[N]`` float32."""
    selected: Dataset
    ranking: list[Ranked]
    sources: tuple[str, ...]
    """What the selection is made of (dataset folders, or names): with the seed, the model's
    identity."""
    run_config: dict

    @property
    def config(self) -> OfflineConfig:
        return self.job.config

    @property
    def out(self) -> Path:
        return Path(self.job.out)


@dataclass
class Population:
    """Where a population of cells stands: what the functions below read and advance."""

    cells: list[PreparedCell]
    mopo: mopo.MOPOConfig
    state: mopo.CellState
    """The cells on the device, every leaf with a leading cell axis."""
    data: mopo.RealData
    kernel: Callable
    checkpoint: Path
    models: list[dict]
    """Per cell: the model's file and its fit's metrics."""
    epoch: int = 0
    history: list[list[dict]] = field(default_factory=list)
    """Per cell, one row per evaluation: epoch, eval_return, eval_std, q, uncertainty."""
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMED, 0.0))
    boards: list | None = None
    """Per cell, its TensorBoard writer (None each without tensorboardX); opened at the first
    checkpoint."""
    board_rows: list[int] = field(default_factory=list)
    """Per cell, the rows of ``history`` its board holds."""
    resumed: bool = False
    """Whether the population resumed from a checkpoint."""


def observation_view(data: Dataset, dims: int) -> Dataset:
    """``data`` with only the first ``dims`` entries of its (next) observations.

    Task rewards already relabelled stay as they are: they were computed from the full columns.
    """
    if not 1 <= dims <= data.obs_dim:
        raise UdgError(
            f"observation_dims {dims} is not within 1..{data.obs_dim}, the data's observation size"
        )
    if dims == data.obs_dim:
        return data
    return dataclasses.replace(
        data,
        observations=np.ascontiguousarray(data.observations[:, :dims]),
        next_observations=np.ascontiguousarray(data.next_observations[:, :dims]),
    )


def population_key(config: OfflineConfig) -> tuple:
    """Cells with equal keys can share a population (same env, learner, networks and
    schedule)."""
    return (get_task(config.task).env, config.algo, config.schedule, config.eval_episode_length)


# --- preparing cells ---------------------------------------------------------------------------


def stored_result(job: CellJob, claim: bool = False) -> dict | None:
    """The cell's stored result when its folder holds it finished, else None; a folder that
    holds something else is refused. Nothing is written, unless ``claim``: then the folder is
    made and locked for this process (:func:`udg.experiments.runs.open_run`)."""
    config = job.config
    get_task(config.task)  # an unknown task fails before the folder is made
    parse_selection(config.select)
    run_config = _job_run_config(job)
    # A run made before udg recorded the data's fingerprint is taken to hold the data as it is.
    defaults = RUN_DEFAULTS | {"data_fingerprint": run_config["data_fingerprint"]}
    check = runs.open_run if claim else runs.check_run
    manifest = check(Path(job.out), "offline", run_config, defaults)
    if manifest is not None and manifest.get("status") == "complete":
        result = manifest.get("result")
        if not isinstance(result, dict):
            raise UdgError(f"{job.out}/{runs.MANIFEST} is finished but holds no result")
        return result
    return None


RUN_DEFAULTS = {"algo": "mopo"}
"""What a run's manifest lacks when it was made before udg had other learners."""


def _job_run_config(job: CellJob) -> dict:
    """The manifest's config of ``job``'s run: :func:`_run_config` of its data's folders, and
    the fingerprint of its data's files (replaced datasets at the same paths are another run,
    never a finished one to return again)."""
    sources = sorted(str(Path(p).resolve()) for p in job.data_paths)
    fingerprint = data_fingerprint(job.data_paths)
    return _run_config(job.config, sources) | {"data_fingerprint": fingerprint}


def _run_config(config: OfflineConfig, sources: list[str]) -> dict:
    """The manifest's config: the learner's name and settings (MOPO's, or the model-free
    learner's: never both), task, selection, seed, and the data's folders."""
    fields = runs.config_dict(config)
    del fields["learner" if config.learner is None else "mopo"]
    return {**fields, "algo": config.algo, "data": sources}


def prepare_cell(job: CellJob, loaded: dict[Path, Dataset] | None = None) -> PreparedCell:
    """Relabel, rank and select the cell's data (``loaded``: the datasets read so far, by
    folder, shared by a population's cells)."""
    config = job.config
    task = get_task(config.task)
    if task.terminated is None and config.algo == "mopo":
        raise UdgError(f"env {task.env} has no termination rule; MOPO's rollouts need one")
    if job.datasets is not None:
        datasets = list(job.datasets)
        names = [d.name for d in datasets]
    else:
        found = find_datasets(job.data_paths)
        datasets = load_datasets(found, loaded)
        names = [str(Path(p).resolve()) for p in found]
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the data is of env {datasets[0].env}"
        )
    # In the order of their names: a selection keeps its datasets in the order given, so the
    # same datasets (``sources``) are the same rows in every cell, whatever ranked them; a
    # population stores them once, beside each cell's own rewards, and fits them one model.
    order = sorted(range(len(datasets)), key=names.__getitem__)
    datasets, names = [datasets[i] for i in order], [names[i] for i in order]
    selected, ranking = select(datasets, task, config.select)
    k = parse_selection(config.select) or len(ranking)
    sources = tuple(sorted(names[r.index] for r in ranking[:k]))
    dims = config.schedule.observation_dims or get_env_spec(task.env).offline_observation_dims
    data = observation_view(selected, dims or selected.obs_dim)
    run_config = _job_run_config(job)
    cell = PreparedCell(
        job=job,
        task=task,
        data=data,
        rewards=data.task_rewards[task.name].astype(np.float32),
        selected=selected,
        ranking=ranking,
        sources=sources,
        run_config=run_config,
    )
    if config.algo == "mopo":
        _reward_fn([cell])  # a task no model can reward is refused before any fit
    return cell


# --- dynamics models ---------------------------------------------------------------------------


def model_outputs(cell: PreparedCell) -> tuple[str, ...]:
    """The columns the cell's model predicts after the observation's change."""
    if cell.config.mopo.reward == "learned":
        return ("reward",)
    return predicted_columns(get_env_spec(cell.task.env), cell.data.obs_dim)


def model_id(cell: PreparedCell) -> str:
    """The identity of the model a cell needs: its data, seed, outputs, inputs and settings.
    Cells with the same id share one fit (every task on a dataset, with computed rewards)."""
    m = cell.config.mopo
    identity = {
        "sources": cell.sources,
        "seed": cell.config.seed,
        "outputs": model_outputs(cell),
        "task": cell.task.name if m.reward == "learned" else None,
        "obs_dim": cell.data.obs_dim,
        "dynamics": runs.config_dict(m.dynamics),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _model_targets(cell: PreparedCell) -> np.ndarray:
    """The extra columns the model learns, ``[N, k]``: the task's reward, or the info columns
    the observation lacks (as stored after each step)."""
    if cell.config.mopo.reward == "learned":
        return cell.rewards[:, None]
    columns, n = cell.data.columns(), cell.data.num_transitions
    targets = [np.asarray(columns[c], np.float32).reshape(n) for c in model_outputs(cell)]
    return np.stack(targets, axis=-1) if targets else np.zeros((n, 0), np.float32)


def fit_or_load_model(
    cell: PreparedCell,
    path: Path,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[dynamics.DynamicsModel, dict]:
    """The model at ``path`` when one is there (checked against the cell's data), else fitted
    on the cell's data from the seed's ``dynamics`` stream and saved there with its metrics."""
    outputs = model_outputs(cell)
    if path.exists():
        try:
            model = dynamics.load_model(path, expected_env_name=cell.task.env)
        except (ValueError, OSError) as err:
            raise UdgError(f"cannot use dynamics model {err}") from None
        if (model.obs_dim, model.act_dim) != (cell.data.obs_dim, cell.data.act_dim):
            raise UdgError(f"dynamics model {path} does not match the data's shapes")
        if model.outputs != outputs:
            raise UdgError(
                f"dynamics model {path} predicts {list(model.outputs)}, but reward="
                f"{cell.config.mopo.reward} needs {list(outputs)}"
            )
        return model, model_metrics(path)
    return ModelFit.of(cell, path).run(on_epoch)


@dataclass(frozen=True)
class ModelFit:
    """A dynamics model's fit on a cell's data, saved to ``path`` with its metrics: arrays and
    settings only, so that another process can run it (the pipeline's data workers)."""

    path: Path
    config: dynamics.DynamicsConfig
    seed: int
    """The seed whose ``dynamics`` stream the fit draws from."""
    env: str
    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    targets: np.ndarray
    """The extra columns the model predicts, ``[N, k]`` (:func:`model_outputs`)."""
    outputs: tuple[str, ...]
    fitted_in: str = "stage 2"
    """Where the fit runs, as its metrics record it: ``stage 2`` (a population's fit, counted
    in its time) or ``data worker`` (the pipeline's, before stage 2)."""

    @classmethod
    def of(cls, cell: PreparedCell, path: Path, fitted_in: str = "stage 2") -> ModelFit:
        d = cell.data
        return cls(
            path=Path(path),
            config=cell.config.mopo.dynamics,
            seed=cell.config.seed,
            env=cell.task.env,
            observations=d.observations,
            actions=d.actions,
            next_observations=d.next_observations,
            targets=_model_targets(cell),
            outputs=model_outputs(cell),
            fitted_in=fitted_in,
        )

    @property
    def name(self) -> str:
        return f"model {self.path.stem}"

    def run(
        self, on_epoch: Callable[[int, np.ndarray], None] | None = None
    ) -> tuple[dynamics.DynamicsModel, dict]:
        """Fit, save and return the model and its metrics (the fit's own, its wall time and
        where it ran)."""
        start = time.perf_counter()
        try:
            model, metrics = dynamics.train_dynamics(
                self.config,
                jax_key(self.seed, "dynamics"),
                self.observations,
                self.actions,
                self.next_observations,
                self.targets,
                on_epoch=on_epoch,
                outputs=self.outputs,
            )
        except ValueError as err:
            raise UdgError(f"cannot fit the dynamics model: {err}") from None
        metrics = metrics | {
            "fit_seconds": time.perf_counter() - start,
            "fitted_in": self.fitted_in,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dynamics.save_model(model, self.path, self.env)
        runs.atomic_write_json(_metrics_path(self.path), metrics)
        return model, metrics


def fit_models(
    missing: dict[Path, tuple[PreparedCell, Callable | None]],
) -> dict[Path, tuple[dynamics.DynamicsModel, dict]]:
    """Fit and save the models ``missing`` (path -> a cell on the model's data and its
    ``on_epoch`` hook), side by side, one per local device at a time.

    A fit's networks are small (a demo model: 7 members of 3 x 64): one device's share of the
    cores runs it about as fast as all of them, so fits on separate devices (one per core on a
    CPU, :func:`udg.devices.use_cpu_cores`) finish sooner together. A fit is the same
    computation on any device, so its model does not depend on where it ran.
    """
    devices = jax.local_devices()
    if len(missing) <= 1 or len(devices) == 1:
        return {path: fit_or_load_model(cell, path, hook) for path, (cell, hook) in missing.items()}
    free: queue.SimpleQueue = queue.SimpleQueue()
    for device in devices:
        free.put(device)

    def fit(path: Path, cell: PreparedCell, hook: Callable | None):
        device = free.get()  # as many threads as devices: one is always free
        try:
            with jax.default_device(device):
                return fit_or_load_model(cell, path, hook)
        finally:
            free.put(device)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        futures = {path: pool.submit(fit, path, *item) for path, item in missing.items()}
        return {path: future.result() for path, future in futures.items()}


def shared_model_file(cell: PreparedCell, model_dir: Path) -> Path:
    """Where a population keeps the model ``cell`` needs: ``model_dir`` by its model id."""
    return model_dir / f"{model_id(cell)}.msgpack"


def model_metrics(model: Path) -> dict:
    """A saved model's fit metrics (empty when none were kept)."""
    path = _metrics_path(Path(model))
    return runs.read_json(path) if path.exists() else {}


def _metrics_path(model: Path) -> Path:
    """Where a model's fit metrics lie: ``model_metrics.json`` beside a run's
    ``model.msgpack``, ``<id>.metrics.json`` beside a shared ``<id>.msgpack``."""
    return model.with_name(MODEL_METRICS if model.name == MODEL else f"{model.stem}.metrics.json")


# --- the population ----------------------------------------------------------------------------


def _stack(trees: Sequence):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _placed(cells: mopo.CellState) -> mopo.CellState:
    """The population's cell axis laid over the devices as the kernel leaves it
    (:func:`udg.devices.member_mesh`), so that the first epoch compiles for the same
    placement as every later one."""
    from jax.sharding import NamedSharding, PartitionSpec

    from udg.devices import MEMBER_AXIS, member_mesh

    mesh = member_mesh(int(cells.data_size.shape[0]))
    if mesh is None:
        return cells
    return jax.device_put(cells, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def shared_data(
    cells: list[PreparedCell], rewards: Sequence[np.ndarray] | None = None
) -> tuple[mopo.RealData, dict[str, jax.Array]]:
    """The cells' data on the device, one flat copy of every distinct selection and each cell's
    rewards (``rewards``, default the cells' own), and where each cell's rows are:
    ``data_start``, ``data_size``, ``reward_start``, ``[C]`` each."""
    shared: dict[tuple, Dataset] = {}  # each distinct selection's rows, in first-seen order
    for cell in cells:
        kept = shared.setdefault(cell.sources, cell.data)
        if not np.array_equal(kept.observations, cell.data.observations):
            # Each cell's rewards follow its own rows: shared rows must be in one order.
            raise AssertionError(f"cells on {cell.sources} hold their rows in different orders")
    pieces = list(shared.values())
    offsets = np.cumsum([0] + [p.num_transitions for p in pieces])[:-1]
    starts = dict(zip(shared, offsets.tolist(), strict=True))
    rewards = [c.rewards for c in cells] if rewards is None else rewards
    reward_starts = np.cumsum([0] + [len(r) for r in rewards])[:-1]
    data = mopo.RealData(
        observations=jnp.asarray(np.concatenate([p.observations for p in pieces]), jnp.float32),
        actions=jnp.asarray(np.concatenate([p.actions for p in pieces]), jnp.float32),
        next_observations=jnp.asarray(
            np.concatenate([p.next_observations for p in pieces]), jnp.float32
        ),
        terminations=jnp.asarray(np.concatenate([p.terminations for p in pieces]), jnp.float32),
        rewards=jnp.asarray(np.concatenate(rewards), jnp.float32),
    )
    slices = {
        "data_start": jnp.asarray([starts[c.sources] for c in cells], jnp.int32),
        "data_size": jnp.asarray([c.data.num_transitions for c in cells], jnp.int32),
        "reward_start": jnp.asarray(reward_starts, jnp.int32),
    }
    return data, slices


def start_population(
    cells: list[PreparedCell], models: list[dynamics.DynamicsModel], checkpoint: Path
) -> Population:
    """Put the cells on the device: one flat copy of every distinct selection, each cell's
    rewards, fresh policies from each seed's ``init`` stream, empty model buffers."""
    m = cells[0].config.mopo
    first = cells[0].data
    data, slices = shared_data(cells)
    keys = jnp.stack([jax_key(c.config.seed, "init") for c in cells])
    agents = sac.create_members(m.sac, keys, first.obs_dim, first.act_dim)
    buffer = mopo.ModelBuffer.empty(m.buffer_capacity, first.obs_dim, first.act_dim)
    state = _placed(
        mopo.CellState(
            agent=agents,
            model=_stack(models),
            buffer=_stack([buffer] * len(cells)),
            **slices,
            task_index=jnp.asarray(_task_indices(cells), jnp.int32),
        )
    )
    spec = mopo.EpochSpec(config=m, terminated=cells[0].task.terminated, reward=_reward_fn(cells))
    return Population(
        cells=cells,
        mopo=m,
        state=state,
        data=data,
        kernel=mopo.epoch_kernel(spec),
        checkpoint=checkpoint,
        models=[],
        history=[[] for _ in cells],
    )


def _distinct_tasks(cells: list[PreparedCell]) -> list[TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for cell in cells:
        tasks.setdefault(cell.task.name, cell.task)
    return list(tasks.values())


def _task_indices(cells: list[PreparedCell]) -> list[int]:
    names = [t.name for t in _distinct_tasks(cells)]
    return [names.index(c.task.name) for c in cells]


def _reward_fn(cells: list[PreparedCell]) -> mopo.RewardFn:
    if cells[0].config.mopo.reward == "learned":
        return mopo.learned_reward
    observed = observed_columns(get_env_spec(cells[0].task.env), cells[0].data.obs_dim)
    try:
        return mopo.computed_reward(_distinct_tasks(cells), model_outputs(cells[0]), observed)
    except ValueError as err:
        raise UdgError(f"cannot compute rewards in model rollouts: {err}") from None


def save_checkpoint(pop: Population) -> None:
    """Write the population's policies, buffers and epoch, and each cell's curve so far (its
    TensorBoard events first: killed before the checkpoint, a resume purges them)."""
    write_boards(pop)
    arrays = {
        "agents": np.frombuffer(sac.to_bytes(pop.state.agent), np.uint8),
        "epoch": np.array(pop.epoch),
        "cells": np.array([c.out.name for c in pop.cells]),
    }
    buffer = jax.device_get(pop.state.buffer)
    arrays |= {f"buffer/{f.name}": getattr(buffer, f.name) for f in dataclasses.fields(buffer)}
    runs.save_state(pop.checkpoint.parent, pop.checkpoint.name, **arrays)
    for cell, rows in zip(pop.cells, pop.history, strict=True):
        runs.write_rows(cell.out, CURVE, rows)


def write_boards(pop: Population) -> None:
    """Each cell's evaluations since the last checkpoint as TensorBoard scalars at their epoch
    (with tensorboardX). A resumed run's writers purge every event of the killed run and write
    the curve again from its start: a killed writer may have lost events it had queued."""
    if pop.boards is None:
        purge = 0 if pop.resumed else None
        pop.boards = [tensorboard.open_log(c.out / "tensorboard", purge) for c in pop.cells]
        pop.board_rows = [0] * len(pop.cells)
    for c, (board, rows) in enumerate(zip(pop.boards, pop.history, strict=True)):
        tensorboard.write_rows(board, rows[pop.board_rows[c] :], "epoch")
        pop.board_rows[c] = len(rows)


def load_checkpoint(pop: Population) -> None:
    """Restore what :func:`save_checkpoint` wrote, if anything (each curve's rows up to it)."""
    saved = runs.load_state(pop.checkpoint.parent, pop.checkpoint.name)
    if saved is None:
        return
    try:
        buffer = pop.state.buffer
        restored = {
            f.name: jnp.asarray(saved[f"buffer/{f.name}"], getattr(buffer, f.name).dtype)
            for f in dataclasses.fields(buffer)
        }
        for name, value in restored.items():
            if value.shape != getattr(buffer, name).shape:
                raise ValueError(f"buffer {name} has shape {value.shape}")
        agents = sac.from_bytes(pop.state.agent, saved["agents"].tobytes())
    except (KeyError, ValueError) as err:
        raise UdgError(
            f"{pop.checkpoint} does not fit this run ({err}); it may come from an older udg: "
            "delete it to train the policies from the start"
        ) from None
    pop.state = _placed(pop.state.replace(agent=agents, buffer=buffer.replace(**restored)))
    pop.epoch = int(saved["epoch"])
    pop.history = [
        runs.read_rows(c.out, CURVE, keep=lambda row: row["epoch"] <= pop.epoch) for c in pop.cells
    ]
    pop.resumed = True


def _epoch_keys(pop: Population) -> dict[str, jax.Array]:
    return {
        stream: jnp.stack([jax_key(c.config.seed, stream, pop.epoch) for c in pop.cells])
        for stream in ("rollouts", "updates")
    }


def run_epoch(pop: Population) -> list[dict]:
    """One policy epoch of every cell (one kernel call), then an evaluation when one is due;
    returns each cell's row (its last refresh's and its updates' metrics, the evaluation's)."""
    m = pop.mopo
    return kernel_epoch(pop, _epoch_keys(pop), m.eval_every, m.epochs, evaluate_population)


def kernel_epoch(pop, keys, eval_every: int, epochs: int, evaluate: Callable) -> list[dict]:
    """The epoch of any learner's population (``pop``: its ``kernel``, ``state``, ``data``,
    ``epoch``, ``cells`` and ``timings``): one kernel call with ``keys``, then, every
    ``eval_every`` epochs and at the last, ``evaluate(pop) -> [C, episodes]`` returns; each
    cell's row of metrics."""
    with timed(pop.timings, "epochs"):
        pop.state, metrics = pop.kernel(pop.state, pop.data, keys)
        metrics = jax.device_get(metrics)  # [C] each; waits for the epoch
    pop.epoch += 1
    rows = [
        {"epoch": pop.epoch} | {k: float(v[c]) for k, v in metrics.items()}
        for c in range(len(pop.cells))
    ]
    if pop.epoch % eval_every == 0 or pop.epoch == epochs:
        with timed(pop.timings, "evaluation"):
            returns = evaluate(pop)  # [C, episodes]
        for row, r in zip(rows, returns, strict=True):
            row |= {"eval_return": float(r.mean()), "eval_std": float(r.std())}
    return rows


@jax.jit
def _greedy(agents: sac.SAC, observations: jax.Array) -> jax.Array:
    return sac.greedy_actions(agents, observations)


def evaluate_population(pop: Population) -> np.ndarray:
    """Every cell's deterministic policy in the real environment, all cells' episodes stepped
    in lockstep; each cell's resets from its seed's ``evaluation`` stream at the current epoch,
    its returns under its own task. ``[C, episodes]``."""
    agents = pop.state.agent
    return evaluate_cells(
        pop.cells, pop.mopo.eval_episodes, pop.epoch, lambda g: _greedy(agents, g)
    )


def evaluate_cells(
    cells: Sequence[PreparedCell], episodes: int, epoch: int, act: Callable
) -> np.ndarray:
    """Every cell's deterministic policy (``act(observations [C, episodes, o]) -> [C,
    episodes, a]``) in the real environment, all cells' episodes stepped in lockstep; each
    cell's resets from its seed's ``evaluation`` stream at ``epoch``, its returns under its own
    task. ``[C, episodes]``."""
    dims = cells[0].data.obs_dim

    def policy(obs: np.ndarray) -> np.ndarray:
        grouped = jnp.asarray(obs[:, :dims].reshape(len(cells), episodes, dims))
        return np.asarray(act(grouped)).reshape(len(obs), -1)

    return evaluate_groups(
        [c.task for c in cells],
        policy,
        episodes,
        [c.config.seed for c in cells],
        max_episode_steps=cells[0].config.eval_episode_length,
        index=(epoch,),
    )


def train(pop: Population, on_epoch: Callable[[int, int, dict], None] | None = None) -> None:
    """Run the remaining epochs, recording evaluations and checkpointing as due;
    ``on_epoch(cell index, epoch, row)`` follows each cell's epoch."""
    m = pop.mopo
    train_epochs(pop, run_epoch, save_checkpoint, m, ("q", "uncertainty"), on_epoch)


def train_epochs(
    pop,
    run_epoch: Callable,
    save_checkpoint: Callable,
    schedule,
    kept: Sequence[str],
    on_epoch: Callable[[int, int, dict], None] | None,
) -> None:
    """Any learner's population (``pop.epoch``, ``pop.history``) trained to ``schedule.epochs``
    by ``run_epoch(pop) -> rows``: each evaluation, with the metrics ``kept``, joins the cell's
    curve, ``on_epoch`` follows each cell's epoch, and ``save_checkpoint(pop)`` runs every
    ``schedule.checkpoint_every`` epochs and at the last."""
    while pop.epoch < schedule.epochs:
        rows = run_epoch(pop)
        for c, row in enumerate(rows):
            if "eval_return" in row:
                pop.history[c].append(
                    {k: row[k] for k in ("epoch", "eval_return", "eval_std")}
                    | {k: row.get(k, float("nan")) for k in kept}
                )
            if on_epoch is not None:
                on_epoch(c, pop.epoch, row)
        if pop.epoch % schedule.checkpoint_every == 0 or pop.epoch == schedule.epochs:
            save_checkpoint(pop)


# --- results -----------------------------------------------------------------------------------


def cell_result(cell: PreparedCell, history: list[dict]) -> dict:
    """What every learner's result says of a finished cell: its data (ranking, selection, the
    data's own return) and its evaluations (last, best)."""
    returns = np.array([h["eval_return"] for h in history])  # [evaluations]
    best = int(np.argmax(returns))
    selected, task = cell.selected, cell.task
    return {
        "algo": cell.config.algo,
        "task": task.name,
        "select": cell.config.select,
        "seed": cell.config.seed,
        "ranking": [dataclasses.asdict(r) for r in cell.ranking],
        "selected": selected.name,
        "selected_transitions": selected.num_transitions,
        "observation_dims": cell.data.obs_dim,
        "data_mean_return": float(
            np.mean(selected.episode_returns(selected.task_rewards[task.name]))
        ),
        "last_return": float(returns[-1]),
        "last_std": float(history[-1]["eval_std"]),
        "best_return": float(returns[best]),
        "best_epoch": int(history[best]["epoch"]),
    }


def offline_result(pop: Population, c: int, wall: float) -> dict:
    """The result of finished cell ``c`` (``result.json`` and the manifest's ``result``)."""
    cell = pop.cells[c]
    return {
        **cell_result(cell, pop.history[c]),
        "reward": cell.config.mopo.reward,
        "model": pop.models[c]["path"],
        "dynamics": pop.models[c]["metrics"],
        **population_time(pop, wall),
    }


def population_time(pop, wall: float) -> dict:
    """A cell's share of its population's ``wall`` time (shared evenly: summed over the cells,
    the stage's time) and the population's own timings, for its result."""
    return {
        "wall_seconds": wall / len(pop.cells),
        "population": {"cells": len(pop.cells), "wall_seconds": wall, "timings": pop.timings},
    }


def finish_cells(
    pop, members, result: Callable[[Any, int, float], dict], wall: float
) -> list[dict]:
    """Write every cell's policy (``members``: the population's per-cell pytree), curve plot,
    result (``result(pop, c, wall)``) and complete manifest; their results. The policies are
    copied to the host once and sliced there: a slice of a device array costs a dispatch per
    cell and leaf (seconds over a 90-cell population's), and ``[c, ...]`` keeps a scalar
    leaf an array, so the files are those of device slices."""
    host = jax.device_get(members)
    return [
        write_finished(
            pop.cells[c],
            pop.history[c],
            jax.tree.map(lambda leaf, c=c: leaf[c, ...], host),
            result(pop, c, wall),
        )
        for c in range(len(pop.cells))
    ]


def write_finished(cell: PreparedCell, history: list[dict], policy, result: dict) -> dict:
    """Write a finished cell's ``policy`` (a pytree), curve plot, ``result`` and complete
    manifest; returns ``result``."""
    runs.atomic_write_bytes(cell.out / POLICY, sac.to_bytes(policy))
    plot_curve(cell, history)
    runs.atomic_write_json(cell.out / "result.json", result)
    runs.write_manifest(cell.out, "offline", "complete", cell.run_config, result=result)
    return result


def run_population(
    jobs: Sequence[CellJob],
    work: Path,
    model_dir: Path | None = None,
    on_prepared: Callable[[int, PreparedCell], None] | None = None,
    on_model_epoch: Callable[[int, int, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, int, dict], None] | None = None,
    model_path: Path | None = None,
    loaded: dict[Path, Dataset] | None = None,
) -> list[dict]:
    """Run (or resume, or read back) the cells ``jobs`` as one population; their results.

    ``work`` holds the population's checkpoint, ``model_dir`` the shared dynamics models (one
    file per model id; default ``work``). The hooks get the cell's index in ``jobs``:
    ``on_prepared`` its selection (for a ranking), ``on_model_epoch`` each epoch of a model
    fit (of the first cell needing it), ``on_epoch`` each policy epoch. ``model_path`` makes
    every cell use that saved model instead of fitting one. ``loaded`` holds the datasets read
    before, by folder (those read now are added).
    """
    results: dict[int, dict] = {}
    for i, job in enumerate(jobs):  # nothing is written until every cell has been checked
        done = stored_result(job)
        if done is not None:
            results[i] = done
    todo = [i for i in range(len(jobs)) if i not in results]
    if not todo:
        return [results[i] for i in range(len(jobs))]
    keys = {population_key(jobs[i].config) for i in todo}
    if len(keys) > 1:
        raise UdgError("the cells of one population need the same env, learner and settings")
    algo = jobs[todo[0]].config.algo
    if algo != "mopo" and model_path is not None:
        raise UdgError(f"--model is a dynamics model for MOPO; --algo {algo} fits none")
    start = time.perf_counter()
    if algo == "mopo":
        check_population_memory([jobs[i].config for i in todo])  # before any data is read
    prepared, loaded = [], {} if loaded is None else loaded
    for i in todo:
        prepared.append(prepare_cell(jobs[i], loaded))
        if on_prepared is not None:
            on_prepared(i, prepared[-1])
    index = dict(enumerate(todo))
    epoch_hook = None if on_epoch is None else lambda c, e, row: on_epoch(index[c], e, row)
    if algo != "mopo":
        from udg.experiments import offline_learners

        done = offline_learners.run_cells(jobs, todo, prepared, Path(work), start, epoch_hook)
        results.update(zip(todo, done, strict=True))
        return [results[i] for i in range(len(jobs))]
    model_dir = Path(model_dir) if model_dir is not None else Path(work)
    timings = dict.fromkeys(TIMED, 0.0)
    paths = [_model_file(cell, jobs, model_dir, model_path) for cell in prepared]
    fitted = {}
    for cell, path in zip(prepared, paths, strict=True):  # a given model is checked up front
        if path.exists() and path not in fitted:
            fitted[path] = fit_or_load_model(cell, path)
    claim_cells(jobs, todo, prepared)  # checked: now the folders are claimed
    missing: dict[Path, tuple[PreparedCell, Callable | None]] = {}
    for i, cell, path in zip(todo, prepared, paths, strict=True):
        if path not in fitted and path not in missing:  # fitted on its first cell's data
            hook = (
                None
                if on_model_epoch is None
                else (lambda e, loss, i=i: on_model_epoch(i, e, loss))
            )
            missing[path] = (cell, hook)
    with timed(timings, "dynamics"):
        fitted |= fit_models(missing)
    models, infos = [], []
    for path in paths:
        model, metrics = fitted[path]
        models.append(model)
        infos.append({"path": str(path), "metrics": metrics})
    pop = start_population(prepared, models, Path(work) / CHECKPOINT)
    pop.models, pop.timings = infos, timings
    load_checkpoint(pop)
    train(pop, epoch_hook)
    for board in pop.boards or []:
        tensorboard.close(board)
    wall = time.perf_counter() - start
    results.update(zip(todo, finish_cells(pop, pop.state.agent, offline_result, wall), strict=True))
    return [results[i] for i in range(len(jobs))]


def claim_cells(jobs: Sequence[CellJob], todo: list[int], prepared: list[PreparedCell]) -> None:
    """Claim the folders of the cells ``todo`` of ``jobs`` (checked, prepared) for this
    process and mark their runs as running."""
    for i, cell in zip(todo, prepared, strict=True):
        if stored_result(jobs[i], claim=True) is not None:
            raise UdgError(f"another udg process finished {jobs[i].out} meanwhile; rerun")
        runs.write_manifest(cell.out, "offline", "running", cell.run_config)


def _mlp_floats(dims: Sequence[int]) -> int:
    return sum(i * o + o for i, o in zip(dims[:-1], dims[1:], strict=False))


def run_disk_bytes(config: OfflineConfig) -> int:
    """A lower estimate of the disk one offline run writes: its policy and its checkpoint
    (the learner's networks, targets and two Adam moments each) and, for MOPO, the dynamics
    model and the model buffer in the checkpoint (float32)."""
    (obs,), (act,) = env_shapes(get_task(config.task).env)
    if config.learner is not None:
        obs = min(config.learner.observation_dims or obs, obs)
        hidden = config.learner.learner.hidden_dims
    else:
        obs = min(config.mopo.observation_dims or obs, obs)
        hidden = config.mopo.sac.hidden_dims
    networks = _mlp_floats([obs, *hidden, 2 * act]) + 2 * _mlp_floats([obs + act, *hidden, 1])
    need = 4 * networks * (1 + 5)  # the policy file; the checkpoint: networks, targets, Adam
    if config.learner is None:
        m = config.mopo
        model = _mlp_floats([obs + act, *m.dynamics.hidden_dims, 2 * (obs + 1)])
        need += 4 * m.dynamics.ensemble_size * model  # the model file
        need += m.buffer_capacity * (2 * obs + act + 2) * 4  # the buffer, checkpointed
    return need


def check_population_memory(configs: Sequence[OfflineConfig]) -> None:
    """Refuse MOPO cells whose model buffers and rollouts, all on the device at once, exceed
    the machine's memory (:meth:`MOPOConfig.memory_bytes`)."""
    need = 0
    for config in configs:
        (obs_dim,), (act_dim,) = env_shapes(get_task(config.task).env)
        dims = min(config.mopo.observation_dims or obs_dim, obs_dim)
        need += config.mopo.memory_bytes(dims, act_dim)
    m = configs[0].mopo
    check_memory(
        need,
        f"{len(configs)} MOPO cell(s) with rollouts of {m.rollout_batch_size} x "
        f"{m.rollout_length} steps kept for {m.model_retain_epochs} epochs",
        "use a shorter --rollout-length, or fewer cells at once (--population-cells)",
    )


def _model_file(
    cell: PreparedCell, jobs: Sequence[CellJob], model_dir: Path, model_path: Path | None
) -> Path:
    """Where the cell's dynamics model is read from or saved: ``model_path`` when given (it
    must exist), a lone run's own folder, or the population's model folder by model id."""
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no such file"
            raise UdgError(f"--model {model_path}: {what}; give a saved dynamics model file")
        return path
    if len(jobs) == 1 and model_dir == Path(jobs[0].out):
        return model_dir / MODEL  # a lone run keeps its model in its folder
    return shared_model_file(cell, model_dir)


def model_fits(results: Sequence[dict]) -> int:
    """How many distinct dynamics models the cells of ``results`` used (model-free cells
    use none)."""
    return len({r["model"] for r in results if r.get("model") is not None})


def run_offline(
    config: OfflineConfig,
    data_paths: Sequence[Path] | None,
    out: Path,
    datasets: Sequence[Dataset] | None = None,
    on_ranking: Callable[[list], None] | None = None,
    on_model_epoch: Callable[[int, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    model_path: Path | None = None,
) -> dict:
    """Run (or resume, or just return the result of) one offline cell in ``out``: a
    population of one. ``model_path`` reuses a saved dynamics model instead of fitting one."""
    job = CellJob(
        config=config,
        data_paths=tuple(str(p) for p in data_paths or ()),
        out=str(out),
        datasets=tuple(datasets) if datasets is not None else None,
    )
    (result,) = run_population(
        [job],
        Path(out),
        on_prepared=None if on_ranking is None else lambda i, cell: on_ranking(cell.ranking),
        on_model_epoch=None
        if on_model_epoch is None
        else lambda i, e, loss: on_model_epoch(e, loss),
        on_epoch=None if on_epoch is None else lambda i, e, row: on_epoch(e, row),
        model_path=model_path,
    )
    return result


def plot_curve(cell: PreparedCell, history: list[dict]) -> None:
    """The cell's ``learning_curve.png``: evaluation return against updates, its std over the
    episodes shaded."""
    from udg.experiments.plots import plot_learning_curves

    steps = np.array([h["epoch"] for h in history]) * cell.config.schedule.steps_per_epoch
    name = "evaluation return (band: std over episodes)"
    plot_learning_curves(
        steps,
        {name: np.array([h["eval_return"] for h in history])},
        f"return on {cell.task.name}",
        cell.out / "learning_curve.png",
        title=f"{ALGO_LABELS[cell.config.algo]} on {cell.config.select} data, {cell.task.name}",
        spreads={name: np.array([h["eval_std"] for h in history])},
    )

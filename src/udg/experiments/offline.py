"""Stage 2 runner: relabel, rank and select data for a task, train MOPO, evaluate.

The imperative shell of ``udg offline``: it loads the datasets, relabels them for the task,
prints and records the ranking, keeps the selection, fits the dynamics ensemble (or loads the
one a previous attempt saved), then alternates model-rollout refreshes and SAC epochs on mixed
batches, evaluating the deterministic policy in the real environment every few epochs.

The run is an :class:`OfflineState` advanced by the short functions below, each one step of the
loop. Every random draw comes from a named stream of :mod:`udg.seeds`: the policy's
initialisation from ``init``, the model's fit from ``dynamics``, and in epoch ``e`` the batch and
rollout-start indices from ``replay`` at ``e``, the rollouts' keys from ``rollouts`` at ``e`` and
the updates' keys from ``updates`` at ``e`` (each folded with the call's index). Checkpoints hold
the policy, the model buffer and the evaluation history, so an interrupted run resumes where it
stopped and ends with the result of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.agents.replay import FIELDS, PopulationReplay
from udg.data.dataset import Dataset
from udg.data.minari_io import load_datasets
from udg.data.relabel import select
from udg.envs.registry import get_env_spec
from udg.envs.tasks import TaskSpec, get_task
from udg.errors import UdgError
from udg.evaluation.evaluate import evaluate
from udg.experiments import runs
from udg.offline import dynamics, mopo
from udg.seeds import jax_key, numpy_rng

MODEL_METRICS = "model_metrics.json"
"""The dynamics fit's metrics, written beside ``model.msgpack``."""
MODEL, POLICY = "model.msgpack", "policy.msgpack"
CHECKPOINT, CURVE = "checkpoint.npz", "learning_curve.csv"
"""The run folder's dynamics model, final policy, checkpoint and evaluation rows."""
TIMED = ("dynamics", "rollouts", "updates", "evaluation")
"""The parts of a run whose wall time the result reports."""


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
    """MOPO, SAC and dynamics settings."""


@dataclass
class OfflineState:
    """Where one offline run stands: what the functions below read and advance in place.

    The model and the policy see the first ``data.obs_dim`` observation entries (the config's
    ``observation_dims``, else the env's default); evaluation steps the real environment and
    slices its observations the same way, while the task reward reads the full columns.
    """

    config: OfflineConfig
    task: TaskSpec
    data: Dataset
    """The selected data, cut to the observation entries the model and the policy see."""
    rewards: np.ndarray
    """The data's rewards under the task, ``[N]`` float32."""
    out: Path
    agent: sac.SAC
    buffer: PopulationReplay
    """The model buffer: one ring (member 0) of the last ``model_retain_epochs`` refreshes."""
    model: dynamics.DynamicsModel | None = None
    dynamics_metrics: dict = field(default_factory=dict)
    epoch: int = 0
    """Policy epochs done."""
    history: list[dict] = field(default_factory=list)
    """One row per evaluation: epoch, eval_return, eval_std, q, uncertainty."""
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMED, 0.0))
    """Seconds spent in each of :data:`TIMED` by this process."""


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


@contextmanager
def _timed(timings: dict[str, float], part: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[part] += time.perf_counter() - start


def start_run(config: OfflineConfig, data: Dataset, task: TaskSpec, out: Path) -> OfflineState:
    """A fresh run of ``config`` on the selected ``data`` (relabelled for ``task``) in ``out``."""
    if task.terminated is None:
        raise UdgError(f"env {task.env} has no termination rule; MOPO's rollouts need one")
    m = config.mopo
    dims = m.observation_dims or get_env_spec(task.env).offline_observation_dims or data.obs_dim
    data = observation_view(data, dims)
    capacity = m.model_retain_epochs * m.rollout_batch_size * m.rollout_length
    return OfflineState(
        config=config,
        task=task,
        data=data,
        rewards=data.task_rewards[task.name].astype(np.float32),
        out=Path(out),
        agent=sac.SAC.create(m.sac, jax_key(config.seed, "init"), data.obs_dim, data.act_dim),
        buffer=PopulationReplay(1, capacity, data.obs_dim, data.act_dim),
    )


# --- dynamics ----------------------------------------------------------------------------


def fit_model(
    state: OfflineState,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
    model_path: Path | None = None,
) -> None:
    """Load the dynamics model (given, or saved by an earlier attempt) or fit and save it."""
    source = Path(model_path) if model_path is not None else state.out / MODEL
    if source.exists():
        state.model, state.dynamics_metrics = _load_model(state, source)
        return
    if model_path is not None:
        raise UdgError(f"no such dynamics model file: {model_path}")
    d = state.data
    with _timed(state.timings, "dynamics"):
        try:
            state.model, state.dynamics_metrics = dynamics.train_dynamics(
                state.config.mopo.dynamics,
                jax_key(state.config.seed, "dynamics"),
                d.observations,
                d.actions,
                d.next_observations,
                state.rewards,
                on_epoch=on_epoch,
            )
        except ValueError as err:
            raise UdgError(f"cannot fit the dynamics model: {err}") from None
    dynamics.save_model(state.model, state.out / MODEL, state.task.env)
    runs.atomic_write_json(state.out / MODEL_METRICS, state.dynamics_metrics)


def _load_model(state: OfflineState, source: Path) -> tuple[dynamics.DynamicsModel, dict]:
    """The model saved at ``source`` and its fit's metrics (so a resumed run still reports
    them; none when the file has no metrics beside it)."""
    try:
        model = dynamics.load_model(source, expected_env_name=state.task.env)
    except (ValueError, OSError) as err:
        raise UdgError(f"cannot use dynamics model {err}") from None
    if (model.obs_dim, model.act_dim) != (state.data.obs_dim, state.data.act_dim):
        raise UdgError(f"dynamics model {source} does not match the data's shapes")
    metrics = source.with_name(MODEL_METRICS)
    return model, runs.read_json(metrics) if metrics.exists() else {}


# --- checkpoints -------------------------------------------------------------------------


def save_checkpoint(state: OfflineState) -> None:
    """Write the policy, the epoch, the model buffer and the learning curve so far."""
    buffer = {f"buffer/{k}": v for k, v in state.buffer.state_dict().items()}
    agent = np.frombuffer(sac.to_bytes(state.agent), np.uint8)
    runs.save_state(state.out, CHECKPOINT, agent=agent, epoch=np.array(state.epoch), **buffer)
    runs.write_rows(state.out, CURVE, state.history)


def load_checkpoint(state: OfflineState) -> None:
    """Restore what :func:`save_checkpoint` wrote, if anything (the curve's rows up to it)."""
    saved = runs.load_state(state.out, CHECKPOINT)
    if saved is None:
        return
    try:
        state.buffer.load_state_dict(
            {k.removeprefix("buffer/"): v for k, v in saved.items() if k.startswith("buffer/")}
        )
        state.agent = sac.from_bytes(state.agent, saved["agent"].tobytes())
    except (KeyError, ValueError) as err:
        raise UdgError(
            f"{state.out / CHECKPOINT} does not fit this run ({err}); it may come from an older "
            "udg: delete it to train the policy from the start"
        ) from None
    state.epoch = int(saved["epoch"])
    state.history = runs.read_rows(state.out, CURVE, keep=lambda row: row["epoch"] <= state.epoch)


# --- policy epochs -----------------------------------------------------------------------


def refresh_due(step: int, num_updates: int, every: int) -> bool:
    """Whether a multiple of ``every`` falls within updates ``step .. step + num_updates - 1``."""
    return step % every == 0 or (step + num_updates - 1) // every > step // every


def refresh_model_buffer(state: OfflineState, key: jax.Array, rng: np.random.Generator) -> dict:
    """Roll the model out from dataset states with the current policy; add the valid steps to
    the model buffer and return their mean reward, uncertainty and valid share."""
    m = state.config.mopo
    starts = rng.integers(0, state.data.num_transitions, m.rollout_batch_size)  # [R]
    rollouts = mopo.jit_rollout(
        state.agent,
        state.model,
        key,
        jnp.asarray(state.data.observations[starts]),
        m.rollout_length,
        m.penalty,
        m.penalty_coef,
        state.task.terminated,
    )
    rollouts = jax.device_get(rollouts)  # [h, R, ...]
    valid = rollouts["valid"].reshape(-1)  # [h * R]
    steps = {k: v.reshape(-1, *v.shape[2:])[valid] for k, v in rollouts.items()}  # [n, ...]
    state.buffer.add(0, *(steps[f] for f in FIELDS))
    return {
        "model_reward": float(steps["raw_rewards"].mean()),
        "uncertainty": float(steps["uncertainty"].mean()),
        "rollout_valid": float(valid.mean()),
    }


def mixed_batches(state: OfflineState, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` SAC batches ``[n, B, ...]``: in each, ``real_ratio`` of the rows (the first ones)
    from the data and the rest from the model buffer; all from the data while it is empty."""
    m, d = state.config.mopo, state.data
    batch = m.sac.batch_size
    model_rows = batch - int(round(batch * m.real_ratio)) if state.buffer.sizes[0] else 0
    real = rng.integers(0, d.num_transitions, (n, batch - model_rows))  # [n, B_real]
    columns = {
        "observations": d.observations[real],
        "actions": d.actions[real],
        "rewards": state.rewards[real],
        "next_observations": d.next_observations[real],
        "terminations": d.terminations[real].astype(np.float32),
    }
    if model_rows == 0:
        return columns
    model = state.buffer.sample(rng, model_rows, n)  # [1, n, B_model, ...]
    return {k: np.concatenate([columns[k], model[k][0]], axis=1) for k in FIELDS}


def run_epoch(state: OfflineState) -> dict:
    """One policy epoch: ``steps_per_epoch`` SAC updates in jitted calls, a model-buffer refresh
    before each call that reaches a multiple of ``rollout_freq``, an evaluation when one is due.
    Returns the epoch's row (its last refresh's and update's metrics, the evaluation's)."""
    m, seed, epoch = state.config.mopo, state.config.seed, state.epoch
    rng = numpy_rng(seed, "replay", epoch)
    rollout_key, update_key = jax_key(seed, "rollouts", epoch), jax_key(seed, "updates", epoch)
    row: dict = {"epoch": epoch + 1}
    for call, begin in enumerate(range(0, m.steps_per_epoch, m.updates_per_call)):
        n = min(m.updates_per_call, m.steps_per_epoch - begin)
        if refresh_due(epoch * m.steps_per_epoch + begin, n, m.rollout_freq):
            with _timed(state.timings, "rollouts"):
                row |= refresh_model_buffer(state, jax.random.fold_in(rollout_key, call), rng)
        with _timed(state.timings, "updates"):
            batches = mixed_batches(state, rng, n)
            key = jax.random.fold_in(update_key, call)
            state.agent, metrics = mopo.policy_updates(state.agent, batches, key)
    # Updates run asynchronously (overlapping the next batch's sampling): wait for the last
    # one inside the clock so that the time shares add up.
    with _timed(state.timings, "updates"):
        jax.block_until_ready(state.agent)
    row |= {k: float(v) for k, v in metrics.items() if k in ("q", "critic_loss", "temperature")}
    state.epoch += 1
    if state.epoch % m.eval_every == 0 or state.epoch == m.epochs:
        with _timed(state.timings, "evaluation"):
            returns = evaluate_policy(state)  # [episodes]
        row |= {"eval_return": float(returns.mean()), "eval_std": float(returns.std())}
    return row


def evaluate_policy(state: OfflineState) -> np.ndarray:
    """Returns of the deterministic policy in the real environment, from the evaluation stream
    at the current epoch."""
    agent, dims = state.agent, state.data.obs_dim
    return evaluate(
        state.task,
        lambda obs: np.asarray(sac.jit_greedy_actions_single(agent, jnp.asarray(obs[:, :dims]))),
        state.config.mopo.eval_episodes,
        seed=state.config.seed,
        max_episode_steps=state.config.eval_episode_length,
        index=(state.epoch,),
    )


def train_policy(state: OfflineState, on_epoch: Callable[[int, dict], None] | None = None) -> None:
    """Run the remaining policy epochs, recording evaluations and checkpointing as due."""
    m = state.config.mopo
    while state.epoch < m.epochs:
        row = run_epoch(state)
        if "eval_return" in row:
            state.history.append(
                {k: row[k] for k in ("epoch", "eval_return", "eval_std")}
                | {k: row.get(k, float("nan")) for k in ("q", "uncertainty")}
            )
        if on_epoch is not None:
            on_epoch(state.epoch, row)
        if state.epoch % m.checkpoint_every == 0 or state.epoch == m.epochs:
            save_checkpoint(state)


# --- the run -----------------------------------------------------------------------------


def offline_result(state: OfflineState, ranking, selected: Dataset, wall: float) -> dict:
    """The result of a finished run (``result.json`` and the manifest's ``result``)."""
    history, task = state.history, state.task
    returns = np.array([h["eval_return"] for h in history])  # [evaluations]
    best = int(np.argmax(returns))
    return {
        "task": task.name,
        "select": state.config.select,
        "seed": state.config.seed,
        "ranking": [dataclasses.asdict(r) for r in ranking],
        "selected": selected.name,
        "selected_transitions": selected.num_transitions,
        "observation_dims": state.data.obs_dim,
        "data_mean_return": float(
            np.mean(selected.episode_returns(selected.task_rewards[task.name]))
        ),
        "last_return": float(returns[-1]),
        "last_std": float(history[-1]["eval_std"]),
        "best_return": float(returns[best]),
        "best_epoch": int(history[best]["epoch"]),
        "dynamics": state.dynamics_metrics,
        "wall_seconds": wall,
        "timings": state.timings,
    }


def select_data(
    task: TaskSpec,
    rule: str,
    data_paths: Sequence[Path] | None,
    datasets: Sequence[Dataset] | None = None,
) -> tuple[Dataset, list]:
    """The datasets (given, or loaded from ``data_paths``) relabelled for ``task``: the
    selection by ``rule`` and the ranking."""
    if datasets is None:
        datasets = load_datasets(data_paths or [])
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the data is of env {datasets[0].env}"
        )
    return select(datasets, task, rule)


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
    """Run (or resume, or just return the result of) one offline cell in ``out``.

    ``model_path`` reuses a saved dynamics model instead of fitting one.
    """
    task = get_task(config.task)
    out = Path(out)
    sources = sorted(str(Path(p).resolve()) for p in data_paths or [])
    run_config = {**runs.config_dict(config), "data": sources}
    manifest = runs.open_run(out, "offline", run_config)
    if manifest is not None and manifest.get("status") == "complete":
        return manifest["result"]
    start = time.perf_counter()
    selected, ranking = select_data(task, config.select, data_paths, datasets)
    if on_ranking is not None:
        on_ranking(ranking)
    runs.write_manifest(out, "offline", "running", run_config)
    state = start_run(config, selected, task, out)
    fit_model(state, on_model_epoch, model_path)
    load_checkpoint(state)
    train_policy(state, on_epoch)
    runs.atomic_write_bytes(out / POLICY, sac.to_bytes(state.agent))
    result = offline_result(state, ranking, selected, time.perf_counter() - start)
    _plot_curve(state)
    runs.atomic_write_json(out / "result.json", result)
    runs.write_manifest(out, "offline", "complete", run_config, result=result)
    return result


def _plot_curve(state: OfflineState) -> None:
    from udg.experiments.plots import plot_learning_curves

    history = state.history
    steps = np.array([h["epoch"] for h in history]) * state.config.mopo.steps_per_epoch
    name = "evaluation return (band: std over episodes)"
    plot_learning_curves(
        steps,
        {name: np.array([h["eval_return"] for h in history])},
        f"return on {state.task.name}",
        state.out / "learning_curve.png",
        title=f"MOPO on {state.config.select} data, {state.task.name}",
        spreads={name: np.array([h["eval_std"] for h in history])},
    )

"""Stage 2 runner: relabel, rank and select data for a task, train MOPO, evaluate.

The imperative shell of ``udg offline``: it loads the datasets, relabels them for the task,
prints and records the ranking, keeps the selection, fits the dynamics ensemble (or loads the
one a previous attempt saved), then alternates model-rollout refreshes and SAC epochs on mixed
batches, evaluating the deterministic policy in the real environment every few epochs.
Randomness of epoch ``e`` comes from ``(seed, e)`` alone and checkpoints hold the policy, the
model buffer and the evaluation history, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.data.dataset import Dataset
from udg.data.minari_io import load_datasets
from udg.data.relabel import select
from udg.envs.registry import get_env_spec
from udg.envs.tasks import TaskSpec, get_task
from udg.errors import UdgError
from udg.evaluation.evaluate import evaluate
from udg.experiments.runs import (
    MANIFEST,
    atomic_savez,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    config_dict,
    git_revision,
    load_npz,
    machine_description,
    open_run,
    read_csv_rows,
    read_json,
)
from udg.offline import dynamics, mopo

MODEL_METRICS = "model_metrics.json"
"""The dynamics fit's metrics, written beside ``model.msgpack``."""


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


class _ModelBuffer:
    """FIFO of model transitions (the last ``model_retain_epochs`` rollout batches)."""

    FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = capacity
        self.data = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, act_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
            "terminations": np.zeros(capacity, np.float32),
        }
        self.size = 0
        self.pointer = 0

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        n = len(transitions["rewards"])
        slots = (self.pointer + np.arange(n)) % self.capacity
        for key in self.FIELDS:
            self.data[key][slots] = transitions[key]
        self.pointer = int((self.pointer + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def state(self) -> dict[str, np.ndarray]:
        return {
            **{f"buffer/{k}": v[: self.size] for k, v in self.data.items()},
            "buffer_pointer": np.array(self.pointer),
        }

    def load(self, state: dict[str, np.ndarray]) -> None:
        size = len(state["buffer/rewards"])
        for key in self.FIELDS:
            self.data[key][:size] = state[f"buffer/{key}"]
        self.size, self.pointer = size, int(state["buffer_pointer"])


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


class OfflineRun:
    """One ``udg offline`` run in a folder.

    The model and the policy see the first ``observation_dims`` observation entries (the config's,
    else the env's default); evaluation steps the real environment and slices its observations
    the same way, while the task reward reads the full columns.
    """

    def __init__(self, config: OfflineConfig, data: Dataset, task: TaskSpec, out: Path):
        if task.terminated is None:
            raise UdgError(f"env {task.env} has no termination rule; MOPO's rollouts need one")
        m = config.mopo
        self.obs_dims = (
            m.observation_dims or get_env_spec(task.env).offline_observation_dims or data.obs_dim
        )
        data = observation_view(data, self.obs_dims)
        self.config, self.data, self.task, self.out = config, data, task, Path(out)
        key = jax.random.key(config.seed)
        self.dyn_key, agent_key, self.run_key = jax.random.split(key, 3)
        self.agent = sac.SAC.create(m.sac, agent_key, data.obs_dim, data.act_dim)
        capacity = m.model_retain_epochs * m.rollout_batch_size * m.rollout_length
        self.buffer = _ModelBuffer(capacity, data.obs_dim, data.act_dim)
        self.rewards = data.task_rewards[task.name].astype(np.float32)
        self.epoch = 0
        self.history: list[dict] = []
        self.model: dynamics.DynamicsModel | None = None
        self.dynamics_metrics: dict = {}
        self.wall = {"dynamics": 0.0, "rollouts": 0.0, "updates": 0.0, "evaluation": 0.0}

    # --- dynamics ----------------------------------------------------------------------

    def fit_model(
        self,
        on_epoch: Callable[[int, np.ndarray], None] | None = None,
        model_path: Path | None = None,
    ) -> None:
        """Load the dynamics model (given, or saved by an earlier attempt) or fit it."""
        path = self.out / "model.msgpack"
        source = model_path if model_path is not None else path
        if Path(source).exists():
            try:
                self.model = dynamics.load_model(source, expected_env_name=self.task.env)
            except (ValueError, OSError) as err:
                raise UdgError(f"cannot use dynamics model {err}") from None
            if (self.model.obs_dim, self.model.act_dim) != (self.data.obs_dim, self.data.act_dim):
                raise UdgError(f"dynamics model {source} does not match the data's shapes")
            metrics = Path(source).with_name(MODEL_METRICS)
            if metrics.exists():  # the fit's metrics, so a resumed run still reports them
                self.dynamics_metrics = read_json(metrics)
            return
        if model_path is not None:
            raise UdgError(f"no such dynamics model file: {model_path}")
        start = time.perf_counter()
        d = self.data
        try:
            self.model, self.dynamics_metrics = dynamics.train_dynamics(
                self.config.mopo.dynamics,
                self.dyn_key,
                d.observations,
                d.actions,
                d.next_observations,
                self.rewards,
                on_epoch=on_epoch,
            )
        except ValueError as err:
            raise UdgError(f"cannot fit the dynamics model: {err}") from None
        self.wall["dynamics"] += time.perf_counter() - start
        dynamics.save_model(self.model, path, self.task.env)
        atomic_write_json(self.out / MODEL_METRICS, self.dynamics_metrics)

    # --- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        atomic_savez(
            self.out / "checkpoint.npz",
            agent=np.frombuffer(sac.to_bytes(self.agent), np.uint8),
            epoch=np.array(self.epoch),
            **self.buffer.state(),
        )
        self._write_curve()

    def load_checkpoint(self) -> None:
        path = self.out / "checkpoint.npz"
        if not path.exists():
            return
        state = load_npz(path)
        self.agent = sac.from_bytes(self.agent, state["agent"].tobytes())
        self.epoch = int(state["epoch"])
        self.buffer.load(state)
        curve = self.out / "learning_curve.csv"
        if curve.exists():
            self.history = [r for r in read_csv_rows(curve) if r["epoch"] <= self.epoch]

    def _write_curve(self) -> None:
        if self.history:
            atomic_write_csv(self.out / "learning_curve.csv", self.history)

    # --- policy epochs -----------------------------------------------------------------

    def _refresh(self, key, rng: np.random.Generator) -> dict:
        m = self.config.mopo
        start = time.perf_counter()
        idx = rng.integers(0, self.data.num_transitions, m.rollout_batch_size)
        transitions = mopo.jit_rollout(
            self.agent,
            self.model,
            key,
            jnp.asarray(self.data.observations[idx]),
            m.rollout_length,
            m.penalty,
            m.penalty_coef,
            self.task.terminated,
        )
        transitions = jax.device_get(transitions)
        valid = transitions["valid"].reshape(-1)
        flat = {k: v.reshape(-1, *v.shape[2:])[valid] for k, v in transitions.items()}
        self.buffer.add(flat)
        self.wall["rollouts"] += time.perf_counter() - start
        return {
            "model_reward": float(flat["raw_rewards"].mean()),
            "uncertainty": float(flat["uncertainty"].mean()),
            "rollout_valid": float(valid.mean()),
        }

    def _mixed_batches(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        m = self.config.mopo
        batch = m.sac.batch_size
        n_real = int(round(batch * m.real_ratio)) if self.buffer.size else batch
        real = rng.integers(0, self.data.num_transitions, (n, n_real))
        fake = rng.integers(0, max(self.buffer.size, 1), (n, batch - n_real))
        d = self.data
        real_cols = {
            "observations": d.observations[real],
            "actions": d.actions[real],
            "rewards": self.rewards[real],
            "next_observations": d.next_observations[real],
            "terminations": d.terminations[real].astype(np.float32),
        }
        if batch - n_real == 0:
            return real_cols
        fake_cols = {k: self.buffer.data[k][fake] for k in _ModelBuffer.FIELDS}
        return {k: np.concatenate([real_cols[k], fake_cols[k]], axis=1) for k in real_cols}

    def run_epoch(self) -> dict:
        m = self.config.mopo
        epoch_key = jax.random.fold_in(self.run_key, self.epoch)
        rng = np.random.default_rng([self.config.seed, self.epoch])
        row: dict = {"epoch": self.epoch + 1}
        first_step = self.epoch * m.steps_per_epoch
        for call, begin in enumerate(range(0, m.steps_per_epoch, m.updates_per_call)):
            n = min(m.updates_per_call, m.steps_per_epoch - begin)
            step = first_step + begin
            # Refresh when a multiple of rollout_freq falls inside this call's updates.
            if (
                step % m.rollout_freq == 0
                or (step + n - 1) // m.rollout_freq > step // m.rollout_freq
            ):
                row.update(self._refresh(jax.random.fold_in(epoch_key, 10_000 + call), rng))
            start = time.perf_counter()
            batches = self._mixed_batches(rng, n)
            self.agent, metrics = mopo.policy_updates(
                self.agent, batches, jax.random.fold_in(epoch_key, call)
            )
            self.wall["updates"] += time.perf_counter() - start
        # Updates run asynchronously (overlapping the next batch's sampling): wait for the last
        # one inside the clock so that the time shares add up.
        start = time.perf_counter()
        jax.block_until_ready(self.agent)
        self.wall["updates"] += time.perf_counter() - start
        row.update(
            {k: float(v) for k, v in metrics.items() if k in ("q", "critic_loss", "temperature")}
        )
        self.epoch += 1
        if self.epoch % m.eval_every == 0 or self.epoch == m.epochs:
            start = time.perf_counter()
            returns = self.evaluate()
            self.wall["evaluation"] += time.perf_counter() - start
            row.update(eval_return=float(returns.mean()), eval_std=float(returns.std()))
        return row

    def evaluate(self) -> np.ndarray:
        agent, dims = self.agent, self.obs_dims
        return evaluate(
            self.task,
            lambda obs: np.asarray(
                sac.jit_greedy_actions_single(agent, jnp.asarray(obs[:, :dims]))
            ),
            self.config.mopo.eval_episodes,
            seed=self.config.seed,
            max_episode_steps=self.config.eval_episode_length,
            index=(self.epoch,),
        )

    def run(self, on_epoch: Callable[[int, dict], None] | None = None) -> None:
        m = self.config.mopo
        while self.epoch < m.epochs:
            row = self.run_epoch()
            if "eval_return" in row:
                self.history.append(
                    {k: row[k] for k in ("epoch", "eval_return", "eval_std")}
                    | {k: row.get(k, float("nan")) for k in ("q", "uncertainty")}
                )
            if on_epoch is not None:
                on_epoch(self.epoch, row)
            if self.epoch % m.checkpoint_every == 0 or self.epoch == m.epochs:
                self.save_checkpoint()


def offline_result(run: OfflineRun, ranking, selected: Dataset, wall: float) -> dict:
    history = run.history
    returns = np.array([h["eval_return"] for h in history])
    best = int(np.argmax(returns))
    return {
        "task": run.task.name,
        "select": run.config.select,
        "seed": run.config.seed,
        "ranking": [dataclasses.asdict(r) for r in ranking],
        "selected": selected.name,
        "selected_transitions": selected.num_transitions,
        "observation_dims": run.obs_dims,
        "data_mean_return": float(
            np.mean(selected.episode_returns(selected.task_rewards[run.task.name]))
        ),
        "last_return": float(returns[-1]),
        "last_std": float(history[-1]["eval_std"]),
        "best_return": float(returns[best]),
        "best_epoch": int(history[best]["epoch"]),
        "dynamics": run.dynamics_metrics,
        "wall_seconds": wall,
        "timings": run.wall,
    }


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
    manifest = open_run(out, "offline", {**config_dict(config), "data": sources})
    if manifest is not None and manifest.get("status") == "complete":
        return manifest["result"]
    start = time.perf_counter()
    if datasets is None:
        datasets = load_datasets(data_paths or [])
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the data is of env {datasets[0].env}"
        )
    selected, ranking = select(datasets, task, config.select)
    if on_ranking is not None:
        on_ranking(ranking)
    header = {
        "kind": "offline",
        "config": {**config_dict(config), "data": sources},
        "git_revision": git_revision(),
        "machine": machine_description(),
    }
    atomic_write_json(out / MANIFEST, {**header, "status": "running"})
    run = OfflineRun(config, selected, task, out)
    run.fit_model(on_model_epoch, model_path)
    run.load_checkpoint()
    run.run(on_epoch)
    atomic_write_bytes(out / "policy.msgpack", sac.to_bytes(run.agent))
    result = offline_result(run, ranking, selected, time.perf_counter() - start)
    _plot_curve(run, out)
    atomic_write_json(out / "result.json", result)
    atomic_write_json(out / MANIFEST, {**header, "status": "complete", "result": result})
    return result


def _plot_curve(run: OfflineRun, out: Path) -> None:
    from udg.experiments.plots import plot_learning_curves

    steps = np.array([h["epoch"] for h in run.history]) * run.config.mopo.steps_per_epoch
    name = "evaluation return (band: std over episodes)"
    plot_learning_curves(
        steps,
        {name: np.array([h["eval_return"] for h in run.history])},
        f"return on {run.task.name}",
        out / "learning_curve.png",
        title=f"MOPO on {run.config.select} data, {run.task.name}",
        spreads={name: np.array([h["eval_std"] for h in run.history])},
    )

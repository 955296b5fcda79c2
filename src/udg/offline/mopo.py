"""MOPO's pure parts: the config, the scanned model rollout and the epoch as one jitted kernel.

MOPO (Yu et al. 2020, "Model-based Offline Policy Optimization") trains SAC on a mixture of real
transitions and short rollouts of a learned dynamics ensemble whose reward is penalised by the
model's uncertainty, ``r~ = r - lambda * u(s, a)``. Here the rollout of ``h`` steps from a batch
of dataset states is one ``lax.scan`` (a random elite per sample and step, the environment's
termination rule applied to the predicted next state, transitions after a termination masked
out). The reward of a model step is the task's own function of the predicted columns
(``reward="computed"``, so one model serves every task of a dataset) or the model's learned
reward (``"learned"``, MOPO's original).

:func:`epoch` is a whole policy epoch of one cell: rollout refreshes into the model buffer, a
ring on the device, and ``steps_per_epoch`` SAC updates on batches mixed from the data and that
buffer, all in one traced function. :func:`epoch_kernel` jits it over a population of cells (a
leading cell axis, as stage 1's agents have): every cell has its own policy, model, buffer,
task and slice of the shared data, and the cells run as one computation. Follows
EmptyJackson/unifloral ``algorithms/mopo.py`` and OfflineRL-Kit's MOPO defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import struct

from udg.agents import sac
from udg.errors import ConfigError
from udg.offline import dynamics
from udg.offline.ensemble import DynamicsConfig

TerminationFn = Callable[..., jax.Array]
RewardFn = Callable[..., jax.Array]
"""``reward(task_index, observations, actions, next_observations, outputs) -> [N]``: the raw
reward of model steps, ``outputs`` being the model's predicted extra columns."""
REWARDS = ("computed", "learned")
"""How a model rollout gets its reward: the task's function of the predicted columns (one
model per dataset, shared by every task), or the model's own reward output (one per task)."""


@dataclass(frozen=True)
class MOPOConfig:
    """MOPO with the paper's defaults (SPEC section 5).

    Every ``rollout_freq`` policy steps, ``rollout_batch_size`` model rollouts of length
    ``rollout_length`` start from dataset states; their transitions carry the penalised reward
    ``r - penalty_coef * u(s, a)`` with ``u`` the max over elites of the predicted std's norm
    (``max_sigma``) or the elites' disagreement. SAC then trains on batches drawn
    ``real_ratio`` from the data and the rest from the last ``model_retain_epochs`` rollout
    batches.
    """

    rollout_length: int = 5
    """h, the model rollout horizon (MOPO: 1 to 5 by environment)."""
    penalty_coef: float = 1.0
    """lambda, the weight of the uncertainty penalty (MOPO: 0.5 to 5 by environment)."""
    penalty: str = "max_sigma"
    """Uncertainty measure: max_sigma (MOPO's) or disagreement (ensemble means)."""
    reward: str = "computed"
    """Reward of model steps: computed (the task's function of the predicted next observation
    and info columns; one model per dataset serves every task, and the model spends no
    capacity on a reward it can be told) or learned (MOPO's original: the model predicts the
    task's reward, so each task needs its own model)."""
    rollout_batch_size: int = 50_000
    """Rollouts started at each refresh."""
    rollout_freq: int = 1000
    """Policy updates between rollout refreshes (a divisor of steps_per_epoch)."""
    model_retain_epochs: int = 5
    """How many rollout batches the model buffer keeps."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch."""
    epochs: int = 3000
    """Policy epochs."""
    steps_per_epoch: int = 1000
    """SAC updates per epoch (one jitted call)."""
    observation_dims: int | None = None
    """Leading observation entries the model and the policy see (None: the env's default, all
    but Ant's 78 contact forces; the data's full observations still give the task rewards)."""
    eval_every: int = 10
    """Epochs between evaluations in the real environment."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy)."""
    checkpoint_every: int = 10
    """Epochs between checkpoints."""
    sac: sac.SACConfig = field(default_factory=sac.SACConfig)
    """The policy's SAC (MOPO: 2x256, lr 3e-4, auto-tuned alpha, batch 256)."""
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    """The dynamics ensemble (7 members, 5 elites, 4x200, holdout 20% up to 1000)."""

    def __post_init__(self) -> None:
        if self.penalty not in dynamics.PENALTIES:
            raise ConfigError(
                f"unknown penalty {self.penalty!r}; known: {', '.join(dynamics.PENALTIES)}"
            )
        if self.reward not in REWARDS:
            raise ConfigError(f"unknown reward {self.reward!r}; known: {', '.join(REWARDS)}")
        positive = (
            "rollout_length",
            "rollout_batch_size",
            "rollout_freq",
            "model_retain_epochs",
            "epochs",
            "steps_per_epoch",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        freq, steps = self.rollout_freq, self.steps_per_epoch
        if steps % freq:
            raise ConfigError(
                f"rollout_freq ({freq}) must divide steps_per_epoch ({steps}), so that every "
                "epoch refreshes the model buffer at the same points of one compiled kernel"
            )
        if self.observation_dims is not None and self.observation_dims < 1:
            raise ConfigError(f"observation_dims must be >= 1, got {self.observation_dims}")
        if not 0.0 <= self.real_ratio <= 1.0:  # also refuses NaN
            raise ConfigError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0 <= self.penalty_coef < math.inf:
            raise ConfigError(f"penalty_coef must be a finite number >= 0, got {self.penalty_coef}")

    @property
    def buffer_capacity(self) -> int:
        """Rows of the model buffer: the last ``model_retain_epochs`` refreshes."""
        return self.model_retain_epochs * self.rollout_batch_size * self.rollout_length

    def memory_bytes(self, obs_dim: int, act_dim: int) -> int:
        """A lower estimate of the device memory one cell holds: its model buffer, and a
        refresh's rollout (the scanned steps, their reordering and one step's ensemble
        outputs), in float32."""
        row = (2 * obs_dim + act_dim + 2) * 4  # observations, next, action, reward, done
        rollout_rows = self.rollout_length * self.rollout_batch_size
        ensemble = self.dynamics.ensemble_size * self.rollout_batch_size * 2 * (obs_dim + 1) * 4
        return self.buffer_capacity * row + 2 * rollout_rows * (row + 12) + ensemble

    @property
    def real_rows(self) -> int:
        """Rows of each SAC batch drawn from the data (the first ones); the rest are model
        rows."""
        return int(round(self.sac.batch_size * self.real_ratio))


def rollout(
    agent: sac.SAC,
    model: dynamics.DynamicsModel,
    key: jax.Array,
    start_observations: jax.Array,
    horizon: int,
    penalty: str,
    penalty_coef: float,
    terminated: TerminationFn,
    reward: RewardFn = None,
    task_index: jax.Array | int = 0,
) -> dict[str, jax.Array]:
    """``horizon`` model steps from ``start_observations [N, o]`` with the agent's policy.

    ``reward`` gives the raw reward of the steps (see :data:`RewardFn`; default: the model's
    learned reward, its first output). Returns ``[h, N, ...]`` arrays: observations, actions,
    rewards (penalised), raw_rewards, uncertainty, next_observations, terminations (float) and
    ``valid``, which is False for every step after a rollout terminated.
    """
    reward = reward or learned_reward

    def one_step(carry, step_key):
        observations, alive = carry  # [N, o], [N] bool
        act_key, model_key = jax.random.split(step_key)
        actions = sac.sample_actions_single(agent, observations, act_key)  # [N, a]
        next_obs, outputs, uncertainty = dynamics.step(
            model, model_key, observations, actions, penalty
        )
        raw = reward(task_index, observations, actions, next_obs, outputs)  # [N]
        done = terminated(next_obs, xp=jnp)  # [N] bool
        out = {
            "observations": observations,
            "actions": actions,
            "rewards": raw - penalty_coef * uncertainty,
            "raw_rewards": raw,
            "uncertainty": uncertainty,
            "next_observations": next_obs,
            "terminations": done.astype(jnp.float32),
            "valid": alive,
        }
        return (next_obs, alive & ~done), out

    keys = jax.random.split(key, horizon)
    alive = jnp.ones(start_observations.shape[0], bool)
    _, transitions = jax.lax.scan(one_step, (start_observations, alive), keys)
    return transitions


jit_rollout = jax.jit(rollout, static_argnums=(4, 5, 7, 8))


def learned_reward(task_index, observations, actions, next_observations, outputs) -> jax.Array:
    """The reward a model trained on one task's reward predicts (its first output)."""
    return outputs[:, 0]


def computed_reward(
    tasks: Sequence, outputs: Sequence[str], observed: Sequence[tuple[str, int]]
) -> RewardFn:
    """The :data:`RewardFn` of ``tasks`` (:class:`~udg.envs.tasks.TaskSpec`, chosen by the
    task index) over a model that predicts the info columns ``outputs``; the ``observed`` info
    columns are read from the predicted next observation (:attr:`EnvSpec.observed_columns`)."""
    for task in tasks:
        missing = set(task.columns) - set(outputs) - {name for name, _ in observed}
        if missing:
            raise ValueError(f"task {task.name} reads {sorted(missing)}, which no model predicts")
    branches = [task.jax_reward for task in tasks]

    def reward(task_index, observations, actions, next_observations, predicted) -> jax.Array:
        columns = {
            "observations": observations,
            "actions": actions,
            "next_observations": next_observations,
        }
        columns |= {name: predicted[:, i] for i, name in enumerate(outputs)}
        columns |= {name: next_observations[:, i] for name, i in observed}
        if len(branches) == 1:
            return branches[0](columns)
        # Under a vmap over cells every branch runs and the cell's is selected: a few
        # elementwise formulas, negligible beside the model.
        return jax.lax.switch(task_index, branches, columns)

    return reward


# --- the device-resident epoch -----------------------------------------------------------------

BUFFER_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations")


class ModelBuffer(struct.PyTreeNode):
    """A ring of model transitions on the device: the last ``capacity`` valid rollout steps."""

    observations: jax.Array  # [Cap, o]
    actions: jax.Array  # [Cap, a]
    rewards: jax.Array  # [Cap] (penalised)
    next_observations: jax.Array  # [Cap, o]
    terminations: jax.Array  # [Cap] float
    size: jax.Array  # [] int32, rows filled
    cursor: jax.Array  # [] int32, where the next row goes

    @classmethod
    def empty(cls, capacity: int, obs_dim: int, act_dim: int) -> ModelBuffer:
        return cls(
            observations=jnp.zeros((capacity, obs_dim), jnp.float32),
            actions=jnp.zeros((capacity, act_dim), jnp.float32),
            rewards=jnp.zeros((capacity,), jnp.float32),
            next_observations=jnp.zeros((capacity, obs_dim), jnp.float32),
            terminations=jnp.zeros((capacity,), jnp.float32),
            size=jnp.zeros((), jnp.int32),
            cursor=jnp.zeros((), jnp.int32),
        )


def buffer_add(buffer: ModelBuffer, rows: dict[str, jax.Array], count: jax.Array) -> ModelBuffer:
    """The first ``count`` of ``rows`` (``[n, ...]``, ``count <= capacity``) appended to the
    ring, overwriting its oldest rows; the rest are dropped."""
    capacity = buffer.rewards.shape[0]
    i = jnp.arange(rows["rewards"].shape[0])
    slots = jnp.where(i < count, (buffer.cursor + i) % capacity, capacity)  # capacity: dropped
    filled = {
        f: getattr(buffer, f).at[slots].set(rows[f].astype(jnp.float32), mode="drop")
        for f in BUFFER_FIELDS
    }
    return buffer.replace(
        **filled,
        size=jnp.minimum(buffer.size + count, capacity).astype(jnp.int32),
        cursor=((buffer.cursor + count) % capacity).astype(jnp.int32),
    )


class RealData(struct.PyTreeNode):
    """Every cell's real transitions in flat arrays, shared by a population (no cell axis): a
    cell reads its own slice (``CellState.data_start``, ``data_size``), so datasets of any size
    and a dataset selected by several cells are stored once. Rewards depend on the task, so
    each cell has its own slice of ``rewards`` (``CellState.reward_start``)."""

    observations: jax.Array  # [T, o]
    actions: jax.Array  # [T, a]
    next_observations: jax.Array  # [T, o]
    terminations: jax.Array  # [T] float
    rewards: jax.Array  # [U] float, the cells' task rewards one slice after another


class CellState(struct.PyTreeNode):
    """One MOPO cell on the device (a population: a leading cell axis on every leaf)."""

    agent: sac.SAC
    model: dynamics.DynamicsModel
    buffer: ModelBuffer
    data_start: jax.Array  # [] int32
    data_size: jax.Array  # [] int32
    reward_start: jax.Array  # [] int32
    task_index: jax.Array  # [] int32, which of the population's reward functions


@dataclass(frozen=True)
class EpochSpec:
    """What a population's epoch kernel is traced for (static under jit)."""

    config: MOPOConfig
    terminated: TerminationFn
    reward: RewardFn


def refresh(
    spec: EpochSpec, cell: CellState, data: RealData, key: jax.Array
) -> tuple[CellState, dict[str, jax.Array]]:
    """Roll the model out from ``rollout_batch_size`` of the cell's dataset states with its
    current policy and append the valid steps to its buffer; returns their mean reward,
    uncertainty and the valid share."""
    m = spec.config
    start_key, rollout_key = jax.random.split(key)
    starts = cell.data_start + jax.random.randint(
        start_key, (m.rollout_batch_size,), 0, cell.data_size
    )  # [R]
    steps = rollout(
        cell.agent,
        cell.model,
        rollout_key,
        data.observations[starts],
        m.rollout_length,
        m.penalty,
        m.penalty_coef,
        spec.terminated,
        spec.reward,
        cell.task_index,
    )  # [h, R, ...]
    valid = steps["valid"].reshape(-1)  # [h * R], step-major as the scan emits them
    count = jnp.sum(valid)
    (order,) = jnp.nonzero(valid, size=valid.shape[0], fill_value=0)  # valid rows first
    rows = {f: steps[f].reshape(-1, *steps[f].shape[2:])[order] for f in BUFFER_FIELDS}
    share = valid.astype(jnp.float32)
    metrics = {
        "model_reward": jnp.sum(steps["raw_rewards"].reshape(-1) * share) / count,
        "uncertainty": jnp.sum(steps["uncertainty"].reshape(-1) * share) / count,
        "rollout_valid": jnp.mean(share),
    }
    return cell.replace(buffer=buffer_add(cell.buffer, rows, count)), metrics


def mixed_batch(
    config: MOPOConfig, cell: CellState, data: RealData, key: jax.Array
) -> dict[str, jax.Array]:
    """One SAC batch: ``real_rows`` rows of the cell's data, then model-buffer rows."""
    batch, real = config.sac.batch_size, config.real_rows
    real_key, model_key = jax.random.split(key)
    offset = jax.random.randint(real_key, (real,), 0, cell.data_size)  # [B_real]
    rows = cell.data_start + offset
    model = jax.random.randint(model_key, (batch - real,), 0, cell.buffer.size)  # [B_model]
    real_part = {
        "observations": data.observations[rows],
        "actions": data.actions[rows],
        "rewards": data.rewards[cell.reward_start + offset],
        "next_observations": data.next_observations[rows],
        "terminations": data.terminations[rows],
    }
    return {
        f: jnp.concatenate([real_part[f], getattr(cell.buffer, f)[model]], axis=0)
        for f in BUFFER_FIELDS
    }


def epoch(
    spec: EpochSpec,
    cell: CellState,
    data: RealData,
    keys: dict[str, jax.Array],
) -> tuple[CellState, dict[str, jax.Array]]:
    """One policy epoch of one cell: ``steps_per_epoch`` SAC updates in segments of
    ``rollout_freq``, each segment starting with a model-buffer refresh.

    ``keys``: ``rollouts`` and ``updates``, the epoch's keys of the cell's streams; segment
    ``s`` folds in ``s``, update ``t`` of a segment folds in ``t``. Returns the metrics of the
    epoch's last refresh and the mean of its updates' metrics.
    """
    m = spec.config
    segments = m.steps_per_epoch // m.rollout_freq
    length = m.rollout_freq

    def segment(cell: CellState, s: jax.Array):
        cell, refreshed = refresh(spec, cell, data, jax.random.fold_in(keys["rollouts"], s))
        update_key = jax.random.fold_in(keys["updates"], s)

        def one_update(agent: sac.SAC, t: jax.Array):
            batch_key, noise_key = jax.random.split(jax.random.fold_in(update_key, t))
            batch = mixed_batch(m, cell.replace(agent=agent), data, batch_key)
            return sac.update(agent, batch, noise_key)

        agent, metrics = jax.lax.scan(one_update, cell.agent, jnp.arange(length))
        return cell.replace(agent=agent), (refreshed, metrics)

    cell, (refreshed, metrics) = jax.lax.scan(segment, cell, jnp.arange(segments))
    out = {k: v[-1] for k, v in refreshed.items()}
    out |= {k: jnp.mean(v) for k, v in metrics.items()}
    return cell, out


def population_epoch(
    spec: EpochSpec,
    cells: CellState,
    data: RealData,
    keys: dict[str, jax.Array],
    vectorize: bool | None = None,
) -> tuple[CellState, dict[str, jax.Array]]:
    """:func:`epoch` for every cell of a population (``keys`` ``[C]`` per stream), as one
    computation: vmapped or mapped and sharded over the devices as
    :func:`udg.agents.sac.over_members` does for stage 1's agents. Metrics are ``[C]``."""
    return sac.over_members(
        lambda cell, cell_keys: epoch(spec, cell, data, cell_keys),
        vectorize,
        True,
        cells,
        keys,
    )


def epoch_kernel(spec: EpochSpec, vectorize: bool | None = None) -> Callable:
    """``population_epoch`` jitted for ``spec`` (compiled once per population and shapes;
    the incoming cells are donated)."""

    def kernel(cells, data, keys):
        return population_epoch(spec, cells, data, keys, vectorize)

    return jax.jit(kernel, donate_argnums=0)

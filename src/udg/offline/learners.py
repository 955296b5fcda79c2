"""The model-free offline learners (TD3+BC, IQL) behind one interface, the settings of a run of
one, and its epoch as one jitted kernel over a population of cells.

A model-free run trains on the selected data alone: no dynamics model, no rollouts. Its
:class:`ModelFreeConfig` holds the learner's own config and the run's schedule (epochs of
updates, evaluations, checkpoints), as :class:`~udg.offline.mopo.MOPOConfig` does for MOPO.
:func:`epoch` is ``steps_per_epoch`` updates of one cell, each on a batch drawn uniformly from
the cell's slice of the population's shared data (:class:`~udg.offline.mopo.RealData`) inside
the scan, so a cell holds one batch at a time rather than an epoch's; :func:`epoch_kernel` jits
it over a population of cells, a leading cell axis on every leaf, vmapped or mapped and sharded
over the devices by :func:`udg.agents.sac.over_members`, the mapping of the learners' own
``update_members``. Update ``t`` of an epoch draws its batch and its noise from
``fold_in(key, t)`` of the cell's epoch key, so a cell's numbers do not depend on the population
it trains in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from udg.agents import sac
from udg.errors import ConfigError, unknown_name
from udg.offline import ALGO_LABELS, iql, model_free, td3bc
from udg.offline.model_free import Batch, Metrics
from udg.offline.mopo import RealData


@dataclass(frozen=True)
class Learner:
    """What the runner needs of one model-free learner module."""

    algo: str
    """Its name in :data:`udg.offline.ALGOS`."""
    config: type
    """Its config class."""
    functions: model_free.LearnerFunctions
    """Its functions: creation, update, policy, metrics' reduction."""
    curve_metrics: tuple[str, ...]
    """The metrics each learning-curve row keeps beside the evaluation."""

    @property
    def label(self) -> str:
        return ALGO_LABELS[self.algo]

    @property
    def create_members(self) -> Callable[..., Any]:
        """``(keys [K], obs_dim, act_dim, config, obs_stats) -> population``."""
        return self.functions.create_members


LEARNERS: dict[str, Learner] = {
    "td3bc": Learner(
        "td3bc", td3bc.TD3BCConfig, td3bc.FUNCTIONS, ("q", "critic_loss", "bc_loss", "lambda")
    ),
    "iql": Learner(
        "iql",
        iql.IQLConfig,
        iql.FUNCTIONS,
        ("q", "v", "critic_loss", "value_loss", "actor_loss"),
    ),
}
"""The model-free learners by name (MOPO, the model-based one, is :mod:`udg.offline.mopo`)."""

REWARD_SCALES = ("none", "return_range")
"""How a model-free run scales the task's rewards before training: not at all, or by
``episode steps / (max - min episode return)`` of the selected data (the IQL paper's
locomotion normalisation)."""


def get_learner(algo: str) -> Learner:
    """The model-free learner ``algo``; an unknown name raises one line listing the known."""
    try:
        return LEARNERS[algo]
    except KeyError:
        raise unknown_name("model-free learner", algo, LEARNERS) from None


@dataclass(frozen=True)
class ModelFreeConfig:
    """A model-free offline run: the learner (TD3+BC, Fujimoto & Gu 2021; IQL, Kostrikov et al.
    2021) trained for ``epochs`` x ``steps_per_epoch`` updates on batches drawn uniformly from
    the selected data, evaluated in the real environment every ``eval_every`` epochs. The
    defaults are both papers' budget: 1M updates, an evaluation of 10 episodes every 5000.

    Rewards are the task's as relabelled, unscaled (``reward_scale="none"``), for both learners.
    The IQL paper multiplies locomotion rewards by 1000 / (max - min episode return) of the
    dataset, so that its temperature (3.0) acts on advantages of a known size; here that factor
    would be a property of the *selected data*, so the cells that UDG compares, the same task
    on different data (UDG's, random, supervised), would train learners with different
    effective temperatures, confounding the comparison the experiment makes; and a selection
    of near-identical episodes (one agent's buffer) has a return range near 0, blowing the
    rewards up. The tasks' per-step rewards are O(1) on point and rooms (as the normalised
    D4RL rewards are); on the MuJoCo tasks they are up to about 10x larger, which makes IQL's
    advantage weights more greedy than the paper's. ``return_range`` applies the paper's
    normalisation, with the longest episode of the selected data in place of D4RL's 1000
    steps (the same per-step spread of rewards), for matching the paper on one dataset.
    TD3+BC's paper does not scale rewards: its lambda = alpha / mean |Q| makes the actor loss
    scale-free.
    """

    learner: td3bc.TD3BCConfig | iql.IQLConfig = field(default_factory=td3bc.TD3BCConfig)
    """The learner's own config; its type names the algorithm. IQL's ``num_updates`` (the
    length of its actor's cosine schedule) is set to ``epochs * steps_per_epoch``."""
    epochs: int = 1000
    """Epochs; an epoch is one jitted call, followed by an evaluation when one is due."""
    steps_per_epoch: int = 1000
    """Updates per epoch."""
    eval_every: int = 5
    """Epochs between evaluations in the real environment (the papers': 5000 updates)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy; the papers': 10)."""
    checkpoint_every: int = 10
    """Epochs between checkpoints."""
    observation_dims: int | None = None
    """Leading observation entries the policy sees (None: the env's default, as MOPO's)."""
    reward_scale: str = "none"
    """Scaling of the task's rewards: none, or return_range (the IQL paper's; see above)."""

    def __post_init__(self) -> None:
        algos = {learner.config: name for name, learner in LEARNERS.items()}
        if type(self.learner) not in algos:
            raise ConfigError(
                f"learner must be one of {', '.join(c.__name__ for c in algos)}, got "
                f"{type(self.learner).__name__}"
            )
        for name in ("epochs", "steps_per_epoch", "eval_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.observation_dims is not None and self.observation_dims < 1:
            raise ConfigError(f"observation_dims must be >= 1, got {self.observation_dims}")
        if self.reward_scale not in REWARD_SCALES:
            raise unknown_name("reward_scale", self.reward_scale, REWARD_SCALES)
        if isinstance(self.learner, iql.IQLConfig) and self.learner.num_updates != self.updates:
            # The cosine schedule spans the run, whatever epochs a preset or a flag gives.
            object.__setattr__(self, "learner", replace(self.learner, num_updates=self.updates))

    @property
    def algo(self) -> str:
        """The learner's name, ``td3bc`` or ``iql``."""
        return next(n for n, lr in LEARNERS.items() if isinstance(self.learner, lr.config))

    @property
    def updates(self) -> int:
        """Updates of the whole run."""
        return self.epochs * self.steps_per_epoch


class CellState(struct.PyTreeNode):
    """One model-free cell on the device (a population: a leading cell axis on every leaf)."""

    learner: Any
    data_start: jax.Array  # [] int32, the cell's first row of the shared data
    data_size: jax.Array  # [] int32, its rows
    reward_start: jax.Array  # [] int32, its first row of the shared rewards


def sample_batch(cell: CellState, data: RealData, batch_size: int, key: jax.Array) -> Batch:
    """``batch_size`` transitions drawn uniformly, with replacement, from the cell's data."""
    offset = jax.random.randint(key, (batch_size,), 0, cell.data_size)  # [B]
    rows = cell.data_start + offset
    return {
        "observations": data.observations[rows],
        "actions": data.actions[rows],
        "rewards": data.rewards[cell.reward_start + offset],
        "next_observations": data.next_observations[rows],
        "terminations": data.terminations[rows],
    }


def epoch(
    config: ModelFreeConfig, cell: CellState, data: RealData, key: jax.Array
) -> tuple[CellState, Metrics]:
    """``steps_per_epoch`` updates of one cell in one ``lax.scan``; update ``t`` splits
    ``fold_in(key, t)`` into its batch's key and its update's key. Metrics: the learner's
    ``mean_metrics`` over the epoch."""
    functions = get_learner(config.algo).functions

    def one_update(state: Any, t: jax.Array) -> tuple[Any, Metrics]:
        batch_key, update_key = jax.random.split(jax.random.fold_in(key, t))
        batch = sample_batch(cell, data, config.learner.batch_size, batch_key)
        return functions.update(state, batch, update_key)

    state, metrics = jax.lax.scan(one_update, cell.learner, jnp.arange(config.steps_per_epoch))
    return cell.replace(learner=state), functions.mean_metrics(metrics)


def population_epoch(
    config: ModelFreeConfig,
    cells: CellState,
    data: RealData,
    keys: jax.Array,
    vectorize: bool | None = None,
) -> tuple[CellState, Metrics]:
    """:func:`epoch` for every cell (``keys`` ``[C]``) as one computation; metrics ``[C]``."""
    return sac.over_members(
        lambda cell, key: epoch(config, cell, data, key), vectorize, True, cells, keys
    )


def epoch_kernel(config: ModelFreeConfig, vectorize: bool | None = None) -> Callable:
    """``population_epoch`` jitted for ``config`` (compiled once per population and shapes;
    the incoming cells are donated)."""

    def kernel(cells: CellState, data: RealData, keys: jax.Array):
        return population_epoch(config, cells, data, keys, vectorize)

    return jax.jit(kernel, donate_argnums=0)


def act_kernel(config: ModelFreeConfig) -> Callable:
    """Every cell's deterministic actions for its own raw observations (``[C, n, o]``), jitted."""
    return get_learner(config.algo).functions.jit_act_members

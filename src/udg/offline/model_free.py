"""What the model-free offline learners (TD3+BC, IQL) share: observation normalisation kept in
the learner's state, the reward scale of the IQL paper's locomotion runs, the gradient step and
the twin critics' loss, and :class:`LearnerFunctions`, which builds from a learner's own four
functions (its networks' init, its update, its policy, its metrics' reduction) everything else
a learner offers: creation alone or as a population, the update scanned over N batches or
mapped over a population's leading member axis (`[K, ...]`, as stage 1's SAC agents and MOPO's
cells), the policy on raw observations, and their jitted forms. Each learner module supplies
its losses and networks; nothing here knows which algorithm it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from udg.agents import sac

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Update = Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]
Init = Callable[[jax.Array, Any, jax.Array, jax.Array], dict[str, Any]]
Policy = Callable[[Any, jax.Array], jax.Array]

OBS_STD_EPSILON = 1e-3
"""Added to the observations' standard deviation (sfujim/TD3_BC ``utils.normalize_states``,
CORL ``compute_mean_std(..., eps=1e-3)``): a constant feature then maps to 0, not to NaN."""


class ObservationStats(struct.PyTreeNode):
    """Per-feature shift and scale of a learner's inputs, ``(s - mean) / std``; part of the
    learner's state, so that its update and its policy both see the same normalised inputs and
    a saved learner carries its own normalisation."""

    mean: jax.Array  # [o]
    std: jax.Array  # [o], OBS_STD_EPSILON already added

    @classmethod
    def identity(cls, obs_dim: int) -> ObservationStats:
        """No normalisation: mean 0, std 1."""
        return cls(mean=jnp.zeros(obs_dim, jnp.float32), std=jnp.ones(obs_dim, jnp.float32))

    def normalize(self, observations: jax.Array) -> jax.Array:
        """``(observations - mean) / std`` over the last axis."""
        return (observations - self.mean) / self.std


def observation_stats(
    observations: np.ndarray, epsilon: float = OBS_STD_EPSILON
) -> ObservationStats:
    """Mean and std + epsilon of a dataset's observations ``[T, o]`` (TD3+BC, Fujimoto & Gu
    2021, section 5; computed in float64, stored as float32)."""
    observations = np.asarray(observations, np.float64)
    if observations.ndim != 2 or observations.shape[0] == 0:
        raise ValueError(f"observations must be a non-empty [T, o] array, got {observations.shape}")
    if not np.all(np.isfinite(observations)):
        raise ValueError("observations contain NaN or infinity")
    return ObservationStats(
        mean=jnp.asarray(observations.mean(axis=0), jnp.float32),
        std=jnp.asarray(observations.std(axis=0) + epsilon, jnp.float32),
    )


def check_dims(obs_dim: int, act_dim: int) -> None:
    """Refuse non-positive observation or action sizes."""
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"obs_dim and act_dim must be > 0, got {obs_dim}, {act_dim}")


def initial_stats(
    normalize_observations: bool, obs_stats: ObservationStats | None, obs_dim: int
) -> ObservationStats:
    """The stats a new learner keeps: ``obs_stats``, required when the config normalises and
    refused when it does not (a silently ignored argument would hide a mistake), or the
    identity."""
    if normalize_observations and obs_stats is None:
        raise ValueError(
            "normalize_observations needs obs_stats (model_free.observation_stats of the data)"
        )
    if not normalize_observations and obs_stats is not None:
        raise ValueError("obs_stats given but the config has normalize_observations=False")
    return obs_stats if obs_stats is not None else ObservationStats.identity(obs_dim)


def member_stats(
    stats: ObservationStats | None, num_members: int, obs_dim: int
) -> ObservationStats:
    """Stats for every member, leaves ``[K, o]``: None gives the identity, leaves ``[o]`` are
    shared by all members, leaves ``[K, o]`` are each member's own."""
    stats = stats if stats is not None else ObservationStats.identity(obs_dim)
    mean, std = jnp.asarray(stats.mean, jnp.float32), jnp.asarray(stats.std, jnp.float32)
    if mean.shape not in ((obs_dim,), (num_members, obs_dim)) or std.shape != mean.shape:
        raise ValueError(
            f"observation stats must be [{obs_dim}] or [{num_members}, {obs_dim}], got mean "
            f"{mean.shape} and std {std.shape}"
        )
    shape = (num_members, obs_dim)
    return ObservationStats(mean=jnp.broadcast_to(mean, shape), std=jnp.broadcast_to(std, shape))


def return_range_scale(episode_returns: np.ndarray, max_episode_steps: int = 1000) -> float:
    """``max_episode_steps / (max return - min return)``: the factor by which the IQL paper's
    locomotion runs multiply the rewards (ikostrikov/implicit_q_learning ``train_offline.py``
    ``normalize``; CORL ``modify_reward``), which sets the scale that IQL's temperature 3.0 and
    TD3+BC's alpha were tuned at. The caller scales the rewards; the learners take them as
    given."""
    returns = np.asarray(episode_returns, np.float64)
    if returns.size < 2 or not np.all(np.isfinite(returns)):
        raise ValueError("need at least two finite episode returns")
    spread = float(returns.max() - returns.min())
    if spread <= 0.0:
        raise ValueError("all episode returns are equal: the return range is zero")
    return max_episode_steps / spread


def gradient_step(
    loss_fn: Callable[[Any], tuple[jax.Array, Any]],
    params: Any,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
) -> tuple[Any, optax.OptState, jax.Array, Any]:
    """One optimiser step on ``loss_fn(params) -> (loss, aux)``: the new parameters and
    optimiser state, and the loss and aux at the old parameters."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, aux


def twin_critic_loss(qs: jax.Array, target: jax.Array) -> jax.Array:
    """Each critic's mean squared error to the target, summed over the critics:
    ``sum_j mean_B (Q_j - y)^2`` for ``qs [2, B]``, ``target [B]`` (``F.mse_loss(Q1, y) +
    F.mse_loss(Q2, y)`` in the authors' code of both learners)."""
    return jnp.sum(jnp.mean(jnp.square(qs - target), axis=1))


def mean_over_steps(metrics: Metrics) -> Metrics:
    """Each metric's mean over the leading step axis (``[N]`` -> ``[]``)."""
    return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def num_members(states: Any) -> int:
    """K, the size of the leading member axis of a population (its step counter's)."""
    return states.step.shape[0]


@dataclass(frozen=True, eq=False)
class LearnerFunctions:
    """A model-free learner's functions, built from the four that are its own.

    The learner's state is a ``flax.struct.PyTreeNode`` with the fields ``init`` returns and
    four more: ``obs_stats`` (its :class:`ObservationStats`), ``step`` (``[] int32``, updates
    done), and the static ``config`` and ``act_dim``. A population is the same pytree with a
    leading member axis on every leaf. The jitted entry points trace once per (config, shapes);
    the updates donate the incoming state: do not touch it afterwards.
    """

    state_type: type
    """The learner's pytree class."""
    init: Init
    """``(key, config, observations [1, o], actions [1, a]) -> {field: value}``: the networks'
    parameters, their targets and the optimiser states of a fresh learner."""
    update: Update
    """``(state, batch, key) -> (state, metrics)``: one iteration on a batch ``{observations
    [B,o], actions [B,a], rewards [B], next_observations [B,o], terminations [B]}`` of raw
    observations."""
    policy: Policy
    """``(state, observations [n, o]) -> actions [n, a]``: the deterministic policy on
    observations already normalised."""
    mean_metrics: Callable[[Metrics], Metrics] = mean_over_steps
    """The metrics of N updates (``[N]`` each) reduced to one value each."""

    # The jitted forms of `update` and of the methods below, made by __post_init__.
    jit_update: Callable = field(init=False, repr=False)
    jit_update_n: Callable = field(init=False, repr=False)
    jit_update_members: Callable = field(init=False, repr=False)
    jit_update_members_n: Callable = field(init=False, repr=False)
    jit_act: Callable = field(init=False, repr=False)
    jit_act_members: Callable = field(init=False, repr=False)
    _jit_new_members: Callable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        members = ("vectorize", "shard")
        jitted = {
            "jit_update": jax.jit(self.update, donate_argnums=0),
            "jit_update_n": jax.jit(self.update_n, donate_argnums=0),
            "jit_update_members": jax.jit(
                self.update_members, donate_argnums=0, static_argnames=members
            ),
            "jit_update_members_n": jax.jit(
                self.update_members_n, donate_argnums=0, static_argnames=members
            ),
            "jit_act": jax.jit(self.act),
            "jit_act_members": jax.jit(self.act_members),
            # Jitted because eager flax init under vmap dispatches hundreds of tiny ops.
            "_jit_new_members": jax.jit(self._new_members, static_argnums=(1, 2, 3)),
        }
        for name, fn in jitted.items():
            object.__setattr__(self, name, fn)

    def create(
        self,
        key: jax.Array,
        obs_dim: int,
        act_dim: int,
        config: Any,
        obs_stats: ObservationStats | None = None,
    ) -> Any:
        """A fresh learner. ``obs_stats`` (:func:`observation_stats` of the dataset) is required
        when the config normalises observations and refused when it does not."""
        check_dims(obs_dim, act_dim)
        stats = initial_stats(config.normalize_observations, obs_stats, obs_dim)
        return self._new(key, obs_dim, act_dim, config, stats)

    def create_members(
        self,
        keys: jax.Array,
        obs_dim: int,
        act_dim: int,
        config: Any,
        obs_stats: ObservationStats | None = None,
    ) -> Any:
        """One learner per key on a leading member axis: member k equals ``create(keys[k],
        obs_dim, act_dim, config, stats_k)``, where ``obs_stats`` leaves are ``[o]`` (shared)
        or ``[K, o]`` (each member's own, e.g. cells on different datasets)."""
        check_dims(obs_dim, act_dim)
        stats = initial_stats(config.normalize_observations, obs_stats, obs_dim)
        stats = member_stats(stats, len(keys), obs_dim)
        return self._jit_new_members(keys, obs_dim, act_dim, config, stats)

    def _new(
        self, key: jax.Array, obs_dim: int, act_dim: int, config: Any, stats: ObservationStats
    ) -> Any:
        observations = jnp.zeros((1, obs_dim), jnp.float32)
        actions = jnp.zeros((1, act_dim), jnp.float32)
        return self.state_type(
            **self.init(key, config, observations, actions),
            # Copies: the caller's stats must survive the donation of this state to an update.
            obs_stats=ObservationStats(
                mean=jnp.array(stats.mean, jnp.float32), std=jnp.array(stats.std, jnp.float32)
            ),
            step=jnp.zeros((), jnp.int32),
            config=config,
            act_dim=act_dim,
        )

    def _new_members(
        self, keys: jax.Array, obs_dim: int, act_dim: int, config: Any, stats: ObservationStats
    ) -> Any:
        return jax.vmap(lambda k, s: self._new(k, obs_dim, act_dim, config, s))(keys, stats)

    def update_n(self, state: Any, batches: Batch, key: jax.Array) -> tuple[Any, Metrics]:
        """``update`` over N batches stacked on a leading axis (``[N, B, ...]``) in one
        ``lax.scan``; step i uses ``jax.random.split(key, N)[i]``. Metrics: ``mean_metrics``
        of the N steps'."""
        keys = jax.random.split(key, batches["rewards"].shape[0])

        def step(state: Any, inputs: tuple[Batch, jax.Array]) -> tuple[Any, Metrics]:
            return self.update(state, *inputs)

        state, metrics = jax.lax.scan(step, state, (batches, keys))  # metrics [N]
        return state, self.mean_metrics(metrics)

    def update_members(
        self,
        states: Any,
        batches: Batch,
        key: jax.Array,
        *,
        vectorize: bool | None = None,
        shard: bool = True,
    ) -> tuple[Any, Metrics]:
        """``update`` for every member on its own batch (``[K, B, ...]``); member k uses
        ``jax.random.split(key, K)[k]``; metrics ``[K]``. ``vectorize``, ``shard``: see
        :func:`udg.agents.sac.over_members` (True: ``jax.vmap``)."""
        keys = jax.random.split(key, num_members(states))
        return sac.over_members(self.update, vectorize, shard, states, batches, keys)

    def update_members_n(
        self,
        states: Any,
        batches: Batch,
        key: jax.Array,
        *,
        vectorize: bool | None = None,
        shard: bool = True,
    ) -> tuple[Any, Metrics]:
        """``update_n`` for every member on its own N batches (``[K, N, B, ...]``); member k
        uses ``jax.random.split(key, K)[k]``; metrics ``[K]``."""
        keys = jax.random.split(key, num_members(states))
        return sac.over_members(self.update_n, vectorize, shard, states, batches, keys)

    def act(self, state: Any, observations: jax.Array) -> jax.Array:
        """The deterministic policy's actions ``[n, a]`` for raw observations ``[n, o]`` (the
        learner normalises them)."""
        return self.policy(state, state.obs_stats.normalize(observations))

    def act_members(self, states: Any, observations: jax.Array) -> jax.Array:
        """Each member's actions ``[K, n, a]`` for its own raw observations ``[K, n, o]``."""
        return jax.vmap(self.act)(states, observations)

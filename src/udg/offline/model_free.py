"""What the model-free offline learners (TD3+BC, IQL) share: observation normalisation kept in
the learner's state, the reward scale of the IQL paper's locomotion runs, and the two ways an
update is repeated: scanned over N batches, or mapped over a population's leading member axis
(`[K, ...]`, as stage 1's SAC agents and MOPO's cells). Each learner module supplies the
update; nothing here knows which algorithm it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from udg.agents import sac

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Update = Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]

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


def num_members(states: Any) -> int:
    """K, the size of the leading member axis of a population (its step counter's)."""
    return states.step.shape[0]


def scan_updates(update: Update, state: Any, batches: Batch, key: jax.Array) -> tuple[Any, Metrics]:
    """``update`` over N batches stacked on a leading axis (``[N, B, ...]``) in one
    ``lax.scan``; step i uses ``jax.random.split(key, N)[i]``. Metrics are ``[N]``."""
    keys = jax.random.split(key, batches["rewards"].shape[0])

    def step(state: Any, inputs: tuple[Batch, jax.Array]) -> tuple[Any, Metrics]:
        return update(state, *inputs)

    return jax.lax.scan(step, state, (batches, keys))


def over_members(
    update: Update,
    states: Any,
    batches: Batch,
    key: jax.Array,
    vectorize: bool | None,
    shard: bool,
) -> tuple[Any, Metrics]:
    """``update`` for every member on its own batch (``[K, B, ...]``); member k uses
    ``jax.random.split(key, K)[k]``. ``vectorize``, ``shard``: see
    :func:`udg.agents.sac.over_members` (``vectorize=True`` is a plain ``jax.vmap``)."""
    keys = jax.random.split(key, num_members(states))
    return sac.over_members(update, vectorize, shard, states, batches, keys)

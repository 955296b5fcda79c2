"""WURL's amortised projected Wasserstein diversity reward, in pure JAX.

This module turns the feature states of one finished episode of agent i into a per-step
diversity reward (SPEC section 3): the episode's feature set is coupled with the recent
feature states of every other agent through monotone (north-west corner) plans along a few
random directions, the full-dimensional cost of those plans is charged to each state, and
the episode is paid the per-state cost against the nearest other agent. It also owns the
per-agent FIFO `FeatureCache` of reference states. Everything here is jittable with static
shapes and knows nothing of environments, files or the terminal.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from udg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DiversityConfig:
    """Amortised projected Wasserstein diversity reward (WURL, He et al. AAAI 2022; UDG, arXiv 2506.19643).

    For agent i's episode A = {a_1..a_D} and agent j's reference set B_j = {b_1..b_T}:

        v_1..v_M ~ uniform on the unit sphere
        w^m      = monotone (north-west corner) coupling of uniform(A, 1/D) and
                   uniform(B_j, 1/T) after sorting both by their projection on v_m
        c_m(a_i) = sum_k D * w^m_ik * ||a_i - b_k||_2        (weights of a_i sum to 1)
        r_j(a_i) = mean_m c_m(a_i)
        j*       = argmin_{j != i} sum_i r_j(a_i)
        r_div(a_t) = reward_scale * r_{j*}(a_t) * (T / D if episode_scaling else 1)

    mean_i c_m(a_i) is the cost of a feasible plan, hence an upper estimate of W1(A, B_j).
    """

    num_directions: int = 5
    """M, the number of random projection directions per episode end (WURL: 5)."""
    reward_scale: float = 1.0
    """Multiplier of the reward; chosen per environment (WURL's 50 Ant / 10 HalfCheetah were for full observations)."""
    episode_scaling: bool = True
    """Multiply by T / D so that early-terminated episodes are not paid less in total."""
    cache_size: int = 1000
    """T, the number of most recent feature states kept per agent (the maximum episode length)."""
    shared_batch_directions: bool = True
    """In diversity_rewards_batch, one draw of directions for all agents ending together: each cache is sorted once, not once per agent (~K x cheaper); each reward is still exactly the equations above."""

    def __post_init__(self) -> None:
        if self.num_directions < 1:
            raise ConfigError(f"num_directions must be >= 1, got {self.num_directions}")
        if self.cache_size < 1:
            raise ConfigError(f"cache_size must be >= 1, got {self.cache_size}")
        if not 0 <= self.reward_scale < math.inf:  # also refuses NaN
            raise ConfigError(f"reward_scale must be a finite number >= 0, got {self.reward_scale}")


class FeatureCache(flax.struct.PyTreeNode):
    """Per-agent FIFO ring buffer of the T most recent feature states.

    Rows [0, counts[j]) of `features[j]` are valid: the ring is written from slot 0, so
    before agent j first fills it its valid entries are a prefix, and afterwards all T are.
    An agent whose cache is empty (counts == 0) is never a candidate nearest agent.
    """

    features: jax.Array  # [K, T, f]
    counts: jax.Array  # [K] int32, number of valid rows, <= T
    pointers: jax.Array  # [K] int32, next slot to write

    @classmethod
    def create(cls, num_agents: int, cache_size: int, feature_dim: int) -> FeatureCache:
        return cls(
            features=jnp.zeros((num_agents, cache_size, feature_dim), jnp.float32),
            counts=jnp.zeros((num_agents,), jnp.int32),
            pointers=jnp.zeros((num_agents,), jnp.int32),
        )


def push(
    cache: FeatureCache, agent_index: jax.Array, episode_features: jax.Array, length: jax.Array
) -> FeatureCache:
    """Append the first `length` rows of `episode_features` [D_max, f] to agent's FIFO."""
    d_max = episode_features.shape[0]
    t_max = cache.features.shape[1]
    length = jnp.asarray(length, jnp.int32)
    rows = jnp.arange(d_max)
    # When an episode is longer than the cache only its last T rows survive; writing only
    # those keeps the scatter indices unique (duplicate scatter targets have no defined order).
    keep = (rows < length) & (rows >= length - t_max)
    pointer = cache.pointers[agent_index]
    slots = jnp.where(keep, (pointer + rows) % t_max, t_max)  # t_max is out of range: dropped
    agent_rows = (
        cache.features[agent_index].at[slots].set(episode_features.astype(jnp.float32), mode="drop")
    )  # [T, f]
    return cache.replace(
        features=cache.features.at[agent_index].set(agent_rows),
        counts=cache.counts.at[agent_index].set(
            jnp.minimum(cache.counts[agent_index] + length, t_max)
        ),
        pointers=cache.pointers.at[agent_index].set((pointer + length) % t_max),
    )


def push_batch(
    cache: FeatureCache, agent_indices: jax.Array, episode_features: jax.Array, lengths: jax.Array
) -> FeatureCache:
    """Push several episodes [N, D_max, f] in order; repeated agent indices are appended in turn."""

    def step(
        c: FeatureCache, xs: tuple[jax.Array, jax.Array, jax.Array]
    ) -> tuple[FeatureCache, None]:
        index, feats, length = xs
        return push(c, index, feats, length), None

    cache, _ = jax.lax.scan(step, cache, (agent_indices, episode_features, lengths))
    return cache


def random_directions(key: jax.Array, num_directions: int, feature_dim: int) -> jax.Array:
    """M directions drawn uniformly on the unit sphere (normalised Gaussians). # [M, f]"""
    v = jax.random.normal(key, (num_directions, feature_dim), jnp.float32)
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def masked_argsort(values: jax.Array, counts: jax.Array) -> jax.Array:
    """Stable argsort along the last axis of `values` [..., n] whose first `counts` [...] entries are valid.

    Padding entries keep their positions at the end. Equals
    `jnp.argsort(jnp.where(valid, values, jnp.inf), axis=-1, stable=True)` for finite values.

    XLA:CPU sorts float keys (total-order comparator) and multi-operand (key, index) pairs
    several times slower than plain int32 vectors, and argsort dominates the reward's cost.
    So the floats become order-preserving int32 keys, which are sorted alone; each element's
    rank among distinct keys comes from a binary search. Without ties those ranks are the
    inverse permutation and one scatter finishes the job; with ties (duplicated feature
    states) a second int32 sort of the packed (rank * n + index) gives the stable order. One
    `lax.cond` over the whole batch picks the path, so the common tie-free case pays one sort.
    """
    n = values.shape[-1]
    batch_shape = values.shape[:-1]
    values = jnp.asarray(values, jnp.float32).reshape(-1, n)  # [B, n]
    counts = jnp.broadcast_to(jnp.asarray(counts, jnp.int32), batch_shape).reshape(-1, 1)  # [B, 1]
    index = jnp.arange(n, dtype=jnp.int32)
    valid = index < counts  # [B, n]
    values = jnp.where(values == 0.0, 0.0, values)  # -0.0 and +0.0 compare equal, so they must tie
    bits = jax.lax.bitcast_convert_type(values, jnp.int32)
    # Negative floats order backwards as sign-magnitude ints; flipping their magnitude fixes it.
    # INT32_MAX is a NaN pattern, above every finite key: padding sorts last.
    keys = jnp.where(valid, jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits), 2**31 - 1)
    sorted_keys = jnp.sort(keys, axis=-1)  # [B, n]
    first = jax.vmap(partial(jnp.searchsorted, side="left", method="scan_unrolled"))(
        sorted_keys, keys
    ).astype(jnp.int32)  # [B, n]
    has_ties = jnp.any((sorted_keys[:, 1:] == sorted_keys[:, :-1]) & valid[:, 1:])

    def without_ties() -> jax.Array:
        rank = jnp.where(valid, first, index)  # a permutation when valid keys are distinct
        return jax.vmap(lambda r: jnp.zeros(n, jnp.int32).at[r].set(index))(rank)

    def with_ties() -> jax.Array:
        if n * n >= 2**31:  # the packed key would overflow int32
            return jnp.argsort(keys, axis=-1, stable=True).astype(jnp.int32)
        return jnp.sort(first * n + index, axis=-1) % n

    return jax.lax.cond(has_ties, with_ties, without_ties).reshape(*batch_shape, n)


def transport_costs(
    a: jax.Array, d: jax.Array, b: jax.Array, t: jax.Array, directions: jax.Array
) -> jax.Array:
    """Per-state cost r(a_i) = mean_m c_m(a_i) of a [D_max, f] (first d valid) against b [T, f] (first t valid).

    d and t are clipped to >= 1; directions [M, f] are unit vectors. Returns [D_max], 0 beyond d.
    """
    d = jnp.clip(jnp.asarray(d, jnp.int32), 1, a.shape[0])
    t = jnp.clip(jnp.asarray(t, jnp.int32), 1, b.shape[0])
    directions = jnp.asarray(directions, jnp.float32)  # [M, f]
    order_a = masked_argsort(directions @ jnp.asarray(a, jnp.float32).T, d)  # [M, D_max]
    order_b = masked_argsort(directions @ jnp.asarray(b, jnp.float32).T, t)  # [M, T]
    return costs_from_orders(a, d, b, t, order_a, order_b)


def costs_from_orders(
    a: jax.Array,
    d: jax.Array,
    b: jax.Array,
    t: jax.Array,
    order_a: jax.Array,
    order_b: jax.Array,
) -> jax.Array:
    """`transport_costs` given the per-direction sorting orders order_a [M, D_max], order_b [M, T].

    The monotone plan between uniform masses is expressed on the integer grid of
    [0, d*t): A-cell i is [i*t, (i+1)*t), B-cell k is [k*d, (k+1)*d). Each of the at most
    d+t-1 nonzero cells of the plan is a segment between consecutive breakpoints and starts
    either at an A breakpoint i*t (B-cell k = i*t // d) or at a B breakpoint k*d inside an
    A-cell (i = k*d // t); its end is the nearer of the next A and next B breakpoint. Both
    families have closed forms, so no merge sort and no dense [D, T] coupling is needed, and
    integer arithmetic keeps segment masses exact. A segment of length L carries mass
    L / (d*t); normalised by a_i's mass 1/d it weighs L / t. Rows beyond d get 0.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    d_max, t_max = a.shape[0], b.shape[0]
    if d_max * t_max >= 2**31:
        raise ValueError(f"D_max * T = {d_max * t_max} overflows the int32 breakpoint grid")
    d = jnp.clip(jnp.asarray(d, jnp.int32), 1, d_max)
    t = jnp.clip(jnp.asarray(t, jnp.int32), 1, t_max)
    valid_a = jnp.arange(d_max) < d  # [D_max]
    valid_b = jnp.arange(t_max) < t  # [T]

    i = jnp.arange(d_max, dtype=jnp.int32)
    start_a = i * t
    k_of_a = start_a // d
    len_a = jnp.where(valid_a, jnp.minimum(start_a + t, (k_of_a + 1) * d) - start_a, 0)
    k_of_a = jnp.minimum(k_of_a, t_max - 1)

    k = jnp.arange(t_max, dtype=jnp.int32)
    start_b = k * d
    i_of_b = start_b // t
    len_b = jnp.where(
        valid_b & (start_b % t != 0), jnp.minimum(start_b + d, (i_of_b + 1) * t) - start_b, 0
    )
    i_of_b = jnp.minimum(i_of_b, d_max - 1)
    weight_a = len_a.astype(jnp.float32) / t.astype(jnp.float32)  # [D_max]
    weight_b = len_b.astype(jnp.float32) / t.astype(jnp.float32)  # [T]

    def cost_along(order_a: jax.Array, order_b: jax.Array) -> jax.Array:
        a_sorted, b_sorted = a[order_a], b[order_b]
        dist_a = jnp.linalg.norm(a_sorted - b_sorted[k_of_a], axis=-1)  # [D_max]
        dist_b = jnp.linalg.norm(a_sorted[i_of_b] - b_sorted, axis=-1)  # [T]
        sorted_cost = (weight_a * dist_a).at[i_of_b].add(weight_b * dist_b)  # [D_max]
        return jnp.zeros(d_max, jnp.float32).at[order_a].set(sorted_cost)

    costs = jax.vmap(cost_along)(order_a, order_b)  # [M, D_max]
    return jnp.where(valid_a, costs.mean(axis=0), 0.0)


def diversity_reward(
    config: DiversityConfig,
    key: jax.Array,
    features: jax.Array,
    length: jax.Array,
    cache: FeatureCache,
    agent_index: jax.Array,
) -> tuple[jax.Array, dict[str, Any]]:
    """Per-step diversity reward [D_max] (0 beyond `length`) of one finished episode.

    Call before pushing the episode into the cache. info: `nearest` (j*, or -1 when every
    other cache is empty or length is 0, in which case the reward is 0), `mean_distances` [K]
    (mean_i r_j(a_i), the plan-cost estimate of W1; +inf for the agent itself and for empty
    caches) and `mean_reward` (mean over the valid steps).
    """
    directions = random_directions(key, config.num_directions, cache.features.shape[2])  # [M, f]
    return _reward_along(config, directions, features, length, cache, agent_index)


def diversity_rewards_batch(
    config: DiversityConfig,
    key: jax.Array,
    features: jax.Array,
    lengths: jax.Array,
    cache: FeatureCache,
    agent_indices: jax.Array,
) -> tuple[jax.Array, dict[str, Any]]:
    """`diversity_reward` for N agents ending episodes together: features [N, D_max, f] -> [N, D_max].

    Every agent is scored against the same cache (push the N episodes afterwards). With
    `config.shared_batch_directions` agent n's result equals `diversity_reward(config, key, ...)`;
    otherwise it equals `diversity_reward(config, jax.random.split(key, N)[n], ...)`.
    """
    num_episodes, feature_dim = features.shape[0], cache.features.shape[2]

    def one(directions: jax.Array, f: jax.Array, n: jax.Array, i: jax.Array):
        return _reward_along(config, directions, f, n, cache, i)

    if config.shared_batch_directions:
        # Unbatched directions leave each cache's per-direction sort outside the vmap, so it
        # runs once per cache rather than once per (agent, cache) pair.
        directions = random_directions(key, config.num_directions, feature_dim)  # [M, f]
        return jax.vmap(one, in_axes=(None, 0, 0, 0))(directions, features, lengths, agent_indices)
    keys = jax.random.split(key, num_episodes)
    directions = jax.vmap(random_directions, in_axes=(0, None, None))(
        keys, config.num_directions, feature_dim
    )  # [N, M, f]
    # Nothing is shared here, and vmap would turn masked_argsort's tie-check cond into a
    # select running both paths (plus slow batched scatters on XLA:CPU): map in sequence.
    return jax.lax.map(lambda xs: one(*xs), (directions, features, lengths, agent_indices))


def _reward_along(
    config: DiversityConfig,
    directions: jax.Array,
    features: jax.Array,
    length: jax.Array,
    cache: FeatureCache,
    agent_index: jax.Array,
) -> tuple[jax.Array, dict[str, Any]]:
    """`diversity_reward` for given directions [M, f]."""
    num_agents, t_max, _ = cache.features.shape
    if t_max != config.cache_size:
        raise ValueError(f"cache holds T={t_max} states but config.cache_size={config.cache_size}")
    features = jnp.asarray(features, jnp.float32)
    d_max = features.shape[0]
    length = jnp.clip(jnp.asarray(length, jnp.int32), 0, d_max)

    # All caches share one sort call (and one tie check); A is sorted once, not once per cache.
    order_a = masked_argsort(directions @ features.T, length)  # [M, D_max]
    projected_b = jnp.einsum("mf,ktf->kmt", directions, cache.features)  # [K, M, T]
    order_b = masked_argsort(projected_b, cache.counts[:, None])  # [K, M, T]
    per_agent = jax.vmap(costs_from_orders, in_axes=(None, None, 0, 0, None, 0))(
        features, length, cache.features, cache.counts, order_a, order_b
    )  # [K, D_max]
    d = jnp.maximum(length, 1).astype(jnp.float32)
    candidate = (jnp.arange(num_agents) != agent_index) & (cache.counts > 0)  # [K]
    mean_distances = jnp.where(candidate, per_agent.sum(axis=1) / d, jnp.inf)  # [K]
    has_candidate = candidate.any() & (length > 0)
    nearest = jnp.where(has_candidate, jnp.argmin(mean_distances), -1)

    scale = config.reward_scale
    if config.episode_scaling:
        scale = scale * config.cache_size / d
    rewards = jnp.where(has_candidate, scale * per_agent[jnp.maximum(nearest, 0)], 0.0)  # [D_max]
    rewards = jnp.where(jnp.arange(d_max) < length, rewards, 0.0)
    info = {
        "nearest": nearest,
        "mean_distances": mean_distances,
        "mean_reward": rewards.sum() / d,
    }
    return rewards, info

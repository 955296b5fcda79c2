"""Tests of the Wasserstein diversity reward (SPEC section 3) and the exact-W1 utility."""

from fractions import Fraction
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from udg.diversity.exact import exact_w1, pairwise_exact_w1
from udg.diversity.wasserstein import (
    DiversityConfig,
    FeatureCache,
    diversity_reward,
    diversity_rewards_batch,
    masked_argsort,
    push,
    push_batch,
    random_directions,
    transport_costs,
)

# ---------------------------------------------------------------- slow reference of SPEC §3


def reference_transport_costs(a, d, b, t, directions):
    """Explicit north-west-corner loop over exact masses, dense [d, t] plan, per-pair loop."""
    a, b = np.asarray(a, np.float64)[:d], np.asarray(b, np.float64)[:t]
    costs = np.zeros(d)
    for v in np.asarray(directions):
        order_a = np.argsort(a.astype(np.float32) @ v, kind="stable")
        order_b = np.argsort(b.astype(np.float32) @ v, kind="stable")
        plan = np.zeros((d, t))
        i = k = 0
        left_a, left_b = Fraction(1, d), Fraction(1, t)
        while i < d and k < t:
            mass = min(left_a, left_b)
            plan[order_a[i], order_b[k]] += float(mass)
            left_a, left_b = left_a - mass, left_b - mass
            if left_a == 0:
                i, left_a = i + 1, Fraction(1, d)
            if left_b == 0:
                k, left_b = k + 1, Fraction(1, t)
        np.testing.assert_allclose(plan.sum(axis=1), 1.0 / d)
        np.testing.assert_allclose(plan.sum(axis=0), 1.0 / t)
        for row in range(d):
            for col in range(t):
                costs[row] += plan[row, col] * d * np.linalg.norm(a[row] - b[col])
    return costs / len(directions)


def reference_reward(config, directions, features, length, cache_features, counts, agent_index):
    totals, per_agent = {}, {}
    for j in range(len(counts)):
        if j == agent_index or counts[j] == 0:
            continue
        per_agent[j] = reference_transport_costs(
            features, length, cache_features[j], counts[j], directions
        )
        totals[j] = per_agent[j].sum()
    nearest = min(totals, key=totals.get)
    scale = config.reward_scale * (config.cache_size / length if config.episode_scaling else 1.0)
    rewards = np.zeros(len(features))
    rewards[:length] = scale * per_agent[nearest]
    return rewards, nearest


def random_cache(rng, num_agents, cache_size, feature_dim, counts):
    features = rng.normal(size=(num_agents, cache_size, feature_dim)).astype(np.float32)
    features += 2.0 * rng.normal(size=(num_agents, 1, feature_dim)).astype(np.float32)
    return FeatureCache(
        features=jnp.asarray(features),
        counts=jnp.asarray(counts, jnp.int32),
        pointers=jnp.asarray(np.asarray(counts) % cache_size, jnp.int32),
    )


reward_jit = jax.jit(diversity_reward, static_argnums=0)

# ---------------------------------------------------------------- equivalence with the reference


@pytest.mark.parametrize(
    ("d_max", "d", "t_max", "t", "duplicates"),
    [
        (20, 13, 30, 17, False),
        (30, 30, 30, 30, False),
        (12, 12, 7, 7, False),
        (40, 5, 25, 25, False),
        (9, 9, 27, 27, False),
        (16, 14, 24, 20, True),  # repeated states tie in every projection
    ],
)
def test_transport_costs_match_reference(d_max, d, t_max, t, duplicates):
    rng = np.random.default_rng(d_max * 100 + t)
    a = rng.normal(size=(d_max, 3)).astype(np.float32)
    b = (rng.normal(size=(t_max, 3)) + 0.5).astype(np.float32)
    if duplicates:
        a[1::3], b[1::2] = a[0::3][: len(a[1::3])], b[0::2][: len(b[1::2])]
    directions = np.asarray(random_directions(jax.random.key(t), 4, 3))
    costs = np.asarray(jax.jit(transport_costs)(a, d, b, t, directions))
    np.testing.assert_allclose(
        costs[:d], reference_transport_costs(a, d, b, t, directions), atol=1e-5, rtol=1e-5
    )
    assert np.all(costs[d:] == 0.0)


@pytest.mark.parametrize("episode_scaling", [True, False])
def test_diversity_reward_matches_reference(episode_scaling):
    rng = np.random.default_rng(1)
    config = DiversityConfig(
        num_directions=5, reward_scale=3.0, episode_scaling=episode_scaling, cache_size=24
    )
    counts = [24, 11, 0, 24, 5]
    cache = random_cache(rng, 5, 24, 2, counts)
    features = np.zeros((24, 2), np.float32)
    features[:19] = rng.normal(size=(19, 2)) + 1.0
    key = jax.random.key(7)
    rewards, info = reward_jit(config, key, features, 19, cache, 3)
    directions = np.asarray(random_directions(key, 5, 2))
    expected, nearest = reference_reward(
        config, directions, features, 19, np.asarray(cache.features), counts, 3
    )
    np.testing.assert_allclose(np.asarray(rewards), expected, atol=1e-5, rtol=1e-5)
    assert int(info["nearest"]) == nearest
    assert np.isinf(np.asarray(info["mean_distances"])[[2, 3]]).all()
    np.testing.assert_allclose(float(info["mean_reward"]), expected[:19].mean(), rtol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_batch_equals_loop(shared):
    rng = np.random.default_rng(2)
    config = DiversityConfig(cache_size=16, shared_batch_directions=shared)
    cache = random_cache(rng, 4, 16, 2, [16, 16, 9, 16])
    features = rng.normal(size=(4, 16, 2)).astype(np.float32)
    lengths = np.array([16, 7, 16, 12])
    key = jax.random.key(3)
    rewards, info = jax.jit(diversity_rewards_batch, static_argnums=0)(
        config, key, features, lengths, cache, jnp.arange(4)
    )
    keys = jax.random.split(key, 4)
    for n in range(4):
        one, one_info = reward_jit(
            config, key if shared else keys[n], features[n], lengths[n], cache, n
        )
        np.testing.assert_allclose(np.asarray(rewards[n]), np.asarray(one), rtol=1e-5, atol=1e-6)
        assert int(info["nearest"][n]) == int(one_info["nearest"])


# ---------------------------------------------------------------- laws (hypothesis)

PAD = 12
_jit_costs = jax.jit(transport_costs)
_jit_argsort = jax.jit(masked_argsort)


def _padded(points):
    out = np.zeros((PAD, points.shape[1]), np.float32)
    out[: len(points)] = points
    return out


@st.composite
def point_sets(draw, min_size=1):
    size = draw(st.integers(min_size, PAD))
    seed = draw(st.integers(0, 2**31 - 1))
    spread = draw(st.sampled_from([0.1, 1.0, 30.0]))
    rng = np.random.default_rng(seed)
    return (spread * rng.normal(size=(size, 2))).astype(np.float32), seed


@settings(max_examples=40, deadline=None)
@given(point_sets(), point_sets(), st.integers(0, 1000))
def test_plan_cost_never_below_exact_w1(set_a, set_b, seed):
    (a, _), (b, _) = set_a, set_b
    directions = np.asarray(random_directions(jax.random.key(seed), 5, 2))
    costs = np.asarray(_jit_costs(_padded(a), len(a), _padded(b), len(b), directions))
    w1 = exact_w1(a, b)
    assert costs[: len(a)].mean() >= w1 - 1e-5 * (1.0 + w1)


@settings(max_examples=30, deadline=None)
@given(point_sets(), st.integers(0, 1000), st.booleans())
def test_identical_sets_cost_zero(set_a, seed, duplicate):
    a, _ = set_a
    # A set repeated twice is the same measure; the duplicates tie in every projection.
    b = np.concatenate([a, a]) if duplicate and 2 * len(a) <= PAD else a
    directions = np.asarray(random_directions(jax.random.key(seed), 5, 2))
    costs = np.asarray(_jit_costs(_padded(a), len(a), _padded(b), len(b), directions))
    np.testing.assert_allclose(costs[: len(a)], 0.0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(point_sets(min_size=2), st.integers(0, 1000), st.floats(-20, 20), st.floats(-20, 20))
def test_translated_set_cost_is_shift_norm(set_b, seed, sx, sy):
    b, _ = set_b
    shift = np.array([sx, sy], np.float32)
    a = b + shift
    directions = np.asarray(random_directions(jax.random.key(seed), 5, 2))
    # Near-ties in projection may swap under float rounding; the law is about exact order.
    gaps = np.diff(np.sort(b.astype(np.float64) @ directions.T.astype(np.float64), axis=0), axis=0)
    assume(gaps.min() > 1e-3 * (1.0 + np.abs(b).max() + np.abs(shift).max()))
    costs = np.asarray(_jit_costs(_padded(a), len(a), _padded(b), len(b), directions))
    tolerance = 1e-5 * (1.0 + np.abs(b).max() + np.abs(shift).max())
    np.testing.assert_allclose(costs[: len(a)], np.linalg.norm(shift), atol=tolerance)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        # XLA:CPU flushes subnormals to zero (NumPy does not), so keep magnitudes normal.
        st.integers(-3, 3)
        | st.floats(-1e6, 1e6, width=32).filter(lambda v: v == 0 or abs(v) > 1e-30),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([1.0, -0.5, 1e-3]),
    st.integers(0, 20),
)
def test_masked_argsort_equals_stable_argsort(values, factor, count):
    """Covers both paths: distinct keys (one sort) and ties (packed second sort)."""
    x = np.full((2, 20), 7.0, np.float32)  # padding content must not matter
    x[0, : len(values)] = np.asarray(values, np.float32) * np.float32(factor)
    x[1] = np.arange(20, dtype=np.float32)[::-1] * np.float32(factor)  # never ties
    counts = np.array([min(count, len(values)), count])
    expected = np.argsort(
        np.where(np.arange(20) < counts[:, None], x, np.inf), axis=-1, kind="stable"
    )
    # Batched, one tie check decides for both rows; alone, each row takes its own path.
    np.testing.assert_array_equal(np.asarray(_jit_argsort(x, counts)), expected)
    for row in range(2):
        np.testing.assert_array_equal(np.asarray(_jit_argsort(x[row], counts[row])), expected[row])


# ---------------------------------------------------------------- nearest agent, masking, scaling


def _cluster(rng, centre, size):
    return (np.asarray(centre, np.float32) + 0.1 * rng.normal(size=(size, 2))).astype(np.float32)


def test_nearest_agent_ignores_self_and_empty_caches():
    rng = np.random.default_rng(4)
    episode = _cluster(rng, [0.0, 0.0], 8)
    centres = [[0.0, 0.0], [5.0, 0.0], [0.0, 0.1], [1.0, 1.0], [0.0, 0.0]]
    features = np.stack([_cluster(rng, c, 8) for c in centres])
    cache = FeatureCache(
        features=jnp.asarray(features),
        counts=jnp.asarray([8, 8, 0, 8, 8], jnp.int32),
        pointers=jnp.zeros(5, jnp.int32),
    )
    config = DiversityConfig(cache_size=8)
    # Agent 0's own cache and the empty cache 2 are nearest by construction, agent 4 next.
    _, info = reward_jit(config, jax.random.key(0), episode, 8, cache, 0)
    assert int(info["nearest"]) == 4
    distances = np.asarray(info["mean_distances"])
    assert np.isinf(distances[[0, 2]]).all() and np.isfinite(distances[[1, 3, 4]]).all()
    assert distances[1] > distances[3] > distances[4]
    _, info = reward_jit(config, jax.random.key(0), episode, 8, cache, 4)
    assert int(info["nearest"]) == 0


def test_no_candidate_gives_zero_reward():
    cache = FeatureCache.create(3, 6, 2)
    cache = push(cache, 1, jnp.ones((6, 2)), 6)
    rewards, info = reward_jit(
        DiversityConfig(cache_size=6), jax.random.key(0), jnp.zeros((6, 2)), 6, cache, 1
    )
    assert int(info["nearest"]) == -1
    assert np.all(np.asarray(rewards) == 0.0)


def test_episode_scaling_multiplies_by_t_over_d():
    rng = np.random.default_rng(5)
    cache = random_cache(rng, 3, 20, 2, [20, 20, 20])
    features = rng.normal(size=(20, 2)).astype(np.float32)
    scaled, _ = reward_jit(
        DiversityConfig(cache_size=20, reward_scale=2.0), jax.random.key(1), features, 8, cache, 0
    )
    plain, _ = reward_jit(
        DiversityConfig(cache_size=20, reward_scale=2.0, episode_scaling=False),
        jax.random.key(1),
        features,
        8,
        cache,
        0,
    )
    assert np.all(np.asarray(plain)[:8] > 0.0) and np.all(np.asarray(plain)[8:] == 0.0)
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(plain) * 20 / 8, rtol=1e-6)


# ---------------------------------------------------------------- FIFO cache


def _rows(start, count):
    return np.stack(
        [np.arange(start, start + count), -np.arange(start, start + count)], axis=1
    ).astype(np.float32)


def test_push_fifo_wraparound():
    cache = FeatureCache.create(2, 5, 2)
    padded = np.zeros((7, 2), np.float32)
    padded[:3] = _rows(0, 3)
    cache = push(cache, 1, padded, 3)
    assert cache.counts.tolist() == [0, 3] and cache.pointers.tolist() == [0, 3]
    np.testing.assert_array_equal(np.asarray(cache.features[1, :3]), _rows(0, 3))
    assert np.all(np.asarray(cache.features[0]) == 0.0)

    padded[:4] = _rows(3, 4)
    cache = push(cache, 1, padded, 4)  # rows 3..6: 3, 4 fill slots 3, 4; 5, 6 overwrite 0, 1
    assert cache.counts.tolist() == [0, 5] and cache.pointers.tolist() == [0, 2]
    np.testing.assert_array_equal(np.asarray(cache.features[1]), _rows(0, 7)[[5, 6, 2, 3, 4]])

    cache = push(cache, 1, padded, 0)
    assert cache.pointers.tolist() == [0, 2]
    np.testing.assert_array_equal(np.asarray(cache.features[1]), _rows(0, 7)[[5, 6, 2, 3, 4]])


def test_push_longer_than_cache_keeps_last_rows():
    cache = FeatureCache.create(1, 5, 2)
    cache = push(cache, 0, _rows(0, 2), 2)
    cache = push(cache, 0, _rows(10, 8), 7)  # rows 10..16 through pointer 2: last five survive
    assert cache.counts.tolist() == [5] and cache.pointers.tolist() == [4]
    expected = np.empty((5, 2), np.float32)
    for offset, row in enumerate(_rows(10, 7)):
        expected[(2 + offset) % 5] = row
    np.testing.assert_array_equal(np.asarray(cache.features[0]), expected)
    np.testing.assert_array_equal(np.sort(np.asarray(cache.features[0, :, 0])), np.arange(12, 17))


def test_push_batch_equals_sequential_pushes():
    rng = np.random.default_rng(6)
    episodes = rng.normal(size=(3, 4, 2)).astype(np.float32)
    indices, lengths = np.array([2, 0, 2]), np.array([4, 2, 3])
    batched = jax.jit(push_batch)(FeatureCache.create(3, 6, 2), indices, episodes, lengths)
    sequential = FeatureCache.create(3, 6, 2)
    for n in range(3):
        sequential = push(sequential, indices[n], episodes[n], lengths[n])
    chex.assert_trees_all_equal(batched, sequential)


def test_jitted_reward_and_push_do_not_retrace_across_lengths():
    config = DiversityConfig(cache_size=10)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def push_fn(cache, index, features, length):
        return push(cache, index, features, length)

    @partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def reward_fn(config, key, features, length, cache, index):
        return diversity_reward(config, key, features, length, cache, index)

    @partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def batch_fn(config, key, features, lengths, cache, indices):
        return diversity_rewards_batch(config, key, features, lengths, cache, indices)

    rng = np.random.default_rng(7)
    cache = FeatureCache.create(3, 10, 2)
    for step, length in enumerate([10, 4, 7, 1]):
        features = rng.normal(size=(10, 2)).astype(np.float32)
        reward_fn(config, jax.random.key(length), features, jnp.int32(length), cache, jnp.int32(0))
        batch_fn(
            config,
            jax.random.key(length),
            np.stack([features] * 3),
            jnp.full(3, length, jnp.int32),
            cache,
            jnp.arange(3),
        )
        cache = push_fn(cache, jnp.int32(step % 3), features, jnp.int32(length))
    assert cache.counts.tolist() == [10, 4, 7]


def test_config_validation():
    with pytest.raises(ValueError, match="num_directions"):
        DiversityConfig(num_directions=0)
    with pytest.raises(ValueError, match="cache_size"):
        reward_jit(
            DiversityConfig(cache_size=8),
            jax.random.key(0),
            jnp.zeros((4, 2)),
            4,
            FeatureCache.create(2, 5, 2),
            0,
        )


# ---------------------------------------------------------------- exact W1


def test_exact_w1_hand_computable():
    assert exact_w1(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx(5.0)
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(40, 1)), rng.normal(2.0, 3.0, size=(40, 1))
    assert exact_w1(x, y) == pytest.approx(np.abs(np.sort(x[:, 0]) - np.sort(y[:, 0])).mean())
    # Half the mass moves 2, half stays: W1 = 1.
    assert exact_w1(np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])) == pytest.approx(1.0)


def test_exact_w1_subsamples_large_sets():
    rng = np.random.default_rng(9)
    x = np.concatenate([np.zeros((300, 2)), np.ones((300, 2))])
    y = x + np.array([3.0, 4.0])
    assert exact_w1(x, y, max_points=50, rng=rng) == pytest.approx(5.0, abs=0.25)
    z = rng.normal(size=(600, 2))
    same_seed = [exact_w1(x, z, max_points=50, rng=np.random.default_rng(1)) for _ in range(2)]
    assert same_seed[0] == same_seed[1]
    assert exact_w1(x, z, max_points=50, rng=np.random.default_rng(2)) != same_seed[0]


def test_pairwise_exact_w1():
    rng = np.random.default_rng(10)
    sets = [rng.normal(size=(30, 2)) + shift for shift in (0.0, 2.0, 5.0)]
    matrix = pairwise_exact_w1(sets)
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    assert matrix[0, 1] == pytest.approx(exact_w1(sets[0], sets[1]))
    assert matrix[0, 2] > matrix[0, 1]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros(3), np.zeros((3, 1)), "2-D"),
        (np.zeros((3, 2)), np.zeros((3, 3)), "same feature dim"),
        (np.zeros((0, 2)), np.zeros((3, 2)), "non-empty"),
        (np.array([[0.0, np.nan]]), np.zeros((3, 2)), "NaN or infinite"),
        (np.zeros((3, 2)), np.array([[np.inf, 0.0]]), "NaN or infinite"),
    ],
)
def test_exact_w1_rejects_bad_inputs(x, y, message):
    with pytest.raises(ValueError, match=message):
        exact_w1(x, y)


def test_exact_w1_rejects_bad_max_points_and_mixed_dims():
    with pytest.raises(ValueError, match="max_points"):
        exact_w1(np.zeros((2, 2)), np.zeros((2, 2)), max_points=0)
    with pytest.raises(ValueError, match="same feature dim"):
        pairwise_exact_w1([np.zeros((2, 2)), np.zeros((2, 3))])

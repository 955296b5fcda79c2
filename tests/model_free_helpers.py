"""What the tests of the model-free learners (TD3+BC, IQL) share: tiny shapes, random batches and
observation statistics, tree comparisons, the pieces of the hand-written references (a dense
layer, a twin critic, Adam), the population check (members == separate learners) and a one-step
bandit that behaviour cloning alone misses."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from udg.offline import model_free

OBS_DIM, ACT_DIM, BATCH, NUM_MEMBERS = 3, 2, 8, 2


def random_batch(rng: np.random.Generator, *lead: int) -> dict[str, jnp.ndarray]:
    shape = (*lead, BATCH)
    return {
        # Off-centre and scaled, so that the normalisation matters.
        "observations": jnp.asarray(2.0 + 3.0 * rng.normal(size=(*shape, OBS_DIM)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(*shape, ACT_DIM)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=shape), jnp.float32),
        "next_observations": jnp.asarray(
            2.0 + 3.0 * rng.normal(size=(*shape, OBS_DIM)), jnp.float32
        ),
        "terminations": jnp.asarray(rng.uniform(size=shape) < 0.3, jnp.float32),
    }


def random_stats(rng: np.random.Generator, *lead: int) -> model_free.ObservationStats:
    return model_free.ObservationStats(
        mean=jnp.asarray(2.0 + rng.normal(size=(*lead, OBS_DIM)), jnp.float32),
        std=jnp.asarray(rng.uniform(1.0, 4.0, size=(*lead, OBS_DIM)), jnp.float32),
    )


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    chex.assert_trees_all_equal_structs(a, b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def assert_trees_differ(a, b):
    assert any(
        not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def index(tree, k: int):
    """Member k of every leaf (through NumPy: eager jax slicing compiles per leaf shape)."""
    return jax.tree.map(lambda x: np.asarray(x)[k], tree)


# ------------------------------------------------------------- the hand-written references


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def reference_actor_mean(params, observations):
    """tanh(MLP(s)) of an actor of two hidden layers."""
    p = params["params"]
    h = jax.nn.relu(dense(p["MLP_0"]["Dense_0"], observations))
    h = jax.nn.relu(dense(p["MLP_0"]["Dense_1"], h))
    return jnp.tanh(dense(p["Dense_0"], h))


def reference_q(params, j, observations, actions):
    """Critic j on the concatenation [s, a] (the module splits its first layer in two)."""
    p = jax.tree.map(lambda x: x[j], params["params"]["VmapStateActionValue_0"])
    first = jnp.concatenate([p["observation_layer"]["kernel"], p["action_layer"]["kernel"]])
    inputs = jnp.concatenate([observations, actions], -1)
    h = jax.nn.relu(inputs @ first + p["observation_layer"]["bias"])
    h = jax.nn.relu(dense(p["MLP_0"]["Dense_0"], h))
    return dense(p["output_layer"], h)[:, 0]


def reference_adam(params, grads, moments, count, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba 2015) by hand; ``count`` is the step number, from 1."""
    m, v = moments
    m = jax.tree.map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
    new = jax.tree.map(
        lambda p, m_, v_: p - lr * (m_ / (1 - b1**count)) / (jnp.sqrt(v_ / (1 - b2**count)) + eps),
        params,
        m,
        v,
    )
    return new, (m, v)


def zeros_like(tree):
    return (jax.tree.map(jnp.zeros_like, tree), jax.tree.map(jnp.zeros_like, tree))


# ------------------------------------------------------------------------------ population


def check_members_equal_separate_learners(functions, create, update, update_members, config):
    """A population of NUM_MEMBERS learners, each with its own normalisation, created as one and
    updated twice as one, equals the learners created and updated one by one (``create`` and
    ``update`` jitted, ``update_members`` the member path under test); returns the fresh
    population for the learner's own checks."""
    rng = np.random.default_rng(4)
    keys = jax.random.split(jax.random.key(5), NUM_MEMBERS)
    stats = random_stats(rng, NUM_MEMBERS)  # each member its own normalisation
    members = functions.create_members(keys, OBS_DIM, ACT_DIM, config, stats)
    first = create(keys[0], OBS_DIM, ACT_DIM, config, index(stats, 0))
    assert_trees_close(index(members, 0), first)

    batches = random_batch(rng, NUM_MEMBERS)
    key1, key2 = jax.random.key(6), jax.random.key(7)
    new, _ = update_members(members, batches, key1)
    new, metrics = update_members(new, batches, key2)
    keys1, keys2 = jax.random.split(key1, NUM_MEMBERS), jax.random.split(key2, NUM_MEMBERS)
    for k in range(NUM_MEMBERS):
        state, _ = update(index(members, k), index(batches, k), keys1[k])
        state, single_metrics = update(state, index(batches, k), keys2[k])
        assert_trees_close(index(new, k), state)
        assert_trees_close(index(metrics, k), single_metrics)
    kernels = new.actor_params["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])  # the test can fail
    return members


# ------------------------------------------------------------------------------ learning


def bandit_data(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A one-step problem: s ~ U(-1, 1), reward 1 - 10 (a - 0.5 s)^2 (the offset keeps
    |Q(s, pi(s))| near 1, so TD3+BC's lambda near alpha), every step terminal. Half the data from
    a noisy good policy (0.5 s + N(0, 0.1^2)), half uniform random actions."""
    observations = rng.uniform(-1, 1, size=(size, 1))
    good = np.clip(0.5 * observations + 0.1 * rng.normal(size=(size, 1)), -1, 1)
    actions = np.where(rng.uniform(size=(size, 1)) < 0.5, good, rng.uniform(-1, 1, (size, 1)))
    return {
        "observations": observations.astype(np.float32),
        "actions": actions.astype(np.float32),
        "rewards": (1.0 - 10.0 * (actions[:, 0] - 0.5 * observations[:, 0]) ** 2).astype(
            np.float32
        ),
        "next_observations": observations.astype(np.float32),
        "terminations": np.ones(size, np.float32),
    }


def bandit_greedy_actions(functions, create, config, updates: int = 500):
    """A learner trained for ``updates`` (two jitted calls) on 4096 bandit transitions; the
    test observations ``[7, 1]`` and its greedy actions for them."""
    rng = np.random.default_rng(0)
    data = bandit_data(rng, 4096)
    stats = model_free.observation_stats(data["observations"])
    state = create(jax.random.key(0), 1, 1, config, stats)
    key = jax.random.key(1)
    for _ in range(2):
        idx = rng.integers(0, len(data["rewards"]), size=(updates // 2, config.batch_size))
        key, update_key = jax.random.split(key)
        state, _ = functions.jit_update_n(state, {k: v[idx] for k, v in data.items()}, update_key)
    test_obs = jnp.linspace(-0.9, 0.9, 7)[:, None]
    return test_obs, functions.jit_act(state, test_obs)

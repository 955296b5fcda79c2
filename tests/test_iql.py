"""Tests of the IQL learner: two iterations against a hand-written reference (cosine actor
schedule included), no retracing, the population update, the greedy policy, the reward scale
helper and a learning check on a one-step bandit. Tiny networks; the file runs in seconds once
compiled."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from udg.errors import ConfigError
from udg.offline import iql, model_free

OBS_DIM, ACT_DIM, BATCH, NUM_MEMBERS = 3, 2, 8, 2
# A larger learning rate than the paper's, so that one step moves the parameters well beyond
# the comparison tolerance; a 4-update cosine schedule, so that its decay shows at step 2.
TINY = iql.IQLConfig(
    hidden_dims=(32, 32),
    batch_size=BATCH,
    actor_lr=1e-2,
    critic_lr=1e-2,
    value_lr=1e-2,
    num_updates=4,
)
# Shared jitted functions, each compiled once for the file: every test calls them with TINY
# and the same shapes, so one trace must suffice.
# Jitted: an eager flax init dispatches op by op (seconds on 2 cores).
CREATE = jax.jit(iql.IQL.create, static_argnums=(1, 2, 3))
UPDATE = jax.jit(chex.assert_max_traces(iql.update, n=1))
UPDATE_MEMBERS = jax.jit(functools.partial(iql.update_members, vectorize=True))


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


@pytest.fixture(scope="module")
def learner() -> iql.IQL:
    return CREATE(jax.random.key(0), OBS_DIM, ACT_DIM, TINY, random_stats(np.random.default_rng(0)))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    chex.assert_trees_all_equal_structs(a, b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def index(tree, k: int):
    """Member k of every leaf (through NumPy: eager jax slicing compiles per leaf shape)."""
    return jax.tree.map(lambda x: np.asarray(x)[k], tree)


# ------------------------------------------------------------- the hand-written reference


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def reference_actor(params, observations):
    """(mean, std) of the Gaussian policy."""
    p = params["params"]
    h = jax.nn.relu(dense(p["MLP_0"]["Dense_0"], observations))
    h = jax.nn.relu(dense(p["MLP_0"]["Dense_1"], h))
    return jnp.tanh(dense(p["Dense_0"], h)), jnp.exp(jnp.clip(p["log_std"], -5.0, 2.0))


def reference_value(params, observations):
    p = params["params"]["MLP_0"]
    h = jax.nn.relu(dense(p["Dense_0"], observations))
    h = jax.nn.relu(dense(p["Dense_1"], h))
    return dense(p["Dense_2"], h)[:, 0]


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


def reference_two_steps(learner, batches):
    """Two IQL iterations written from the paper's equations: value, actor, critic, target."""
    c = TINY
    actor, critic, value = learner.actor_params, learner.critic_params, learner.value_params
    target = critic
    moments = {"actor": zeros_like(actor), "critic": zeros_like(critic), "value": zeros_like(value)}
    mean, std = learner.obs_stats.mean, learner.obs_stats.std
    losses = []
    for t, batch in enumerate(batches, start=1):
        s = (batch["observations"] - mean) / std
        s2 = (batch["next_observations"] - mean) / std
        a = batch["actions"]
        q_target = jnp.minimum(reference_q(target, 0, s, a), reference_q(target, 1, s, a))

        def value_loss(p, s=s, q_target=q_target):
            u = q_target - reference_value(p, s)
            return jnp.mean(jnp.where(u < 0, 1 - c.expectile, c.expectile) * u**2)

        loss, grads = jax.value_and_grad(value_loss)(value)
        losses.append(loss)
        value, moments["value"] = reference_adam(value, grads, moments["value"], t, c.value_lr)

        weights = jnp.minimum(jnp.exp(c.temperature * (q_target - reference_value(value, s))), 100)

        def actor_loss(p, s=s, a=a, weights=weights):
            mu, sigma = reference_actor(p, s)
            log_prob = jnp.sum(
                -0.5 * ((a - mu) / sigma) ** 2 - jnp.log(sigma) - 0.5 * math.log(2 * math.pi), -1
            )
            return -jnp.mean(weights * log_prob)

        loss, grads = jax.value_and_grad(actor_loss)(actor)
        losses.append(loss)
        # Cosine decay to 0 over num_updates; step t uses the rate at count t - 1.
        lr = c.actor_lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / c.num_updates))
        actor, moments["actor"] = reference_adam(actor, grads, moments["actor"], t, lr)

        y = batch["rewards"] + c.gamma * (1 - batch["terminations"]) * reference_value(value, s2)

        def critic_loss(p, s=s, a=a, y=y):
            return sum(jnp.mean((reference_q(p, j, s, a) - y) ** 2) for j in (0, 1))

        loss, grads = jax.value_and_grad(critic_loss)(critic)
        losses.append(loss)
        critic, moments["critic"] = reference_adam(critic, grads, moments["critic"], t, c.critic_lr)
        target = jax.tree.map(lambda p, q: c.tau * p + (1 - c.tau) * q, critic, target)
    return actor, critic, target, value, losses


# ------------------------------------------------------------------------------ update


def test_two_updates_equal_hand_written_reference(learner):
    rng = np.random.default_rng(1)
    batches = [random_batch(rng), random_batch(rng)]
    state, metrics1 = UPDATE(learner, batches[0], jax.random.key(1))
    state, metrics2 = UPDATE(state, batches[1], jax.random.key(2))
    # Jitted: one compile is faster than the eager reference's op-by-op dispatch.
    actor, critic, target, value, losses = jax.jit(reference_two_steps)(learner, batches)
    assert_trees_close(state.actor_params, actor)
    assert_trees_close(state.critic_params, critic)
    assert_trees_close(state.target_critic_params, target)
    assert_trees_close(state.value_params, value)
    # The losses catch a wrong scale, to which Adam's step is blind (float32 noise ~1e-5).
    names = ("value_loss", "actor_loss", "critic_loss")
    found = [m[name] for m in (metrics1, metrics2) for name in names]
    np.testing.assert_allclose(found, losses, rtol=1e-4)
    np.testing.assert_allclose(
        [metrics1["actor_lr"], metrics2["actor_lr"]],
        [TINY.actor_lr, TINY.actor_lr * 0.5 * (1 + math.cos(math.pi / 4))],
        rtol=1e-6,
    )
    assert int(state.step) == 2


def test_jitted_update_does_not_retrace(learner):
    # UPDATE allows one trace for the whole file.
    rng = np.random.default_rng(3)
    state = learner
    for t in range(3):
        state, metrics = UPDATE(state, random_batch(rng), jax.random.key(t))
    assert int(state.step) == 3
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_population_update_equals_separate_updates():
    rng = np.random.default_rng(4)
    keys = jax.random.split(jax.random.key(5), NUM_MEMBERS)
    stats = random_stats(rng, NUM_MEMBERS)  # each member its own normalisation
    members = iql.create_members(keys, OBS_DIM, ACT_DIM, TINY, stats)
    assert members.value_params["params"]["MLP_0"]["Dense_2"]["kernel"].shape == (
        NUM_MEMBERS,
        32,
        1,
    )
    first = CREATE(keys[0], OBS_DIM, ACT_DIM, TINY, index(stats, 0))
    assert_trees_close(index(members, 0), first)

    batches = random_batch(rng, NUM_MEMBERS)
    key1, key2 = jax.random.key(6), jax.random.key(7)
    new, _ = UPDATE_MEMBERS(members, batches, key1)
    new, metrics = UPDATE_MEMBERS(new, batches, key2)
    keys1, keys2 = jax.random.split(key1, NUM_MEMBERS), jax.random.split(key2, NUM_MEMBERS)
    for k in range(NUM_MEMBERS):
        state, _ = UPDATE(index(members, k), index(batches, k), keys1[k])
        state, single_metrics = UPDATE(state, index(batches, k), keys2[k])
        assert_trees_close(index(new, k), state)
        assert_trees_close(index(metrics, k), single_metrics)
    kernels = new.actor_params["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])  # the test can fail


# ------------------------------------------------------------------- policy and helpers


def test_act_is_the_tanh_mean_of_normalised_observations(learner):
    observations = jnp.asarray(np.random.default_rng(11).normal(size=(5, OBS_DIM)) * 10)
    actions = iql.act(learner, observations)
    normalized = (observations - learner.obs_stats.mean) / learner.obs_stats.std
    mean, _ = reference_actor(learner.actor_params, normalized)
    np.testing.assert_allclose(actions, mean, rtol=1e-5, atol=1e-6)
    assert actions.shape == (5, ACT_DIM)
    assert np.all(np.abs(actions) <= 1.0)


def test_expectile_loss_is_asymmetric():
    diff = jnp.asarray([-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(
        iql.expectile_loss(diff, 0.7), [0.3 * 4, 0.3, 0.0, 0.7, 0.7 * 4], rtol=1e-6
    )
    np.testing.assert_allclose(iql.expectile_loss(diff, 0.5), 0.5 * diff**2)


def test_return_range_scale():
    assert model_free.return_range_scale(np.array([10.0, 110.0, 60.0])) == pytest.approx(10.0)
    assert model_free.return_range_scale([0.0, 4.0], max_episode_steps=200) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="range is zero"):
        model_free.return_range_scale([3.0, 3.0])


def test_config_validation():
    with pytest.raises(ConfigError, match="cosine, constant"):
        iql.IQLConfig(actor_schedule="linear")
    with pytest.raises(ConfigError, match="expectile"):
        iql.IQLConfig(expectile=1.0)
    with pytest.raises(ConfigError, match="num_updates"):
        iql.IQLConfig(num_updates=0)
    assert iql.IQLConfig(actor_schedule="constant").actor_learning_rate() == 3e-4
    schedule = iql.IQLConfig(num_updates=10).actor_learning_rate()
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [3e-4, 1.5e-4, 0.0])
    with pytest.raises(ValueError, match="obs_stats"):
        iql.IQL.create(jax.random.key(0), OBS_DIM, ACT_DIM, TINY)


# ------------------------------------------------------------------------------ learning


def bandit_data(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A one-step problem: s ~ U(-1, 1), reward 1 - 10 (a - 0.5 s)^2, every step terminal.
    Half the data from a noisy good policy (0.5 s + N(0, 0.1^2)), half uniform random
    actions."""
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


def test_iql_learns_the_best_action_of_a_bandit():
    updates = 500
    config = iql.IQLConfig(
        hidden_dims=(64, 64),
        batch_size=64,
        actor_lr=1e-3,
        critic_lr=1e-3,
        value_lr=1e-3,
        num_updates=updates,
    )
    rng = np.random.default_rng(0)
    data = bandit_data(rng, 4096)
    stats = model_free.observation_stats(data["observations"])
    state = CREATE(jax.random.key(0), 1, 1, config, stats)
    key = jax.random.key(1)
    for _ in range(2):  # 2 x 250 updates
        idx = rng.integers(0, len(data["rewards"]), size=(updates // 2, config.batch_size))
        key, update_key = jax.random.split(key)
        state, _ = iql.jit_update_n(state, {k: v[idx] for k, v in data.items()}, update_key)
    test_obs = jnp.linspace(-0.9, 0.9, 7)[:, None]
    greedy = iql.jit_act(state, test_obs)
    np.testing.assert_allclose(greedy[:, 0], 0.5 * test_obs[:, 0], atol=0.1)

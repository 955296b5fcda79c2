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
from model_free_helpers import (
    ACT_DIM,
    BATCH,
    NUM_MEMBERS,
    OBS_DIM,
    assert_trees_close,
    bandit_greedy_actions,
    check_members_equal_separate_learners,
    dense,
    random_batch,
    random_stats,
    reference_actor_mean,
    reference_adam,
    reference_q,
    zeros_like,
)

from udg.errors import ConfigError
from udg.offline import iql, model_free

FUNCTIONS = iql.FUNCTIONS
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
UPDATE_MEMBERS = jax.jit(functools.partial(FUNCTIONS.update_members, vectorize=True))


@pytest.fixture(scope="module")
def learner() -> iql.IQL:
    return CREATE(jax.random.key(0), OBS_DIM, ACT_DIM, TINY, random_stats(np.random.default_rng(0)))


# ------------------------------------------------------------- the hand-written reference


def reference_actor(params, observations):
    """(mean, std) of the Gaussian policy."""
    std = jnp.exp(jnp.clip(params["params"]["log_std"], -5.0, 2.0))
    return reference_actor_mean(params, observations), std


def reference_value(params, observations):
    p = params["params"]["MLP_0"]
    h = jax.nn.relu(dense(p["Dense_0"], observations))
    h = jax.nn.relu(dense(p["Dense_1"], h))
    return dense(p["Dense_2"], h)[:, 0]


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
    members = check_members_equal_separate_learners(FUNCTIONS, CREATE, UPDATE, UPDATE_MEMBERS, TINY)
    assert members.value_params["params"]["MLP_0"]["Dense_2"]["kernel"].shape == (
        NUM_MEMBERS,
        32,
        1,
    )


# ------------------------------------------------------------------- policy and helpers


def test_act_is_the_tanh_mean_of_normalised_observations(learner):
    observations = jnp.asarray(np.random.default_rng(11).normal(size=(5, OBS_DIM)) * 10)
    actions = FUNCTIONS.act(learner, observations)
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
    test_obs, greedy = bandit_greedy_actions(FUNCTIONS, CREATE, config, updates)  # 2 x 250
    np.testing.assert_allclose(greedy[:, 0], 0.5 * test_obs[:, 0], atol=0.1)

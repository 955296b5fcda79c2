"""Tests of the TD3+BC learner: one iteration against a hand-written reference, the delayed
actor, no retracing, the population update, the observation normalisation and a learning check
on a one-step bandit. Tiny networks; the file runs in seconds once compiled."""

import functools

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
    assert_trees_differ,
    bandit_greedy_actions,
    check_members_equal_separate_learners,
    index,
    random_batch,
    random_stats,
    reference_adam,
    reference_q,
    zeros_like,
)
from model_free_helpers import reference_actor_mean as reference_actor

from udg.errors import ConfigError
from udg.offline import model_free, td3bc

FUNCTIONS = td3bc.FUNCTIONS
# A larger learning rate than the paper's, so that one step moves the parameters well beyond
# the comparison tolerance.
TINY = td3bc.TD3BCConfig(hidden_dims=(32, 32), batch_size=BATCH, actor_lr=1e-2, critic_lr=1e-2)
# Shared jitted functions, each compiled once for the file: every test calls them with TINY
# and the same shapes, so one trace must suffice.
# Jitted: an eager flax init dispatches op by op (seconds on 2 cores).
CREATE = jax.jit(td3bc.TD3BC.create, static_argnums=(1, 2, 3))
UPDATE = jax.jit(chex.assert_max_traces(td3bc.update, n=1))
UPDATE_MEMBERS = jax.jit(functools.partial(FUNCTIONS.update_members, vectorize=True))
UPDATE_MEMBERS_N = jax.jit(FUNCTIONS.update_members_n)  # the backend default: lax.map on CPU


@pytest.fixture(scope="module")
def learner() -> td3bc.TD3BC:
    return CREATE(jax.random.key(0), OBS_DIM, ACT_DIM, TINY, random_stats(np.random.default_rng(0)))


# ------------------------------------------------------------- the hand-written reference


def reference_two_steps(learner, batches, keys):
    """Two TD3+BC iterations with policy delay 2: critic only, then critic, actor, targets."""
    c = TINY
    actor, critic = learner.actor_params, learner.critic_params
    target_actor, target_critic = actor, critic
    critic_moments, actor_moments = zeros_like(critic), zeros_like(actor)
    mean, std = learner.obs_stats.mean, learner.obs_stats.std
    losses = []
    for t, (batch, key) in enumerate(zip(batches, keys, strict=True), start=1):
        s = (batch["observations"] - mean) / std
        s2 = (batch["next_observations"] - mean) / std
        eps = jnp.clip(c.policy_noise * jax.random.normal(key, (BATCH, ACT_DIM)), -0.5, 0.5)
        a2 = jnp.clip(reference_actor(target_actor, s2) + eps, -1, 1)
        q2 = jnp.minimum(
            reference_q(target_critic, 0, s2, a2), reference_q(target_critic, 1, s2, a2)
        )
        y = batch["rewards"] + c.gamma * (1 - batch["terminations"]) * q2

        def critic_loss(p, s=s, y=y, a=batch["actions"]):
            return sum(jnp.mean((reference_q(p, j, s, a) - y) ** 2) for j in (0, 1))

        loss, grads = jax.value_and_grad(critic_loss)(critic)
        losses.append(loss)
        critic, critic_moments = reference_adam(critic, grads, critic_moments, t, c.critic_lr)
        if t % c.policy_delay == 0:

            def actor_loss(p, s=s, critic=critic, a=batch["actions"]):
                pi = reference_actor(p, s)
                q = reference_q(critic, 0, s, pi)
                lmbda = jax.lax.stop_gradient(c.alpha / jnp.mean(jnp.abs(q)))
                return -lmbda * jnp.mean(q) + jnp.mean((pi - a) ** 2)

            loss, grads = jax.value_and_grad(actor_loss)(actor)
            losses.append(loss)
            actor, actor_moments = reference_adam(actor, grads, actor_moments, 1, c.actor_lr)
            polyak = functools.partial(jax.tree.map, lambda p, q: c.tau * p + (1 - c.tau) * q)
            target_actor, target_critic = polyak(actor, target_actor), polyak(critic, target_critic)
    return actor, critic, target_actor, target_critic, losses


# ------------------------------------------------------------------------------ update


def test_two_updates_equal_hand_written_reference(learner):
    rng = np.random.default_rng(1)
    batches = [random_batch(rng), random_batch(rng)]
    keys = [jax.random.key(11), jax.random.key(12)]
    state, metrics1 = UPDATE(learner, batches[0], keys[0])
    state, metrics2 = UPDATE(state, batches[1], keys[1])
    # Jitted: one compile is faster than the eager reference's op-by-op dispatch.
    actor, critic, target_actor, target_critic, losses = jax.jit(reference_two_steps)(
        learner, batches, keys
    )
    assert_trees_close(state.actor_params, actor)
    assert_trees_close(state.critic_params, critic)
    assert_trees_close(state.target_actor_params, target_actor)
    assert_trees_close(state.target_critic_params, target_critic)
    # The losses catch a wrong scale, to which Adam's step is blind. The actor loss is looser:
    # mean Q / mean |Q| amplifies float32 differences of the critic when Q is near 0.
    np.testing.assert_allclose(
        [metrics1["critic_loss"], metrics2["critic_loss"]], losses[:2], rtol=1e-5
    )
    np.testing.assert_allclose(metrics2["actor_loss"], losses[2], rtol=1e-4)
    assert int(state.step) == 2


def test_actor_and_targets_move_only_on_delay_steps(learner):
    rng = np.random.default_rng(2)
    states = [learner]
    updated = []
    for t in range(4):
        state, metrics = UPDATE(states[-1], random_batch(rng), jax.random.key(t))
        states.append(state)
        updated.append(float(metrics["actor_updated"]))
    assert updated == [0.0, 1.0, 0.0, 1.0]
    for t in (1, 3):  # non-delay steps: only the critic moves
        before, after = states[t - 1], states[t]
        chex.assert_trees_all_equal(after.actor_params, before.actor_params)
        chex.assert_trees_all_equal(after.actor_opt_state, before.actor_opt_state)
        chex.assert_trees_all_equal(after.target_actor_params, before.target_actor_params)
        chex.assert_trees_all_equal(after.target_critic_params, before.target_critic_params)
        assert_trees_differ(after.critic_params, before.critic_params)
    for t in (2, 4):  # delay steps: the actor and both targets move too
        before, after = states[t - 1], states[t]
        assert_trees_differ(after.actor_params, before.actor_params)
        assert_trees_differ(after.target_actor_params, before.target_actor_params)
        assert_trees_differ(after.target_critic_params, before.target_critic_params)


def test_jitted_update_does_not_retrace(learner):
    # UPDATE allows one trace for the whole file; delay and non-delay steps share it.
    rng = np.random.default_rng(3)
    state = learner
    for t in range(3):
        state, _ = UPDATE(state, random_batch(rng), jax.random.key(t))
    assert int(state.step) == 3


def test_population_update_equals_separate_updates():
    # Two steps: the second updates the actor (the cond under vmap).
    members = check_members_equal_separate_learners(FUNCTIONS, CREATE, UPDATE, UPDATE_MEMBERS, TINY)
    assert members.critic_params["params"]["VmapStateActionValue_0"]["output_layer"][
        "kernel"
    ].shape == (NUM_MEMBERS, 2, 32, 1)


def test_population_update_n_matches_member_updates():
    """The default member path (lax.map on CPU, sharded) with scanned steps: member k equals
    its own sequence of updates; actor metrics average over the delay steps only."""
    rng = np.random.default_rng(8)
    num_steps = 3
    keys = jax.random.split(jax.random.key(9), NUM_MEMBERS)
    members = FUNCTIONS.create_members(keys, OBS_DIM, ACT_DIM, TINY, random_stats(rng))
    batches = random_batch(rng, NUM_MEMBERS, num_steps)  # [K, N, B, ...]
    key = jax.random.key(10)
    new, metrics = UPDATE_MEMBERS_N(members, batches, key)
    for k, member_key in enumerate(jax.random.split(key, NUM_MEMBERS)):
        state = index(members, k)
        step_metrics = []
        for i, step_key in enumerate(jax.random.split(member_key, num_steps)):
            state, m = UPDATE(state, index(index(batches, k), i), step_key)
            step_metrics.append(m)
        assert_trees_close(index(new, k), state)
        np.testing.assert_allclose(metrics["actor_updated"][k], 1 / 3, rtol=1e-6)
        np.testing.assert_allclose(
            metrics["actor_loss"][k], step_metrics[1]["actor_loss"], rtol=1e-5
        )
        np.testing.assert_allclose(
            metrics["critic_loss"][k],
            np.mean([m["critic_loss"] for m in step_metrics]),
            rtol=1e-5,
        )


# ------------------------------------------------------------------- policy and config


def test_act_normalises_observations_and_is_bounded(learner):
    observations = jnp.asarray(np.random.default_rng(11).normal(size=(5, OBS_DIM)) * 10)
    actions = FUNCTIONS.act(learner, observations)
    normalized = (observations - learner.obs_stats.mean) / learner.obs_stats.std
    np.testing.assert_allclose(
        actions, reference_actor(learner.actor_params, normalized), rtol=1e-5, atol=1e-6
    )
    assert actions.shape == (5, ACT_DIM)
    assert np.all(np.abs(actions) <= 1.0)


def test_observation_stats_match_the_paper():
    rng = np.random.default_rng(12)
    observations = rng.normal(size=(100, 3)) * [1.0, 5.0, 0.0] + [0.0, 2.0, 7.0]
    stats = model_free.observation_stats(observations)
    np.testing.assert_allclose(stats.mean, observations.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.std, observations.std(0) + 1e-3, rtol=1e-6)
    normalized = np.asarray(stats.normalize(jnp.asarray(observations, jnp.float32)))
    np.testing.assert_allclose(normalized[:, 2], 0.0, atol=1e-6)  # a constant feature: 0
    np.testing.assert_allclose(normalized[:, :2].std(0), 1.0, rtol=1e-2)
    with pytest.raises(ValueError, match="NaN"):
        model_free.observation_stats(np.full((3, 2), np.nan))


def test_config_and_create_validation():
    with pytest.raises(ConfigError, match="policy_delay"):
        td3bc.TD3BCConfig(policy_delay=0)
    with pytest.raises(ConfigError, match="alpha"):
        td3bc.TD3BCConfig(alpha=float("nan"))
    assert td3bc.TD3BCConfig(hidden_dims=[4, 4]).hidden_dims == (4, 4)  # hashable
    with pytest.raises(ValueError, match="obs_stats"):
        td3bc.TD3BC.create(jax.random.key(0), OBS_DIM, ACT_DIM, TINY)
    with pytest.raises(ValueError, match="normalize_observations=False"):
        td3bc.TD3BC.create(
            jax.random.key(0),
            OBS_DIM,
            ACT_DIM,
            td3bc.TD3BCConfig(normalize_observations=False),
            model_free.ObservationStats.identity(OBS_DIM),
        )
    with pytest.raises(ValueError, match="observation stats"):
        model_free.member_stats(model_free.ObservationStats.identity(4), NUM_MEMBERS, OBS_DIM)


# ------------------------------------------------------------------------------ learning


def test_td3bc_learns_the_best_action_of_a_bandit():
    config = td3bc.TD3BCConfig(hidden_dims=(64, 64), batch_size=64, actor_lr=1e-3, critic_lr=1e-3)
    test_obs, greedy = bandit_greedy_actions(FUNCTIONS, CREATE, config)  # 2 x 250 updates
    np.testing.assert_allclose(greedy[:, 0], 0.5 * test_obs[:, 0], atol=0.1)

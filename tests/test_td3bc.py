"""Tests of the TD3+BC learner: one iteration against a hand-written reference, the delayed
actor, no retracing, the population update, the observation normalisation and a learning check
on a one-step bandit. Tiny networks; the file runs in seconds once compiled."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from udg.errors import ConfigError
from udg.offline import model_free, td3bc

OBS_DIM, ACT_DIM, BATCH, NUM_MEMBERS = 3, 2, 8, 2
# A larger learning rate than the paper's, so that one step moves the parameters well beyond
# the comparison tolerance.
TINY = td3bc.TD3BCConfig(hidden_dims=(32, 32), batch_size=BATCH, actor_lr=1e-2, critic_lr=1e-2)
# Shared jitted functions, each compiled once for the file: every test calls them with TINY
# and the same shapes, so one trace must suffice.
# Jitted: an eager flax init dispatches op by op (seconds on 2 cores).
CREATE = jax.jit(td3bc.TD3BC.create, static_argnums=(1, 2, 3))
UPDATE = jax.jit(chex.assert_max_traces(td3bc.update, n=1))
UPDATE_MEMBERS = jax.jit(functools.partial(td3bc.update_members, vectorize=True))
UPDATE_MEMBERS_N = jax.jit(td3bc.update_members_n)  # the backend default: lax.map on CPU


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
def learner() -> td3bc.TD3BC:
    return CREATE(jax.random.key(0), OBS_DIM, ACT_DIM, TINY, random_stats(np.random.default_rng(0)))


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


# ------------------------------------------------------------- the hand-written reference


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def reference_actor(params, observations):
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
    rng = np.random.default_rng(4)
    keys = jax.random.split(jax.random.key(5), NUM_MEMBERS)
    stats = random_stats(rng, NUM_MEMBERS)  # each member its own normalisation
    members = td3bc.create_members(keys, OBS_DIM, ACT_DIM, TINY, stats)
    assert members.critic_params["params"]["VmapStateActionValue_0"]["output_layer"][
        "kernel"
    ].shape == (NUM_MEMBERS, 2, 32, 1)
    first = CREATE(keys[0], OBS_DIM, ACT_DIM, TINY, index(stats, 0))
    assert_trees_close(index(members, 0), first)

    batches = random_batch(rng, NUM_MEMBERS)
    key1, key2 = jax.random.key(6), jax.random.key(7)
    # Two steps: the second updates the actor (the cond under vmap).
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


def test_population_update_n_matches_member_updates():
    """The default member path (lax.map on CPU, sharded) with scanned steps: member k equals
    its own sequence of updates; actor metrics average over the delay steps only."""
    rng = np.random.default_rng(8)
    num_steps = 3
    keys = jax.random.split(jax.random.key(9), NUM_MEMBERS)
    members = td3bc.create_members(keys, OBS_DIM, ACT_DIM, TINY, random_stats(rng))
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
    actions = td3bc.act(learner, observations)
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


def bandit_data(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A one-step problem: s ~ U(-1, 1), reward 1 - 10 (a - 0.5 s)^2 (the offset keeps
    |Q(s, pi(s))| near 1, so lambda near alpha), every step terminal. Half the data from a noisy
    good policy (0.5 s + N(0, 0.1^2)), half uniform random actions."""
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


def test_td3bc_learns_the_best_action_of_a_bandit():
    config = td3bc.TD3BCConfig(hidden_dims=(64, 64), batch_size=64, actor_lr=1e-3, critic_lr=1e-3)
    rng = np.random.default_rng(0)
    data = bandit_data(rng, 4096)
    stats = model_free.observation_stats(data["observations"])
    state = CREATE(jax.random.key(0), 1, 1, config, stats)
    key = jax.random.key(1)
    for _ in range(2):  # 2 x 250 updates
        idx = rng.integers(0, len(data["rewards"]), size=(250, config.batch_size))
        key, update_key = jax.random.split(key)
        state, _ = td3bc.jit_update_n(state, {k: v[idx] for k, v in data.items()}, update_key)
    test_obs = jnp.linspace(-0.9, 0.9, 7)[:, None]
    greedy = td3bc.jit_act(state, test_obs)
    np.testing.assert_allclose(greedy[:, 0], 0.5 * test_obs[:, 0], atol=0.1)

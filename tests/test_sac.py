"""Tests of the SAC learner (networks, update, population, serialisation) and of the population
replay buffer. Tiny networks; the learning test is marked slow."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from udg.agents import networks, sac
from udg.agents.replay import FIELDS, PopulationReplay

OBS_DIM, ACT_DIM, BATCH, NUM_AGENTS = 3, 2, 8, 2
TINY = sac.SACConfig(hidden_dims=(16, 16), batch_size=BATCH)
# Shared jitted functions: each compiles once for the whole file (compiles dominate its time).
# Every test calls them with the same shapes and config, so one trace each must suffice.
UPDATE = jax.jit(chex.assert_max_traces(sac.update, n=1))
UPDATE_N = jax.jit(sac.update_n)
# vmap explicitly here; POPULATION_UPDATE_N takes the backend default (lax.map on CPU).
POPULATION_UPDATE = jax.jit(functools.partial(sac.population_update, vectorize=True))
POPULATION_UPDATE_N = jax.jit(chex.assert_max_traces(sac.population_update_n, n=1))


@pytest.fixture(scope="module")
def population() -> sac.SAC:
    return sac.create_population(TINY, jax.random.key(0), NUM_AGENTS, OBS_DIM, ACT_DIM)


def random_batch(rng: np.random.Generator, *lead: int) -> dict[str, jnp.ndarray]:
    shape = (*lead, BATCH)
    return {
        "observations": jnp.asarray(rng.normal(size=(*shape, OBS_DIM)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(*shape, ACT_DIM)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=shape), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(*shape, OBS_DIM)), jnp.float32),
        "terminations": jnp.asarray(rng.uniform(size=shape) < 0.3, jnp.float32),
    }


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    chex.assert_trees_all_equal_structs(a, b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def index(tree, k: int):
    """Member k of every leaf (through NumPy: eager jax slicing compiles per leaf shape)."""
    return jax.tree.map(lambda x: np.asarray(x)[k], tree)


def test_population_update_equals_separate_updates(population):
    batches = random_batch(np.random.default_rng(0), NUM_AGENTS)
    key1, key2 = jax.random.key(1), jax.random.key(2)
    # Two steps, so the second step sees non-trivial Adam moments and target critics.
    new_agents, _ = POPULATION_UPDATE(population, batches, key1)
    new_agents, metrics = POPULATION_UPDATE(new_agents, batches, key2)
    assert new_agents.critic_params["params"]["VmapStateActionValue_0"]["output_layer"][
        "kernel"
    ].shape == (NUM_AGENTS, 2, 16, 1)
    keys1 = jax.random.split(key1, NUM_AGENTS)
    keys2 = jax.random.split(key2, NUM_AGENTS)
    for k in range(NUM_AGENTS):
        batch = index(batches, k)
        agent, _ = UPDATE(index(population, k), batch, keys1[k])
        agent, agent_metrics = UPDATE(agent, batch, keys2[k])
        assert_trees_close(index(new_agents, k), agent)
        assert_trees_close(index(metrics, k), agent_metrics)
    # Different keys and batches must give different agents (the test can fail).
    kernels = new_agents.actor_params["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])


def test_update_n_equals_sequential_updates(population):
    num_steps = 4
    agent = index(population, 1)
    batches = random_batch(np.random.default_rng(1), num_steps)
    key = jax.random.key(4)
    scanned, scanned_metrics = UPDATE_N(agent, batches, key)
    sequential, all_metrics = agent, []
    for i, step_key in enumerate(jax.random.split(key, num_steps)):
        sequential, m = UPDATE(sequential, index(batches, i), step_key)
        all_metrics.append(m)
    assert int(scanned.step) == num_steps
    assert_trees_close(scanned, sequential)
    mean_metrics = jax.tree.map(lambda *ms: np.mean(np.stack(ms)), *all_metrics)
    assert_trees_close(scanned_metrics, mean_metrics)


def test_population_update_n_matches_per_agent_update_n(population):
    num_steps = 4
    batches = random_batch(np.random.default_rng(2), NUM_AGENTS, num_steps)
    key = jax.random.key(6)
    new_agents, metrics = POPULATION_UPDATE_N(population, batches, key)
    assert metrics["critic_loss"].shape == (NUM_AGENTS,)
    for k, agent_key in enumerate(jax.random.split(key, NUM_AGENTS)):
        agent, agent_metrics = UPDATE_N(index(population, k), index(batches, k), agent_key)
        assert_trees_close(index(new_agents, k), agent)
        assert_trees_close(index(metrics, k), agent_metrics)


def test_jitted_update_does_not_retrace(population):
    rng = np.random.default_rng(3)
    agent = index(population, 0)
    for step in range(2):
        agent, _ = UPDATE(agent, random_batch(rng), jax.random.key(step))
    agents = population
    for step in range(2):
        agents, _ = POPULATION_UPDATE_N(
            agents, random_batch(rng, NUM_AGENTS, 4), jax.random.key(step)
        )
    assert int(agent.step) == 2
    np.testing.assert_array_equal(agents.step, [8, 8])


def test_module_entry_point_donates_and_runs(population):
    agents = jax.tree.map(jnp.copy, population)
    rng = np.random.default_rng(4)
    new_agents, metrics = sac.jit_population_update_n(
        agents, random_batch(rng, NUM_AGENTS, 2), jax.random.key(0)
    )
    new_agents, metrics = sac.jit_population_update_n(
        new_agents, random_batch(rng, NUM_AGENTS, 2), jax.random.key(1)
    )
    np.testing.assert_array_equal(new_agents.step, [4, 4])
    assert all(np.all(np.isfinite(m)) for m in metrics.values())
    assert agents.log_temperature.is_deleted()  # donated: its buffers were reused


def test_termination_stops_bootstrap_exactly():
    rewards = jnp.array([0.3, -1.7, 2.5], jnp.float32)
    next_q = jnp.array([10.0, -4.0, 123.0], jnp.float32)
    next_log_prob = jnp.array([-1.0, 2.0, 0.5], jnp.float32)
    temperature = jnp.float32(0.2)
    terminated = sac.critic_target(rewards, jnp.ones(3), next_q, next_log_prob, temperature, 0.99)
    np.testing.assert_array_equal(terminated, rewards)
    # Not terminated (e.g. truncated by a time limit): bootstraps.
    bootstrapped = sac.critic_target(
        rewards, jnp.zeros(3), next_q, next_log_prob, temperature, 0.99
    )
    np.testing.assert_allclose(
        bootstrapped, rewards + 0.99 * (next_q - 0.2 * next_log_prob), rtol=1e-6
    )


def test_tanh_log_prob_matches_change_of_variables_numerically():
    mean, std = 0.4, 0.7
    actions = np.linspace(-0.995, 0.995, 201)
    # Density of a = tanh(u), u ~ N(mean, std), by finite differences of its CDF (float64).
    h = 1e-6
    cdf = lambda a: norm.cdf((np.arctanh(a) - mean) / std)  # noqa: E731
    numeric = np.log((cdf(actions + h) - cdf(actions - h)) / (2 * h))
    analytic = networks.squashed_gaussian_log_prob(
        jnp.full((201, 1), mean, jnp.float32),
        jnp.full((201, 1), np.log(std), jnp.float32),
        jnp.asarray(np.arctanh(actions)[:, None], jnp.float32),
    )
    np.testing.assert_allclose(analytic, numeric, atol=2e-3)
    # The density integrates to one over (-1, 1).
    fine = np.linspace(-1 + 1e-7, 1 - 1e-7, 200001)
    density = np.exp(
        networks.squashed_gaussian_log_prob(
            jnp.full((fine.size, 1), mean),
            jnp.full((fine.size, 1), np.log(std)),
            jnp.asarray(np.arctanh(fine)[:, None], jnp.float32),
        )
    )
    assert abs(np.trapezoid(density, fine) - 1.0) < 1e-3


def test_sampled_log_prob_is_density_of_sample():
    key = jax.random.key(10)
    mean = jnp.array([[0.1, -2.0, 1.5]] * 64, jnp.float32)
    log_std = jnp.array([[-1.0, 0.3, -4.0]] * 64, jnp.float32)
    actions, log_prob = networks.sample_squashed_gaussian(mean, log_std, key)
    assert actions.shape == (64, 3) and log_prob.shape == (64,)
    assert np.all(np.abs(actions) <= 1.0)
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(
        log_prob, networks.squashed_gaussian_log_prob(mean, log_std, pre_tanh), rtol=1e-4, atol=1e-4
    )


def test_actor_log_std_is_clipped():
    actor = networks.TanhGaussianActor((8,), 2)
    params = jax.jit(actor.init)(jax.random.key(0), jnp.zeros((1, 4)))
    params = jax.tree.map(lambda p: p * 1e4, params)
    _, log_std = jax.jit(actor.apply)(params, jax.random.normal(jax.random.key(1), (32, 4)))
    assert float(log_std.min()) == networks.LOG_STD_MIN
    assert float(log_std.max()) == networks.LOG_STD_MAX


def test_fixed_temperature_stays_fixed_and_autotune_moves(population):
    fixed = sac.SACConfig(hidden_dims=(16, 16), autotune_temperature=False, init_temperature=0.2)
    # Same parameters under another static config (SAC.create would cost a compile).
    agent = index(population, 0).replace(config=fixed, log_temperature=np.log(np.float32(0.2)))
    batch = random_batch(np.random.default_rng(5))
    agent, metrics = jax.jit(sac.update)(agent, batch, jax.random.key(1))
    np.testing.assert_allclose(np.exp(agent.log_temperature), 0.2, rtol=1e-6)
    np.testing.assert_allclose(metrics["temperature"], 0.2, rtol=1e-6)
    tuned, _ = UPDATE(index(population, 0), batch, jax.random.key(1))
    assert float(tuned.log_temperature) != 0.0
    assert tuned.target_entropy == -ACT_DIM
    assert agent.replace(config=sac.SACConfig(target_entropy=-0.5)).target_entropy == -0.5


def test_actions_shapes_bounds_and_single_agent_consistency(population):
    agents = population
    obs = jax.random.normal(jax.random.key(12), (NUM_AGENTS, 5, OBS_DIM))
    sampled = sac.jit_sample_actions(agents, obs, jax.random.key(13))
    greedy = sac.jit_greedy_actions(agents, obs)
    assert sampled.shape == greedy.shape == (NUM_AGENTS, 5, ACT_DIM)
    assert np.all(np.abs(sampled) <= 1.0) and np.all(np.abs(greedy) <= 1.0)
    assert not np.allclose(sampled, greedy)
    np.testing.assert_allclose(
        greedy[1], sac.jit_greedy_actions_single(index(agents, 1), obs[1]), rtol=1e-6
    )
    key1 = jax.random.split(jax.random.key(13), NUM_AGENTS)[1]
    np.testing.assert_allclose(
        sampled[1], sac.jit_sample_actions_single(index(agents, 1), obs[1], key1), rtol=1e-6
    )


def test_serialisation_round_trip(population):
    agents, _ = POPULATION_UPDATE(
        population, random_batch(np.random.default_rng(6), NUM_AGENTS), jax.random.key(0)
    )
    template = sac.create_population(TINY, jax.random.key(15), NUM_AGENTS, OBS_DIM, ACT_DIM)
    restored = sac.from_bytes(template, sac.to_bytes(agents))
    chex.assert_trees_all_equal(restored, agents)
    assert restored.config == TINY
    with pytest.raises(ValueError, match="shapes"):
        sac.from_bytes(index(template, 0), sac.to_bytes(agents))


def test_config_validation_and_hashability():
    config = sac.SACConfig(hidden_dims=[32, 32])
    assert config.hidden_dims == (32, 32) and hash(config) == hash(sac.SACConfig((32, 32)))
    with pytest.raises(ValueError, match="gamma"):
        sac.SACConfig(gamma=1.5)
    with pytest.raises(ValueError, match="tau"):
        sac.SACConfig(tau=0.0)


# ---------------------------------------------------------------- replay buffer


def transitions(rng: np.random.Generator, *lead: int, obs_dim: int = 2, act_dim: int = 1):
    return (
        rng.normal(size=(*lead, obs_dim)).astype(np.float32),
        rng.normal(size=(*lead, act_dim)).astype(np.float32),
        rng.normal(size=lead).astype(np.float32),
        rng.normal(size=(*lead, obs_dim)).astype(np.float32),
        np.zeros(lead, np.float32),
    )


def test_replay_sample_shapes_and_values():
    buffer = PopulationReplay(num_agents=3, capacity=10, obs_dim=2, act_dim=1)
    rng = np.random.default_rng(0)
    for _ in range(4):
        buffer.add(None, *transitions(rng, 3))
    buffer.add(1, *transitions(rng, 5))
    np.testing.assert_array_equal(buffer.sizes, [4, 9, 4])
    batch = buffer.sample(np.random.default_rng(1), batch_size=7, num_batches=2)
    assert set(batch) == set(FIELDS)
    assert batch["observations"].shape == (3, 2, 7, 2)
    assert batch["actions"].shape == (3, 2, 7, 1)
    assert batch["rewards"].shape == batch["terminations"].shape == (3, 2, 7)
    assert all(v.dtype == np.float32 for v in batch.values())
    # Each agent only samples its own valid rows.
    state = buffer.state_dict()
    for k in range(3):
        valid = state["rewards"][k, : buffer.sizes[k]]
        assert np.all(np.isin(batch["rewards"][k], valid))


def test_replay_fifo_overwrite_and_long_episode():
    buffer = PopulationReplay(num_agents=2, capacity=4, obs_dim=1, act_dim=1)
    rewards = np.arange(6, dtype=np.float32)
    ones = np.ones((6, 1), np.float32)
    buffer.add(0, ones, ones, rewards, ones, np.zeros(6, np.float32))
    stored = buffer.state_dict()
    # Six transitions into four slots: the last four survive, the next write is the oldest.
    np.testing.assert_array_equal(np.sort(stored["rewards"][0]), [2, 3, 4, 5])
    np.testing.assert_array_equal(buffer.sizes, [4, 0])
    buffer.add(
        0, ones[:1], ones[:1], np.array([9.0], np.float32), ones[:1], np.zeros(1, np.float32)
    )
    np.testing.assert_array_equal(np.sort(buffer.state_dict()["rewards"][0]), [3, 4, 5, 9])
    # An episode longer than the capacity keeps its last `capacity` steps.
    buffer.add(
        1,
        np.ones((9, 1), np.float32),
        np.ones((9, 1), np.float32),
        np.arange(9, dtype=np.float32),
        np.ones((9, 1), np.float32),
        np.zeros(9, np.float32),
    )
    np.testing.assert_array_equal(np.sort(buffer.state_dict()["rewards"][1]), [5, 6, 7, 8])
    with pytest.raises(ValueError, match="no transitions"):
        PopulationReplay(2, 4, 1, 1).sample(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="shape"):
        buffer.add(0, ones, ones, rewards, ones[:3], np.zeros(6, np.float32))


def test_replay_state_dict_round_trip_is_bit_identical():
    rng = np.random.default_rng(2)
    buffer = PopulationReplay(num_agents=2, capacity=8, obs_dim=2, act_dim=1)
    for _ in range(5):
        buffer.add(None, *transitions(rng, 2, 3))
    sample_rng = np.random.default_rng(3)
    saved_rng_state = sample_rng.bit_generator.state
    state = buffer.state_dict()

    resumed = PopulationReplay(num_agents=2, capacity=8, obs_dim=2, act_dim=1)
    resumed.load_state_dict(state)
    resumed_rng = np.random.default_rng()
    resumed_rng.bit_generator.state = saved_rng_state
    more = transitions(rng, 2, 4)
    buffer.add(None, *more)
    resumed.add(None, *more)
    for _ in range(2):
        a = buffer.sample(sample_rng, 5, 3)
        b = resumed.sample(resumed_rng, 5, 3)
        for field in FIELDS:
            np.testing.assert_array_equal(a[field], b[field])
    with pytest.raises(ValueError, match="shape"):
        PopulationReplay(3, 8, 2, 1).load_state_dict(state)


# ---------------------------------------------------------------- learning


@pytest.mark.slow
def test_sac_learns_contextual_bandit():
    """gamma = 0 and reward -|a - 0.5 * s|: Q(s, a) is the reward, the best action 0.5 * s."""
    config = sac.SACConfig(
        hidden_dims=(64, 64),
        gamma=0.0,
        batch_size=128,
        actor_lr=1e-3,
        critic_lr=1e-3,
        autotune_temperature=False,
        init_temperature=0.01,
    )
    rng = np.random.default_rng(0)
    size = 20_000
    observations = rng.uniform(-1, 1, size=(size, 1)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(size, 1)).astype(np.float32)
    data = {
        "observations": observations,
        "actions": actions,
        "rewards": -np.abs(actions[:, 0] - 0.5 * observations[:, 0]),
        "next_observations": observations,
        "terminations": np.zeros(size, np.float32),
    }
    agent = sac.SAC.create(config, jax.random.key(0), 1, 1)
    key = jax.random.key(1)
    for _ in range(30):  # 30 x 100 = 3000 updates
        idx = rng.integers(0, size, size=(100, config.batch_size))
        key, update_key = jax.random.split(key)
        agent, _ = sac.jit_update_n(agent, {k: v[idx] for k, v in data.items()}, update_key)
    test_obs = jnp.linspace(-0.9, 0.9, 7)[:, None]
    greedy = sac.jit_greedy_actions_single(agent, test_obs)
    np.testing.assert_allclose(greedy[:, 0], 0.5 * test_obs[:, 0], atol=0.1)


def test_members_are_the_agents_of_their_keys_as_a_vmapped_init_makes_them():
    keys = jax.random.split(jax.random.key(5), 3)
    members = sac.create_members(TINY, keys, OBS_DIM, ACT_DIM)
    vmapped = jax.jit(jax.vmap(lambda k: sac.SAC.create(TINY, k, OBS_DIM, ACT_DIM)))(keys)
    assert sac.to_bytes(members) == sac.to_bytes(vmapped)
    one = jax.jit(lambda k: sac.SAC.create(TINY, k, OBS_DIM, ACT_DIM))
    assert sac.to_bytes(jax.tree.map(lambda leaf: leaf[1], members)) == sac.to_bytes(one(keys[1]))

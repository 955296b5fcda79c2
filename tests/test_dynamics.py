"""Tests of the MOPO dynamics ensemble: equivalences, fitting, snapshots, sampling, files."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from udg.offline.dynamics import (
    DynamicsConfig,
    EnsembleTrainState,
    holdout_mse,
    load_model,
    predict,
    save_model,
    select_elites,
    step,
    train_dynamics,
    train_epoch,
    train_step,
    update_best_snapshot,
)
from udg.offline.ensemble import ensemble_apply, ensemble_loss, member_network

OBS_DIM, ACT_DIM, N = 3, 2, 1200
# Jitted once here: eager flax applies dispatch op by op, which is slow on CPU.
predict_jit = jax.jit(predict)
step_jit = jax.jit(step, static_argnames="penalty")
TINY = DynamicsConfig(
    ensemble_size=3,
    num_elites=2,
    hidden_dims=(24, 24),
    weight_decay=(2.5e-5, 5e-5, 1e-4),
    batch_size=64,
    max_epochs=60,
)


def linear_system(seed: int = 0, n: int = N):
    """next = obs + 0.1 * A @ [obs, act], reward = w . [obs, act]."""
    rng = np.random.default_rng(seed)
    a_mat = rng.normal(size=(OBS_DIM, OBS_DIM + ACT_DIM))
    w = rng.normal(size=OBS_DIM + ACT_DIM)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1.0, 1.0, size=(n, ACT_DIM)).astype(np.float32)
    x = np.concatenate([obs, act], axis=1)
    return obs, act, (obs + 0.1 * x @ a_mat.T).astype(np.float32), (x @ w).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    obs, act, next_obs, rew = linear_system()
    model, metrics = train_dynamics(TINY, jax.random.key(0), obs, act, next_obs, rew)
    return model, metrics, (obs, act, next_obs, rew)


def zero_variance(model, identical_members: bool = False):
    """The model with log-variance bounds pinned near -60 (std ~1e-13), members optionally tied."""
    params = dict(model.params)
    if identical_members:
        params = jax.tree_util.tree_map(lambda p: jnp.broadcast_to(p[:1], p.shape), params)
    params["max_logvar"] = jnp.full_like(params["max_logvar"], -60.0)
    params["min_logvar"] = jnp.full_like(params["min_logvar"], -60.0)
    return model.replace(params=params)


def test_logvar_bounds_feel_one_shared_penalty():
    """Each member's bounds get logvar_bound_penalty / E, as one pair shared by E members would.

    With the upper bound far above every prediction and the lower far below, the NLL no longer
    pulls on them, so their gradient is the penalty's alone.
    """
    params = dict(
        EnsembleTrainState.create(TINY, jax.random.key(1), OBS_DIM + ACT_DIM, OBS_DIM + 1).params
    )
    params["max_logvar"] = jnp.full_like(params["max_logvar"], 50.0)
    params["min_logvar"] = jnp.full_like(params["min_logvar"], -50.0)
    x = jax.random.normal(jax.random.key(2), (TINY.ensemble_size, 8, OBS_DIM + ACT_DIM))
    y = jax.random.normal(jax.random.key(3), (TINY.ensemble_size, 8, OBS_DIM + 1))
    grads = jax.grad(lambda p: ensemble_loss(TINY, p, x, y)[0])(params)
    share = TINY.logvar_bound_penalty / TINY.ensemble_size
    np.testing.assert_allclose(grads["max_logvar"], share, rtol=1e-4)
    np.testing.assert_allclose(grads["min_logvar"], -share, rtol=1e-4)


def test_ensemble_apply_equals_loop_over_members():
    params = EnsembleTrainState.create(
        TINY, jax.random.key(1), OBS_DIM + ACT_DIM, OBS_DIM + 1
    ).params
    net = member_network(TINY, OBS_DIM + 1)
    x = jax.random.normal(jax.random.key(2), (TINY.ensemble_size, 5, OBS_DIM + ACT_DIM))
    apply = jax.jit(ensemble_apply, static_argnums=0)
    mean, logvar = apply(TINY, params, x)
    shared_mean, _ = apply(TINY, params, x[0])
    assert mean.shape == logvar.shape == (TINY.ensemble_size, 5, OBS_DIM + 1)
    for e in range(TINY.ensemble_size):
        member = jax.tree_util.tree_map(lambda p, e=e: p[e], params)
        m, lv = jax.jit(net.apply)({"params": member}, x[e])
        np.testing.assert_allclose(mean[e], m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logvar[e], lv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            shared_mean[e], net.apply({"params": member}, x[0])[0], atol=1e-6
        )
    # Members are initialised independently.
    assert not np.allclose(mean[0], mean[1])


def test_ensemble_step_equals_independent_member_steps():
    in_dim, out_dim = OBS_DIM + ACT_DIM, OBS_DIM + 1
    state = EnsembleTrainState.create(TINY, jax.random.key(3), in_dim, out_dim)
    x = jax.random.normal(jax.random.key(4), (TINY.ensemble_size, 16, in_dim))
    y = jax.random.normal(jax.random.key(5), (TINY.ensemble_size, 16, out_dim))
    jit_step = jax.jit(train_step)
    new_state, _ = jit_step(state, x, y)
    # A member alone carries its 1/E share of the bound penalty (see DynamicsConfig).
    single = dataclasses.replace(
        TINY,
        ensemble_size=1,
        num_elites=1,
        logvar_bound_penalty=TINY.logvar_bound_penalty / TINY.ensemble_size,
    )
    for e in range(TINY.ensemble_size):
        # Adam's step count is a shared scalar; every other leaf has the member axis.
        member = jax.tree_util.tree_map(lambda p, e=e: p[e : e + 1] if p.ndim else p, state)
        one, _ = jit_step(member.replace(config=single), x[e : e + 1], y[e : e + 1])
        chex.assert_trees_all_close(
            one.params,
            jax.tree_util.tree_map(lambda p, e=e: p[e : e + 1], new_state.params),
            rtol=1e-5,
            atol=1e-6,
        )


def test_fit_reports_whether_early_stopping_ended_it():
    obs, act, next_obs, rew = linear_system(n=512)
    capped = dataclasses.replace(TINY, max_epochs=1)
    _, metrics = train_dynamics(capped, jax.random.key(0), obs, act, next_obs, rew)
    assert metrics["epochs"] == 1 and metrics["early_stopped"] is False
    # Only a 99 % drop of the holdout MSE counts as progress: the second epoch stops the fit.
    patient = dataclasses.replace(
        TINY, max_epochs=10, max_epochs_since_update=1, improvement_threshold=0.99
    )
    _, metrics = train_dynamics(patient, jax.random.key(0), obs, act, next_obs, rew)
    assert metrics["epochs"] < 10 and metrics["early_stopped"] is True


def test_fits_linear_system(trained):
    model, metrics, (obs, act, next_obs, rew) = trained
    assert metrics["elite_holdout_mse"] < 2e-3  # normalised units; an untrained net is ~1
    assert metrics["holdout_size"] == int(N * TINY.holdout_ratio)
    assert metrics["logvar_bounds_crossed"] == 0.0
    mean, logvar = predict_jit(model, obs[:200], act[:200])
    assert mean.shape == logvar.shape == (TINY.ensemble_size, 200, OBS_DIM + 1)
    elite_mean = np.asarray(mean)[np.asarray(model.elite_indices)]
    delta_err = np.abs(elite_mean[..., :-1] - (next_obs - obs)[:200]).mean()
    reward_err = np.abs(elite_mean[..., -1] - rew[:200]).mean()
    assert delta_err < 0.05 * np.abs(next_obs - obs).mean()
    assert reward_err < 0.05 * np.abs(rew).mean()


def test_update_best_snapshot_per_member():
    best = {"w": jnp.zeros((4, 2, 3)), "b": jnp.zeros((4,))}
    new = {"w": jnp.ones((4, 2, 3)), "b": jnp.ones((4,))}
    best_losses = jnp.array([jnp.inf, 1.0, 1.0, 1.0])
    # member 0: first epoch; 1: 5% better; 2: 0.5% better (below threshold); 3: NaN.
    losses = jnp.array([3.0, 0.95, 0.995, jnp.nan])
    params, kept, improved = update_best_snapshot(best, best_losses, new, losses, 0.01)
    np.testing.assert_array_equal(improved, [True, True, False, False])
    np.testing.assert_allclose(kept, [3.0, 0.95, 1.0, 1.0])
    np.testing.assert_array_equal(params["b"], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(params["w"][:, 0, 0], [1.0, 1.0, 0.0, 0.0])


def test_select_elites_lowest_losses_first():
    elites = select_elites(jnp.array([0.5, 0.1, 0.9, 0.2, 0.3]), 3)
    np.testing.assert_array_equal(elites, [1, 3, 4])
    assert elites.dtype == jnp.int32


def test_early_stop_and_snapshot_follow_the_rule():
    # Pure-noise targets: holdout MSE stops improving quickly, so early stopping triggers.
    rng = np.random.default_rng(7)
    obs = rng.normal(size=(N, OBS_DIM)).astype(np.float32)
    act = rng.normal(size=(N, ACT_DIM)).astype(np.float32)
    next_obs = obs + rng.normal(size=obs.shape).astype(np.float32)
    rew = rng.normal(size=N).astype(np.float32)
    config = TINY  # shares compiled kernels with the other tests
    history: list[np.ndarray] = []
    _, metrics = train_dynamics(
        config,
        jax.random.key(8),
        obs,
        act,
        next_obs,
        rew,
        on_epoch=lambda _, losses: history.append(losses),
    )
    # Re-derive the stopping epoch and best losses from the logged per-epoch losses.
    best = np.full(config.ensemble_size, np.inf)
    since, stop_epoch = 0, None
    for epoch, losses in enumerate(history, start=1):
        improved = losses < best * (1 - config.improvement_threshold)
        best = np.where(improved, losses, best)
        since = 0 if improved.any() else since + 1
        if since >= config.max_epochs_since_update:
            stop_epoch = epoch
            break
    assert stop_epoch == metrics["epochs"] == len(history) < config.max_epochs
    np.testing.assert_allclose(metrics["holdout_mse"], best, rtol=1e-6)
    np.testing.assert_array_equal(metrics["elite_indices"], np.argsort(best)[: config.num_elites])


def test_best_snapshot_is_what_the_model_holds(trained):
    model, metrics, (obs, act, next_obs, rew) = trained
    # Recompute the holdout split the same way train_dynamics does.
    perm = np.asarray(jax.random.permutation(jax.random.split(jax.random.key(0), 3)[0], N))
    hold = perm[: metrics["holdout_size"]]
    x = model.normaliser.normalise_inputs(np.concatenate([obs, act], 1)[hold])
    y = model.normaliser.normalise_targets(np.concatenate([next_obs - obs, rew[:, None]], 1)[hold])
    np.testing.assert_allclose(
        holdout_mse(TINY, model.params, x, y), metrics["holdout_mse"], rtol=1e-4
    )


def test_training_is_deterministic_given_key():
    obs, act, next_obs, rew = linear_system(seed=3)
    config = TINY  # shares compiled kernels with the other tests
    a, _ = train_dynamics(config, jax.random.key(5), obs, act, next_obs, rew)
    b, _ = train_dynamics(config, jax.random.key(5), obs, act, next_obs, rew)
    c, _ = train_dynamics(config, jax.random.key(6), obs, act, next_obs, rew)
    chex.assert_trees_all_equal(a.params, b.params)
    assert not np.allclose(a.params["layer_0"]["kernel"], c.params["layer_0"]["kernel"])


@pytest.mark.parametrize("penalty", ["max_sigma", "disagreement"])
def test_penalty_is_positive_and_the_outputs_follow_the_observation(trained, penalty):
    model, _, (obs, act, _, _) = trained
    next_obs, outputs, u = step_jit(model, jax.random.key(11), obs[:64], act[:64], penalty)
    assert next_obs.shape == (64, OBS_DIM) and outputs.shape == (64, 1) and u.shape == (64,)
    assert model.outputs == ("reward",)
    assert np.all(np.asarray(u) > 0)  # >= 0 by construction; > 0 as members differ


def test_unknown_penalty_lists_known(trained):
    model, _, (obs, act, _, _) = trained
    with pytest.raises(ValueError, match="disagreement.*max_sigma"):
        step_jit(model, jax.random.key(0), obs[:4], act[:4], "aleatoric")


def test_step_zero_variance_is_the_mean_and_key_reproducible(trained):
    model, _, (obs, act, _, _) = trained
    tied = zero_variance(model, identical_members=True)
    mean, _ = predict_jit(tied, obs[:8], act[:8])
    next_obs, outputs, u_dis = step_jit(tied, jax.random.key(1), obs[:8], act[:8], "disagreement")
    np.testing.assert_allclose(next_obs, obs[:8] + mean[0, :, :-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[:, 0], mean[0, :, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u_dis, 0.0, atol=1e-5)
    first = step_jit(model, jax.random.key(2), obs[:8], act[:8])
    again = step_jit(model, jax.random.key(2), obs[:8], act[:8])
    other = step_jit(model, jax.random.key(3), obs[:8], act[:8])
    chex.assert_trees_all_equal(first, again)
    assert not np.allclose(first[1], other[1])


def test_step_samples_only_elites(trained):
    model, _, (obs, act, _, _) = trained
    sharp = zero_variance(model)
    rows = 256
    o, a = np.repeat(obs[:1], rows, 0), np.repeat(act[:1], rows, 0)
    mean, _ = predict_jit(sharp, o[:1], a[:1])  # [E, 1, o + 1]
    _, outputs, _ = step_jit(sharp, jax.random.key(4), o, a)
    reward = outputs[:, 0]
    # Which member produced each row: the one whose mean reward matches.
    member = np.argmin(np.abs(np.asarray(reward)[:, None] - np.asarray(mean)[None, :, 0, -1]), 1)
    assert set(member.tolist()) == set(np.asarray(model.elite_indices).tolist())


def test_save_load_round_trip(trained, tmp_path):
    model, _, (obs, act, _, _) = trained
    path = tmp_path / "models" / "dyn.msgpack"
    save_model(model, path, "point")
    loaded = load_model(path, expected_env_name="point", expected_obs_dim=OBS_DIM)
    assert loaded.config == model.config
    assert (loaded.obs_dim, loaded.act_dim) == (OBS_DIM, ACT_DIM)
    chex.assert_trees_all_equal(loaded.params, model.params)
    np.testing.assert_array_equal(loaded.elite_indices, model.elite_indices)
    chex.assert_trees_all_close(
        predict_jit(loaded, obs[:5], act[:5]), predict_jit(model, obs[:5], act[:5])
    )
    assert [p.name for p in path.parent.iterdir()] == ["dyn.msgpack"]  # no temp file left


def test_load_errors(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "dyn.msgpack"
    save_model(model, path, "point")
    data = path.read_bytes()
    with pytest.raises(ValueError, match="env 'point', expected 'ant'"):
        load_model(path, expected_env_name="ant")
    with pytest.raises(ValueError, match="obs_dim=3, expected 27"):
        load_model(path, expected_obs_dim=27)
    bad = tmp_path / "bad.msgpack"
    for damaged in (data[: len(data) - 100], data[:40], data[:10], b"nonsense" * 4):
        bad.write_bytes(damaged)
        with pytest.raises(ValueError):
            load_model(bad)
    # A consistent header whose dims disagree with the stored arrays.
    header_end = 16 + int.from_bytes(data[8:16], "little")
    header = json.loads(data[16:header_end])
    header["obs_dim"] = OBS_DIM + 1
    raw = json.dumps(header).encode()
    bad.write_bytes(data[:8] + len(raw).to_bytes(8, "little") + raw + data[header_end:])
    with pytest.raises(ValueError, match="shapes do not match"):
        load_model(bad)


def test_train_step_and_epoch_do_not_retrace():
    in_dim, out_dim = OBS_DIM + ACT_DIM, OBS_DIM + 1
    state = EnsembleTrainState.create(TINY, jax.random.key(0), in_dim, out_dim)
    step_fn = jax.jit(chex.assert_max_traces(train_step, n=1))
    for i in range(3):
        x = jax.random.normal(jax.random.key(i), (TINY.ensemble_size, 8, in_dim))
        state, _ = step_fn(state, x, x[..., :out_dim])
    epoch_fn = jax.jit(chex.assert_max_traces(train_epoch, n=1))
    data = jax.random.normal(jax.random.key(9), (100, in_dim))
    for i in range(2):
        state, metrics = epoch_fn(state, data, data[:, :out_dim], jax.random.key(i))
    assert int(state.step) == 3 + 2 * 2  # 100 rows / batch 64 -> 2 steps per epoch
    assert np.isfinite(float(metrics["loss"]))


def test_max_batches_per_epoch_caps_an_epoch_to_a_random_subset():
    in_dim, out_dim = OBS_DIM + ACT_DIM, OBS_DIM + 1
    capped = dataclasses.replace(TINY, batch_size=8, max_batches_per_epoch=3)
    data = jax.random.normal(jax.random.key(9), (100, in_dim))
    steps = []
    for config in (capped, dataclasses.replace(capped, max_batches_per_epoch=None)):
        state = EnsembleTrainState.create(config, jax.random.key(0), in_dim, out_dim)
        state, metrics = jax.jit(train_epoch)(state, data, data[:, :out_dim], jax.random.key(1))
        steps.append(int(state.step))
        assert np.isfinite(float(metrics["loss"]))
    assert steps == [3, 13]  # capped: 3 batches; full pass: ceil(100 / 8)
    with pytest.raises(ValueError, match="max_batches_per_epoch"):
        DynamicsConfig(max_batches_per_epoch=0)


def test_input_and_config_validation():
    obs, act, next_obs, rew = linear_system(n=20)
    with pytest.raises(ValueError, match="row counts"):
        train_dynamics(TINY, jax.random.key(0), obs, act[:-1], next_obs, rew)
    with pytest.raises(ValueError, match="too few"):
        train_dynamics(TINY, jax.random.key(0), obs[:3], act[:3], next_obs[:3], rew[:3])
    with pytest.raises(ValueError, match="weight_decay"):
        DynamicsConfig(weight_decay=(1e-4,))
    with pytest.raises(ValueError, match="unknown activation"):
        DynamicsConfig(activation="gelu2")
    with pytest.raises(ValueError, match="num_elites"):
        DynamicsConfig(num_elites=8)


@pytest.mark.parametrize("outputs", [(), ("x_velocity", "healthy")])
def test_a_model_predicts_named_columns_or_only_the_observation(tmp_path, outputs):
    # A model shared by every task predicts the info columns the observation lacks (maybe
    # none) instead of one task's reward; the names travel with the file.
    obs, act, next_obs, rew = linear_system(n=300)
    extra = np.stack([rew, -rew], axis=-1)[:, : len(outputs)]
    quick = dataclasses.replace(TINY, max_epochs=2)
    model, _ = train_dynamics(quick, jax.random.key(0), obs, act, next_obs, extra, outputs=outputs)
    mean, _ = predict_jit(model, obs[:4], act[:4])
    next_pred, out, _ = step_jit(model, jax.random.key(1), obs[:4], act[:4])
    assert mean.shape == (3, 4, OBS_DIM + len(outputs)) and out.shape == (4, len(outputs))
    save_model(model, tmp_path / "m.msgpack", "ant")
    assert load_model(tmp_path / "m.msgpack").outputs == outputs
    with pytest.raises(ValueError, match="2 extra columns but 1 output names"):
        train_dynamics(quick, jax.random.key(0), obs, act, next_obs, np.stack([rew, rew], -1))

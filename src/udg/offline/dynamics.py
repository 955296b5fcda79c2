"""Training, prediction, sampling and files of MOPO's probabilistic dynamics ensemble.

Training follows OfflineRL-Kit's procedure (``EnsembleDynamics.train``) in pure JAX: a
holdout split, every member trained on its own shuffled minibatches of the train split by one
jitted step that updates all E members at once, per-member best holdout snapshots, early stop
after ``max_epochs_since_update`` epochs without improvement, and the ``num_elites`` members
with the lowest holdout MSE as elites. Only ``train_dynamics`` (a thin epoch loop) and the
file functions are imperative; the kernels are ``(state, batch[, key]) -> (state, metrics)``.
``step`` samples one model transition per row from a random elite with MOPO's penalised
reward; it validates its static arguments in Python and can be jitted or scanned by callers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct

from udg.files import atomic_write_bytes
from udg.offline.ensemble import (
    DynamicsConfig,
    Normaliser,
    Params,
    ensemble_apply,
    ensemble_loss,
    init_ensemble,
)

__all__ = [
    "DynamicsConfig",
    "DynamicsModel",
    "EnsembleTrainState",
    "PENALTIES",
    "holdout_mse",
    "load_model",
    "predict",
    "save_model",
    "select_elites",
    "step",
    "train_dynamics",
    "train_epoch",
    "train_step",
    "update_best_snapshot",
]


def _optimizer(config: DynamicsConfig) -> optax.GradientTransformation:
    # Weight decay is in the loss (per layer), so plain Adam as in PETS/MBPO/OfflineRL-Kit.
    return optax.adam(config.learning_rate)


class EnsembleTrainState(struct.PyTreeNode):
    """Parameters and Adam state of all members (every leaf [E, ...])."""

    params: Params
    opt_state: optax.OptState
    step: jax.Array  # [] int32, optimiser steps taken
    config: DynamicsConfig = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls, config: DynamicsConfig, key: jax.Array, in_dim: int, out_dim: int
    ) -> EnsembleTrainState:
        """Fresh independent members and optimiser state."""
        params, opt_state = _init_params_and_opt_state(config, key, in_dim, out_dim)
        return cls(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32), config=config)


@partial(jax.jit, static_argnums=(0, 2, 3))
def _init_params_and_opt_state(
    config: DynamicsConfig, key: jax.Array, in_dim: int, out_dim: int
) -> tuple[Params, optax.OptState]:
    # Jitted because an eager flax init dispatches op by op (seconds on CPU).
    params = init_ensemble(config, key, in_dim, out_dim)
    return params, _optimizer(config).init(params)


def train_step(
    state: EnsembleTrainState, inputs: jax.Array, targets: jax.Array
) -> tuple[EnsembleTrainState, dict[str, jax.Array]]:
    """One Adam step of all members on per-member batches inputs [E, B, in], targets [E, B, out].

    The loss is a sum over members of per-member terms (each with its 1/E share of the bound
    penalty) and Adam is elementwise, so this equals E independent steps, computed as one
    batched program.
    """
    grads, metrics = jax.grad(
        lambda p: ensemble_loss(state.config, p, inputs, targets), has_aux=True
    )(state.params)
    updates, opt_state = _optimizer(state.config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def train_epoch(
    state: EnsembleTrainState, inputs: jax.Array, targets: jax.Array, key: jax.Array
) -> tuple[EnsembleTrainState, dict[str, jax.Array]]:
    """One pass of every member over its own permutation of the train split (scanned steps).

    inputs [N, in], targets [N, out] are normalised. The last partial batch is filled by
    wrapping around the member's permutation, so every step has the same shape (no retrace)
    and every sample is seen at least once per epoch, unless ``config.max_batches_per_epoch``
    cuts the epoch to the first batches of the permutation (a random subset).
    """
    config = state.config
    n = inputs.shape[0]
    batch = min(config.batch_size, n)
    num_batches = -(-n // batch)
    keys = jax.random.split(key, config.ensemble_size)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)  # [E, N]
    perms = jnp.concatenate([perms, perms[:, : num_batches * batch - n]], axis=1)
    batch_idx = perms.reshape(config.ensemble_size, num_batches, batch).transpose(1, 0, 2)
    if config.max_batches_per_epoch is not None:
        batch_idx = batch_idx[: config.max_batches_per_epoch]  # [steps, E, B]

    def body(carry: EnsembleTrainState, idx: jax.Array):  # idx [E, B]
        return train_step(carry, inputs[idx], targets[idx])

    state, metrics = jax.lax.scan(body, state, batch_idx)
    return state, jax.tree_util.tree_map(jnp.mean, metrics)


def holdout_mse(
    config: DynamicsConfig, params: Params, inputs: jax.Array, targets: jax.Array
) -> jax.Array:
    """Per-member MSE of the mean on normalised holdout data [H, in], [H, out] -> [E].

    Normalised units weigh every target dimension equally whatever its scale, so the reward
    does not dominate (or vanish from) the snapshot and elite selection.
    """
    mean, _ = ensemble_apply(config, params, inputs)  # [E, H, out]
    return jnp.mean(jnp.square(mean - targets), axis=(1, 2))


def update_best_snapshot(
    best_params: Params,
    best_losses: jax.Array,
    params: Params,
    losses: jax.Array,
    improvement_threshold: float,
) -> tuple[Params, jax.Array, jax.Array]:
    """Keep, per member, the parameters with the best holdout loss so far.

    Member e is updated when (best_e - new_e) / best_e > threshold (OfflineRL-Kit), written as
    new_e < best_e * (1 - threshold) so an initial best of +inf always updates and NaN never.
    Returns (best_params, best_losses [E], improved [E] bool).
    """
    improved = losses < best_losses * (1.0 - improvement_threshold)  # [E]

    def pick(best: jax.Array, new: jax.Array) -> jax.Array:
        mask = improved.reshape((-1,) + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, best)

    best_params = jax.tree_util.tree_map(pick, best_params, params)
    return best_params, jnp.where(improved, losses, best_losses), improved


def select_elites(losses: jax.Array, num_elites: int) -> jax.Array:
    """Indices [num_elites] of the members with the lowest losses, best first."""
    return jnp.argsort(losses, stable=True)[:num_elites].astype(jnp.int32)


_train_epoch_jit = jax.jit(train_epoch)
_holdout_mse_jit = jax.jit(holdout_mse, static_argnums=0)
_update_best_jit = jax.jit(update_best_snapshot)


class DynamicsModel(struct.PyTreeNode):
    """A trained ensemble: best-snapshot parameters of all members, normaliser and elites."""

    params: Params  # every leaf [E, ...]
    normaliser: Normaliser
    elite_indices: jax.Array  # [num_elites] int32
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)
    config: DynamicsConfig = struct.field(pytree_node=False)
    outputs: tuple[str, ...] = struct.field(pytree_node=False, default=("reward",))
    """Names of the predicted columns after the observation's change: ``("reward",)`` for a
    model that learns a task's reward (MOPO's), the env's info columns for one shared by every
    task (the rollout computes each task's reward from them); may be empty."""


def _as_transitions(
    observations: Any, actions: Any, next_observations: Any, extra: Any
) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(observations, np.float32)
    act = np.asarray(actions, np.float32)
    next_obs = np.asarray(next_observations, np.float32)
    extra = np.asarray(extra, np.float32)
    extra = extra.reshape(len(extra), -1) if extra.ndim == 1 else extra  # [N, k]
    if obs.ndim != 2 or act.ndim != 2 or next_obs.shape != obs.shape or extra.ndim != 2:
        raise ValueError(
            f"expected observations [N, o], actions [N, a], next_observations [N, o] and "
            f"extra columns [N] or [N, k]; got {obs.shape}, {act.shape}, {next_obs.shape}, "
            f"{extra.shape}"
        )
    if not len(obs) == len(act) == len(extra):
        raise ValueError(f"row counts differ: {len(obs)}, {len(act)}, {len(extra)} extra rows")
    inputs = np.concatenate([obs, act], axis=-1)  # [N, o + a]
    targets = np.concatenate([next_obs - obs, extra], axis=-1)  # [N, o + k]
    if not (np.isfinite(inputs).all() and np.isfinite(targets).all()):
        raise ValueError("transitions contain NaN or inf")
    return inputs, targets


def train_dynamics(
    config: DynamicsConfig,
    key: jax.Array,
    observations: Any,
    actions: Any,
    next_observations: Any,
    extra: Any,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
    outputs: tuple[str, ...] = ("reward",),
) -> tuple[DynamicsModel, dict[str, Any]]:
    """Fit the ensemble to transitions [N, o], [N, a], [N, o] and the extra predicted columns
    ``extra`` ([N] or [N, k], named ``outputs``: a reward, or info columns); deterministic
    given ``key``.

    ``on_epoch(epoch, holdout_losses [E])`` is called after every epoch (1-based) with that
    epoch's per-member holdout MSE, e.g. for a progress bar.
    """
    inputs, targets = _as_transitions(observations, actions, next_observations, extra)
    obs_dim = inputs.shape[1] - np.shape(actions)[1]
    if targets.shape[1] - obs_dim != len(outputs):
        raise ValueError(
            f"{targets.shape[1] - obs_dim} extra columns but {len(outputs)} output names"
        )
    n = len(inputs)
    holdout_size = min(int(n * config.holdout_ratio), config.max_holdout)
    if holdout_size < 1 or n - holdout_size < 1:
        raise ValueError(f"{n} transitions are too few for a holdout split")
    key_split, key_init, key_train = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(key_split, n))
    hold_idx, train_idx = perm[:holdout_size], perm[holdout_size:]
    normaliser = Normaliser.create(inputs[train_idx], targets[train_idx])
    train_x = normaliser.normalise_inputs(jnp.asarray(inputs[train_idx]))  # [N_train, in]
    train_y = normaliser.normalise_targets(jnp.asarray(targets[train_idx]))  # [N_train, out]
    hold_x = normaliser.normalise_inputs(jnp.asarray(inputs[hold_idx]))  # [H, in]
    hold_y = normaliser.normalise_targets(jnp.asarray(targets[hold_idx]))  # [H, out]

    state = EnsembleTrainState.create(config, key_init, inputs.shape[1], targets.shape[1])
    best_params = state.params
    best_losses = jnp.full((config.ensemble_size,), jnp.inf, jnp.float32)
    epoch, epochs_since_update, early_stopped = 0, 0, False
    train_metrics: dict[str, jax.Array] = {}
    while True:
        key_train, key_epoch = jax.random.split(key_train)
        state, train_metrics = _train_epoch_jit(state, train_x, train_y, key_epoch)
        losses = _holdout_mse_jit(config, state.params, hold_x, hold_y)  # [E]
        best_params, best_losses, improved = _update_best_jit(
            best_params, best_losses, state.params, losses, config.improvement_threshold
        )
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch, np.asarray(losses))
        epochs_since_update = 0 if bool(jnp.any(improved)) else epochs_since_update + 1
        if epochs_since_update >= config.max_epochs_since_update:
            early_stopped = True
            break
        if config.max_epochs is not None and epoch >= config.max_epochs:
            break

    elite_indices = select_elites(best_losses, config.num_elites)
    model = DynamicsModel(
        params=best_params,
        normaliser=normaliser,
        elite_indices=elite_indices,
        obs_dim=obs_dim,
        act_dim=inputs.shape[1] - obs_dim,
        config=config,
        outputs=tuple(outputs),
    )
    best, elites = np.asarray(best_losses), np.asarray(elite_indices)
    metrics = {
        "epochs": epoch,
        # False when max_epochs ended the fit while the holdout MSE was still improving.
        "early_stopped": early_stopped,
        "train_size": n - holdout_size,
        "holdout_size": holdout_size,
        "train_loss": float(train_metrics["loss"]),
        "holdout_mse": best.tolist(),
        "elite_indices": elites.tolist(),
        "elite_holdout_mse": float(best[elites].mean()),
        # Share of the elites' output dims whose upper log-variance bound fell below the lower:
        # there the variance is a constant, and so is that dim's part of MOPO's penalty.
        "logvar_bounds_crossed": float(
            np.mean(
                np.asarray(best_params["max_logvar"])[elites]
                < np.asarray(best_params["min_logvar"])[elites]
            )
        ),
    }
    return model, metrics


def _predict_members(
    model: DynamicsModel, params: Params, obs: jax.Array, act: jax.Array
) -> tuple[jax.Array, jax.Array]:
    x = model.normaliser.normalise_inputs(jnp.concatenate([obs, act], axis=-1))  # [B, in]
    mean, logvar = ensemble_apply(model.config, params, x)  # [M, B, out]
    return model.normaliser.unnormalise_prediction(mean, logvar)


def predict(model: DynamicsModel, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every member's Gaussian over (next_obs - obs, outputs): mean, logvar [E, B, o + k]."""
    return _predict_members(model, model.params, obs, act)


def _max_sigma(mean: jax.Array, std: jax.Array, obs_dim: int) -> jax.Array:
    # MOPO: max over elites of the norm of the predicted std (every predicted dim).
    return jnp.max(jnp.linalg.norm(std, axis=-1), axis=0)


def _disagreement(mean: jax.Array, std: jax.Array, obs_dim: int) -> jax.Array:
    # OfflineRL-Kit "pairwise-diff": max over elites of the distance of each elite's
    # next-state mean to the mean of the elites' means (obs part only).
    delta = mean[..., :obs_dim]  # [M, B, o]
    return jnp.max(jnp.linalg.norm(delta - jnp.mean(delta, axis=0), axis=-1), axis=0)


PENALTIES: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "max_sigma": _max_sigma,
    "disagreement": _disagreement,
}


def step(
    model: DynamicsModel,
    key: jax.Array,
    obs: jax.Array,
    act: jax.Array,
    penalty: str = "max_sigma",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample one model transition per row from a random elite (MOPO).

    obs [B, o], act [B, a] -> next_obs [B, o], the predicted ``model.outputs`` [B, k] and the
    uncertainty u [B] (>= 0, unnormalised units; see PENALTIES). ``penalty`` must be static
    under jit.
    """
    if penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; known: {sorted(PENALTIES)}")
    elite_params = jax.tree_util.tree_map(lambda p: p[model.elite_indices], model.params)
    mean, logvar = _predict_members(model, elite_params, obs, act)  # [M, B, o + k]
    std = jnp.exp(0.5 * logvar)
    key_member, key_noise = jax.random.split(key)
    batch = obs.shape[0]
    member = jax.random.randint(key_member, (batch,), 0, mean.shape[0])  # [B]
    rows = jnp.arange(batch)
    sample = mean[member, rows] + std[member, rows] * jax.random.normal(
        key_noise, mean.shape[1:], mean.dtype
    )  # [B, o + k]
    next_obs = obs + sample[:, : model.obs_dim]
    uncertainty = PENALTIES[penalty](mean, std, model.obs_dim)  # [B]
    return next_obs, sample[:, model.obs_dim :], uncertainty


_MAGIC = b"UDGDYN\x00\x01"
_NORMALISER_KEYS = ("input_mean", "input_std", "target_mean", "target_std")
_FORMAT_VERSION = 2
"""Version 2 names the predicted columns (``outputs``); version 1 files predict a reward."""


def _config_from_json(raw: dict[str, Any]) -> DynamicsConfig:
    fields = {f.name for f in dataclasses.fields(DynamicsConfig)}
    if not isinstance(raw, dict):
        raise ValueError("config is not a JSON object")
    if set(raw) - fields:
        raise ValueError(f"unknown config fields {sorted(set(raw) - fields)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return DynamicsConfig(**values)


def save_model(model: DynamicsModel, path: str | os.PathLike[str], env_name: str) -> None:
    """Write the model atomically: magic, header length, JSON header, msgpack payload."""
    payload = serialization.msgpack_serialize(
        jax.device_get(
            {
                "params": model.params,
                "normaliser": serialization.to_state_dict(model.normaliser),
                "elite_indices": model.elite_indices,
            }
        )
    )
    header = json.dumps(
        {
            "format": "udg-dynamics",
            "version": _FORMAT_VERSION,
            "env_name": env_name,
            "obs_dim": model.obs_dim,
            "act_dim": model.act_dim,
            "outputs": list(model.outputs),
            "config": dataclasses.asdict(model.config),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
    ).encode()
    atomic_write_bytes(Path(path), _MAGIC + len(header).to_bytes(8, "little") + header + payload)


def load_model(
    path: str | os.PathLike[str],
    expected_env_name: str | None = None,
    *,
    expected_obs_dim: int | None = None,
    expected_act_dim: int | None = None,
) -> DynamicsModel:
    """Read a file of ``save_model``; a wrong env, wrong dims or a damaged file -> ValueError."""
    data = Path(path).read_bytes()
    if len(data) < 16 or data[:8] != _MAGIC:
        raise ValueError(f"{path}: not a udg dynamics model file")
    header_end = 16 + int.from_bytes(data[8:16], "little")
    try:
        header = json.loads(data[16:header_end].decode())
        config = _config_from_json(header["config"])
        env_name, obs_dim, act_dim = (
            header["env_name"],
            int(header["obs_dim"]),
            int(header["act_dim"]),
        )
        digest = header["payload_sha256"]
        outputs = tuple(str(o) for o in header.get("outputs", ["reward"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: corrupt or truncated header ({exc})") from None
    if header.get("format") != "udg-dynamics" or header.get("version") not in (1, 2):
        raise ValueError(
            f"{path}: format {header.get('format')!r} version {header.get('version')}, "
            f"expected 'udg-dynamics' version {_FORMAT_VERSION}"
        )
    if expected_env_name is not None and env_name != expected_env_name:
        raise ValueError(f"{path}: model of env {env_name!r}, expected {expected_env_name!r}")
    for name, got, want in (
        ("obs_dim", obs_dim, expected_obs_dim),
        ("act_dim", act_dim, expected_act_dim),
    ):
        if want is not None and got != want:
            raise ValueError(f"{path}: model has {name}={got}, expected {want}")
    payload = data[header_end:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError(f"{path}: corrupt or truncated payload (checksum mismatch)")
    try:
        restored = serialization.msgpack_restore(payload)
        params, elites = restored["params"], np.asarray(restored["elite_indices"])
        norm = {k: np.asarray(restored["normaliser"][k], np.float32) for k in _NORMALISER_KEYS}
    except Exception as exc:  # msgpack raises several unrelated types on damaged bytes
        raise ValueError(f"{path}: corrupt payload ({exc})") from None

    template = jax.eval_shape(
        lambda: init_ensemble(config, jax.random.key(0), obs_dim + act_dim, obs_dim + len(outputs))
    )
    expected = jax.tree_util.tree_map(lambda s: tuple(s.shape), template)
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params)
    if got != expected or np.shape(elites) != (config.num_elites,):
        raise ValueError(
            f"{path}: parameter shapes do not match obs_dim={obs_dim}, act_dim={act_dim}"
        )
    if len(set(elites.tolist())) != len(elites) or not np.all(
        (elites >= 0) & (elites < config.ensemble_size)
    ):
        raise ValueError(f"{path}: invalid elite indices {elites.tolist()}")
    in_dim, out_dim = obs_dim + act_dim, obs_dim + len(outputs)
    if [v.shape for v in norm.values()] != [(in_dim,), (in_dim,), (out_dim,), (out_dim,)]:
        raise ValueError(
            f"{path}: normaliser shapes do not match obs_dim={obs_dim}, act_dim={act_dim}"
        )
    normaliser = Normaliser(**{k: jnp.asarray(v) for k, v in norm.items()})
    return DynamicsModel(
        params=jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params),
        normaliser=normaliser,
        elite_indices=jnp.asarray(elites, jnp.int32),
        obs_dim=obs_dim,
        act_dim=act_dim,
        config=config,
        outputs=outputs,
    )

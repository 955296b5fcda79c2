"""The probabilistic ensemble network of MOPO's dynamics model and its training loss.

This module holds the pure pieces: the configuration, one Gaussian MLP member (mean and
soft-bounded log-variance of the normalised target), the ensemble built from it by
``jax.vmap(init)`` so that every parameter carries the member axis first (``[E, ...]``), the
normaliser of inputs and targets, and the loss (Gaussian NLL + log-variance bound penalty +
per-layer weight decay). Training, prediction, sampling and files live in
``udg.offline.dynamics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from udg.errors import ConfigError

Params = Any  # a nested dict of arrays, every leaf [E, ...]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "swish": nn.swish,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
}


@dataclass(frozen=True)
class DynamicsConfig:
    """Probabilistic dynamics ensemble of MOPO (Yu et al. 2020), after PETS (Chua et al. 2018).

    Each member e predicts a diagonal Gaussian over the normalised target
    y = normalise(concat(next_obs - obs, reward)) given x = normalise(concat(obs, act)), with
    log-variance soft-bounded by learned per-member vectors:
        lv = max_lv - softplus(max_lv - raw);  lv = min_lv + softplus(lv - min_lv).
    The training loss (OfflineRL-Kit's, constants of the NLL dropped, mean over batch and dims,
    summed over members so each member's gradient is its own):
        L = sum_e mean_{b,d} [ (mu_e - y)^2 * exp(-lv_e) + lv_e ]
            + logvar_bound_penalty * mean_e (sum_d max_lv_e - sum_d min_lv_e)
            + sum_l weight_decay[l] * 0.5 * ||W_l||^2.
    PETS, MBPO and OfflineRL-Kit share one pair of bound vectors among the members, so each
    member's NLL pulls on them against a single penalty. Here each member has its own bounds, so
    the penalty is averaged over members, not summed: each member's bounds then feel the
    pressure a shared pair would (``results/presets.md`` tells what summing did).
    """

    ensemble_size: int = 7
    """Number of ensemble members E."""
    num_elites: int = 5
    """Members with the lowest holdout MSE used for rollouts and uncertainty."""
    hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layer widths of each member."""
    activation: str = "swish"
    """Hidden activation, a key of ACTIVATIONS."""
    weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    """L2 coefficient per layer incl. the output layer (coef * 0.5 * ||W||^2, kernels only)."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Minibatch size per member (capped at the train-split size)."""
    holdout_ratio: float = 0.2
    """Fraction of transitions held out for validation."""
    max_holdout: int = 1000
    """Cap on the number of held-out transitions."""
    max_epochs_since_update: int = 5
    """Stop after this many epochs in which no member improved its holdout MSE."""
    max_epochs: int | None = None
    """Hard cap on epochs (None: early stopping only)."""
    max_batches_per_epoch: int | None = None
    """Cap on minibatch steps per epoch: an epoch then trains on a fresh random subset of
    ``max_batches_per_epoch * batch_size`` transitions per member, which bounds the cost of an
    epoch on large datasets (None: every epoch is a full pass)."""
    logvar_bound_penalty: float = 0.01
    """Coefficient on sum(max_logvar) - sum(min_logvar) (members' mean), keeping the bounds tight."""
    improvement_threshold: float = 0.01
    """Relative holdout-MSE improvement (best - new) / best that counts as an update."""
    max_logvar_init: float = 0.5
    """Initial upper log-variance bound in normalised target units (PETS/OfflineRL-Kit)."""
    min_logvar_init: float = -10.0
    """Initial lower log-variance bound in normalised target units (PETS/OfflineRL-Kit)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}"
            )
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ConfigError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        if len(self.weight_decay) != len(self.hidden_dims) + 1:
            raise ConfigError(
                f"weight_decay needs one value per layer incl. output "
                f"({len(self.hidden_dims) + 1}), got {len(self.weight_decay)}"
            )
        if not all(0 <= w < math.inf for w in self.weight_decay):  # also refuses NaN
            raise ConfigError(f"weight_decay must be finite numbers >= 0, got {self.weight_decay}")
        if self.ensemble_size < 1:
            raise ConfigError(f"ensemble_size must be >= 1, got {self.ensemble_size}")
        if not 1 <= self.num_elites <= self.ensemble_size:
            raise ConfigError(
                f"num_elites must be in [1, ensemble_size={self.ensemble_size}], "
                f"got {self.num_elites}"
            )
        if not 0.0 < self.holdout_ratio < 1.0:
            raise ConfigError(f"holdout_ratio must be in (0, 1), got {self.holdout_ratio}")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}"
            )
        for name in ("logvar_bound_penalty", "improvement_threshold"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not -math.inf < self.min_logvar_init < self.max_logvar_init < math.inf:
            raise ConfigError(
                f"min_logvar_init must be below max_logvar_init, both finite, got "
                f"{self.min_logvar_init} and {self.max_logvar_init}"
            )
        for name in ("batch_size", "max_holdout", "max_epochs_since_update"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1 or None, got {self.max_epochs}")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise ConfigError(
                f"max_batches_per_epoch must be >= 1 or None, got {self.max_batches_per_epoch}"
            )


def _member_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    # PETS/MBPO/OfflineRL-Kit: truncated normal with std 1 / (2 sqrt(fan_in)).
    std = 0.5 / math.sqrt(shape[0])
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * std


class GaussianMLP(nn.Module):
    """One member: MLP -> (mean, soft-bounded log-variance) of the normalised target."""

    hidden_dims: tuple[int, ...]
    out_dim: int
    activation: str
    max_logvar_init: float
    min_logvar_init: float

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:  # x [B, in]
        act = ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden_dims):
            x = act(nn.Dense(width, kernel_init=_member_kernel_init, name=f"layer_{i}")(x))
        out = nn.Dense(
            2 * self.out_dim, kernel_init=_member_kernel_init, name=f"layer_{len(self.hidden_dims)}"
        )(x)
        mean, raw_logvar = jnp.split(out, 2, axis=-1)  # [B, out] each
        max_logvar = self.param(
            "max_logvar", nn.initializers.constant(self.max_logvar_init), (self.out_dim,)
        )
        min_logvar = self.param(
            "min_logvar", nn.initializers.constant(self.min_logvar_init), (self.out_dim,)
        )
        # Soft clamps keep gradients alive outside the bounds (PETS).
        logvar = max_logvar - nn.softplus(max_logvar - raw_logvar)
        logvar = min_logvar + nn.softplus(logvar - min_logvar)
        return mean, logvar


def member_network(config: DynamicsConfig, out_dim: int) -> GaussianMLP:
    """The single-member module the ensemble is vmapped from."""
    return GaussianMLP(
        hidden_dims=tuple(config.hidden_dims),
        out_dim=out_dim,
        activation=config.activation,
        max_logvar_init=config.max_logvar_init,
        min_logvar_init=config.min_logvar_init,
    )


def init_ensemble(config: DynamicsConfig, key: jax.Array, in_dim: int, out_dim: int) -> Params:
    """Independent initialisations of the E members; every leaf gets the member axis first."""
    net = member_network(config, out_dim)
    keys = jax.random.split(key, config.ensemble_size)
    dummy = jnp.zeros((1, in_dim), jnp.float32)
    return jax.vmap(lambda k: net.init(k, dummy)["params"])(keys)


def ensemble_apply(
    config: DynamicsConfig, params: Params, inputs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Apply all members: inputs [B, in] (shared) or [E, B, in] (one batch per member).

    Returns mean, logvar [E, B, out] in normalised target units. The member count is read
    from ``params``, so a gathered subset (e.g. the elites) works too.
    """
    out_dim = params["max_logvar"].shape[-1]
    net = member_network(config, out_dim)
    in_axis = 0 if inputs.ndim == 3 else None
    return jax.vmap(lambda p, x: net.apply({"params": p}, x), in_axes=(0, in_axis))(params, inputs)


def weight_decay_loss(config: DynamicsConfig, params: Params) -> jax.Array:
    """sum_l coef_l * 0.5 * ||W_l||^2 over members (kernels only, as OfflineRL-Kit)."""
    total = jnp.zeros((), jnp.float32)
    for i, coef in enumerate(config.weight_decay):
        total = total + coef * 0.5 * jnp.sum(jnp.square(params[f"layer_{i}"]["kernel"]))
    return total


def ensemble_loss(
    config: DynamicsConfig, params: Params, inputs: jax.Array, targets: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DynamicsConfig loss on per-member batches inputs [E, B, in], targets [E, B, out]."""
    mean, logvar = ensemble_apply(config, params, inputs)  # [E, B, out]
    sq_err = jnp.square(mean - targets)  # [E, B, out]
    nll = jnp.mean(sq_err * jnp.exp(-logvar) + logvar, axis=(1, 2))  # [E]
    # Mean over members: the pressure of one shared pair of bounds (see DynamicsConfig).
    members = params["max_logvar"].shape[0]
    bound = (jnp.sum(params["max_logvar"]) - jnp.sum(params["min_logvar"])) / members
    decay = weight_decay_loss(config, params)
    loss = jnp.sum(nll) + config.logvar_bound_penalty * bound + decay
    metrics = {
        "loss": loss,
        "nll": jnp.mean(nll),
        "mse": jnp.mean(sq_err),
        "logvar_bound": bound,
        "weight_decay": decay,
    }
    return loss, metrics


class Normaliser(struct.PyTreeNode):
    """Mean/std of inputs concat(obs, act) and targets concat(delta_obs, reward), train split."""

    input_mean: jax.Array  # [in]
    input_std: jax.Array  # [in]
    target_mean: jax.Array  # [out]
    target_std: jax.Array  # [out]

    @classmethod
    def create(cls, inputs: np.ndarray, targets: np.ndarray) -> Normaliser:
        """Fit on the train split; near-constant columns get std 1 (OfflineRL-Kit's scaler)."""

        def stats(x: np.ndarray) -> tuple[jax.Array, jax.Array]:
            mean = x.mean(axis=0, dtype=np.float64)
            std = x.std(axis=0, dtype=np.float64)
            std = np.where(std < 1e-12, 1.0, std)
            return jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

        input_mean, input_std = stats(inputs)
        target_mean, target_std = stats(targets)
        return cls(input_mean, input_std, target_mean, target_std)

    def normalise_inputs(self, x: jax.Array) -> jax.Array:
        """(x - mean) / std on the last axis."""
        return (x - self.input_mean) / self.input_std

    def normalise_targets(self, y: jax.Array) -> jax.Array:
        """(y - mean) / std on the last axis."""
        return (y - self.target_mean) / self.target_std

    def unnormalise_prediction(
        self, mean: jax.Array, logvar: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Map a Gaussian in normalised target units back to delta/reward units."""
        return mean * self.target_std + self.target_mean, logvar + 2.0 * jnp.log(self.target_std)

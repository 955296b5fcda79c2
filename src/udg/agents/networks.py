"""Flax networks of the SAC learner: an MLP torso, a tanh-squashed Gaussian actor and a twin-Q
critic ensemble. The modules only map arrays to arrays; sampling, log-probabilities and losses
are pure functions here and in `sac.py`. The critic pair is one `nn.vmap`-ed module, so its
parameters and outputs carry the member axis first (`[2, ...]`) and the two critics run as one
batched matmul instead of two (the ensemble of ikostrikov/walk_in_the_park
`rl/networks/ensemble.py`).
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN = -5.0
"""Lower clip of the actor's log standard deviation (cleanrl's bound): keeps the Gaussian from
collapsing to a point, where the log-density and its gradient blow up."""
LOG_STD_MAX = 2.0
"""Upper clip of the log standard deviation: std e^2 ~ 7.4 already saturates tanh."""
NUM_CRITICS = 2
"""Twin Q (clipped double Q-learning, Fujimoto et al. 2018) as used by SAC."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """Xavier-uniform weights (the jaxrl default), scaled for output layers."""
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with ReLU; `activate_final` also rectifies the last layer."""

    hidden_dims: Sequence[int]
    activate_final: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=default_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = nn.relu(x)
        return x


class TanhGaussianActor(nn.Module):
    """Gaussian policy over pre-squash actions u; the action is tanh(u) in [-1, 1]^act_dim.

    Returns `(mean, log_std)`, each `[..., act_dim]`, with log_std clipped to
    [LOG_STD_MIN, LOG_STD_MAX]. One output layer of width 2*act_dim yields both halves, which
    saves a matmul dispatch per call.
    """

    hidden_dims: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP(self.hidden_dims, activate_final=True)(observations)
        out = nn.Dense(2 * self.act_dim, kernel_init=default_init(1e-2))(h)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class StateActionValue(nn.Module):
    """Q(s, a): an MLP on the observation and action, one scalar per row.

    The first layer is W [s; a] + b written as W_s s + W_a a + b: the same function as on the
    concatenation, but the actor loss (which differentiates Q with respect to a only) then
    needs the gradient through the act_dim columns instead of all obs_dim + act_dim.
    """

    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        width, *rest = self.hidden_dims
        h = nn.Dense(width, kernel_init=default_init(), name="observation_layer")(observations)
        h = h + nn.Dense(width, use_bias=False, kernel_init=default_init(), name="action_layer")(
            actions
        )
        h = MLP(rest, activate_final=True)(nn.relu(h)) if rest else nn.relu(h)
        return nn.Dense(1, kernel_init=default_init(), name="output_layer")(h)[..., 0]


class CriticEnsemble(nn.Module):
    """`num` independent Q networks evaluated on the same inputs; output `[num, ...]`.

    `nn.vmap` stacks every parameter on a leading member axis; with shared inputs
    (`in_axes=None`) the first layer of all members becomes one wide matmul.
    """

    hidden_dims: Sequence[int]
    num: int = NUM_CRITICS

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            StateActionValue,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble(self.hidden_dims)(observations, actions)


def tanh_log_det_jacobian(pre_tanh: jax.Array) -> jax.Array:
    """log |d tanh(u) / du| = log(1 - tanh(u)^2), in the overflow-free form
    2 * (log 2 - u - softplus(-2u)) (the identity used by TFP's Tanh bijector)."""
    return 2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def squashed_gaussian_log_prob(
    mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array
) -> jax.Array:
    """log pi(tanh(u)) = sum_d [log N(u_d; mean_d, std_d) - log(1 - tanh(u_d)^2)] over the last
    axis: the change of variables a = tanh(u) (Haarnoja et al. 2018, appendix C)."""
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI
    return jnp.sum(gaussian - tanh_log_det_jacobian(pre_tanh), axis=-1)


def squash_gaussian_noise(
    mean: jax.Array, log_std: jax.Array, noise: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised action a = tanh(mean + std * noise), noise ~ N(0, I), and its
    log-probability. Uses the noise directly in the Gaussian term ((u - mean)/std == noise),
    which is exact and spares a division."""
    pre_tanh = mean + jnp.exp(log_std) * noise
    gaussian = -0.5 * jnp.square(noise) - log_std - _HALF_LOG_2PI
    log_prob = jnp.sum(gaussian - tanh_log_det_jacobian(pre_tanh), axis=-1)
    return jnp.tanh(pre_tanh), log_prob


def sample_squashed_gaussian(
    mean: jax.Array, log_std: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Sample a = tanh(mean + std * eps), eps ~ N(0, I) drawn from `key`, and log pi(a)."""
    return squash_gaussian_noise(mean, log_std, jax.random.normal(key, mean.shape, mean.dtype))

"""Implicit Q-Learning, a model-free offline learner, in pure JAX: a state value fitted as an
upper expectile of the dataset actions' Q, a Q fitted to ``r + gamma V(s')``, and a policy
extracted by advantage-weighted regression, so that no action outside the data is ever queried.

One learner is an `IQL` pytree (actor, twin critics and their target, value, optimiser states,
observation statistics, step counter) whose config is a static field; a population is the same
pytree with a leading member axis on every leaf (`FUNCTIONS.create_members`,
`FUNCTIONS.update_members`: `model_free.LearnerFunctions`, built from this module's networks,
update and policy), as stage 1's SAC agents and MOPO's cells. `update(state, batch, key) ->
(state, metrics)` is one iteration; batches hold raw observations, which the learner normalises
(when configured), and `FUNCTIONS.act` normalises too, so evaluation passes the environment's
observations.

Follows the authors' code, ikostrikov/implicit_q_learning ``learner.py``, ``critic.py``,
``actor.py``, ``policy.py`` and ``configs/mujoco_config.py`` (jaxrl's IQL): its locomotion
hyperparameters; the order value, actor, critic, target within one step; the value regressing
``min_j Q'_j(s, a)`` of the *target* critics with the expectile loss ``|tau - 1(u < 0)| u^2``;
the actor weighting by ``min(exp(beta (min_j Q'_j(s, a) - V(s))), 100)`` with the just-updated V;
the critic target ``r + gamma (1 - d) V(s')`` with the just-updated V and the loss the sum of the
twins' mean squared errors; the Gaussian actor with mean ``tanh(MLP(s))`` (not a tanh-squashed
distribution), a state-independent log-std initialised at 0 and clipped to [-5, 2]; the actor's
Adam learning rate decayed to 0 over ``num_updates`` by a cosine (``optax.cosine_decay_schedule``);
the greedy action ``tanh(mean)``. tinkoff-ai/CORL ``algorithms/offline/iql.py`` has the same
hyperparameters and differs in taking the advantage from the value before its step, averaging
(not summing) the twins' losses and clipping the log-std at -20; its observation normalisation
(``normalize=True``, ``(s - mean) / (std + 1e-3)``) is followed here as `normalize_observations`.
EmptyJackson/unifloral ``algorithms/iql.py`` (targets averaged before the step, the cosine
schedule on every network, Adam eps 1e-5) is not followed. Deliberate differences: Xavier-uniform
initialisation (the project's `networks.default_init`) instead of orthogonal; the critic's first
layer split into observation and action parts (the same function as on the concatenation); no
reward scaling inside the learner (the paper multiplies locomotion rewards by 1000 / return
range: `model_free.return_range_scale`, applied by the caller); ``key`` is unused (no dropout in
the locomotion settings) and kept for the common update signature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from udg.agents.networks import MLP, CriticEnsemble, default_init
from udg.errors import ConfigError
from udg.offline import model_free
from udg.offline.model_free import Batch, Metrics, ObservationStats

LOG_STD_MIN = -5.0
"""Lower clip of the actor's log-std (jaxrl IQL's ``log_std_min=-5.0``)."""
LOG_STD_MAX = 2.0
"""Upper clip of the actor's log-std (jaxrl's ``LOG_STD_MAX``)."""
ACTOR_SCHEDULES = ("cosine", "constant")
"""How the actor's learning rate evolves: cosine decay to 0 over num_updates, or constant."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class IQLConfig:
    """IQL (Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit
    Q-Learning", arXiv 2110.06169) with its locomotion settings:
      value:  L_V = E[L2_tau(min_j Q'_j(s, a) - V(s))], L2_tau(u) = |tau - 1(u < 0)| u^2;
      critic: L_Q = sum_j E[(Q_j(s, a) - r - gamma (1 - d) V(s'))^2];
      actor:  L_pi = -E[min(exp(beta (min_j Q'_j(s, a) - V(s))), w_max) log pi(a|s)];
      target: theta' <- tau_polyak theta + (1 - tau_polyak) theta'.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the actor, each critic and the value."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (its peak, under the cosine schedule)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    value_lr: float = 3e-4
    """Adam learning rate of the value."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics per update."""
    expectile: float = 0.7
    """tau of the expectile loss: the upper expectile of Q that V fits (0.5: the mean)."""
    temperature: float = 3.0
    """beta, the inverse temperature of the advantage weights (0: behaviour cloning)."""
    max_weight: float = 100.0
    """w_max, the clip of the advantage weights exp(beta A)."""
    actor_schedule: str = "cosine"
    """Actor learning-rate schedule: cosine (decay to 0 over num_updates) or constant."""
    num_updates: int = 1_000_000
    """Updates of the whole run: the length of the actor's cosine schedule."""
    batch_size: int = 256
    """Transitions per update batch (read by the loop that samples the data)."""
    normalize_observations: bool = True
    """Normalise observations by the dataset's mean and std. On by default as in CORL's
    locomotion configs (the authors' code does not, but MuJoCo features differ in scale by
    orders of magnitude) and as in TD3+BC here, so both learners see the same inputs."""

    def __post_init__(self) -> None:
        # A list would make the config unhashable, and the config is a jit cache key.
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in self.hidden_dims))
        if not self.hidden_dims or min(self.hidden_dims) <= 0:
            raise ConfigError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        for name in ("actor_lr", "critic_lr", "value_lr", "max_weight"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not 0 <= self.temperature < math.inf:
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        if self.actor_schedule not in ACTOR_SCHEDULES:
            raise ConfigError(
                f"unknown actor_schedule {self.actor_schedule!r}; known: "
                f"{', '.join(ACTOR_SCHEDULES)}"
            )
        if self.num_updates < 1 or self.batch_size < 1:
            raise ConfigError(
                f"num_updates and batch_size must be >= 1, got {self.num_updates}, "
                f"{self.batch_size}"
            )

    def actor_learning_rate(self) -> optax.Schedule | float:
        """The actor's learning rate, a schedule of the update count or a constant."""
        if self.actor_schedule == "cosine":
            return optax.cosine_decay_schedule(self.actor_lr, self.num_updates)
        return self.actor_lr


class GaussianActor(nn.Module):
    """N(tanh(MLP(s)), exp(log_std)^2) per action dimension, log_std a state-independent
    parameter (initialised at 0, clipped to [LOG_STD_MIN, LOG_STD_MAX]); returns
    ``(mean [..., a], log_std [a])``."""

    hidden_dims: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP(self.hidden_dims, activate_final=True)(observations)
        mean = jnp.tanh(nn.Dense(self.act_dim, kernel_init=default_init())(h))
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class StateValue(nn.Module):
    """V(s): an MLP with a scalar output, one value per row."""

    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP((*self.hidden_dims, 1))(observations)[..., 0]


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """log N(actions; mean, diag(exp(log_std)^2)), summed over the last axis."""
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, axis=-1)


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|expectile - 1(diff < 0)| diff^2, elementwise (the asymmetric L2 of IQL's eq. 5)."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * jnp.square(diff)


def _actor_def(config: IQLConfig, act_dim: int) -> GaussianActor:
    return GaussianActor(config.hidden_dims, act_dim)


def _critic_def(config: IQLConfig) -> CriticEnsemble:
    return CriticEnsemble(config.hidden_dims)


def _value_def(config: IQLConfig) -> StateValue:
    return StateValue(config.hidden_dims)


def _actor_optimizer(config: IQLConfig) -> optax.GradientTransformation:
    return optax.adam(config.actor_learning_rate())


class IQL(struct.PyTreeNode):
    """One IQL learner (or, with a leading axis on every leaf, a population of them)."""

    actor_params: Any
    critic_params: Any  # every leaf [2, ...]: the twin critics
    target_critic_params: Any
    value_params: Any
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    value_opt_state: optax.OptState
    obs_stats: ObservationStats
    step: jax.Array  # [] int32, updates done
    config: IQLConfig = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        key: jax.Array,
        obs_dim: int,
        act_dim: int,
        config: IQLConfig,
        obs_stats: ObservationStats | None = None,
    ) -> IQL:
        """Fresh learner (`model_free.LearnerFunctions.create`); the target critics start equal
        to the critics."""
        return FUNCTIONS.create(key, obs_dim, act_dim, config, obs_stats)


def _init(
    key: jax.Array, config: IQLConfig, observations: jax.Array, actions: jax.Array
) -> dict[str, Any]:
    """A fresh learner's networks, target critics and optimiser states, from example inputs."""
    actor_key, critic_key, value_key = jax.random.split(key, 3)
    actor_params = _actor_def(config, actions.shape[-1]).init(actor_key, observations)
    critic_params = _critic_def(config).init(critic_key, observations, actions)
    value_params = _value_def(config).init(value_key, observations)
    return {
        "actor_params": actor_params,
        "critic_params": critic_params,
        # A copy, not an alias: donating a state whose two fields share a buffer fails.
        "target_critic_params": jax.tree.map(jnp.copy, critic_params),
        "value_params": value_params,
        "actor_opt_state": _actor_optimizer(config).init(actor_params),
        "critic_opt_state": optax.adam(config.critic_lr).init(critic_params),
        "value_opt_state": optax.adam(config.value_lr).init(value_params),
    }


def update(state: IQL, batch: Batch, key: jax.Array) -> tuple[IQL, Metrics]:
    """One IQL iteration (value, actor, critic, target) on a batch ``{observations [B,o],
    actions [B,a], rewards [B], next_observations [B,o], terminations [B]}`` of raw
    observations. ``key`` is unused (kept for the common signature)."""
    del key
    config = state.config
    actor_def, critic_def = _actor_def(config, state.act_dim), _critic_def(config)
    value_def = _value_def(config)
    observations = state.obs_stats.normalize(batch["observations"])  # [B, o]
    next_observations = state.obs_stats.normalize(batch["next_observations"])  # [B, o]
    actions = batch["actions"]  # [B, a]

    target_q = jnp.min(
        critic_def.apply(state.target_critic_params, observations, actions), axis=0
    )  # [B]

    def value_loss_fn(value_params: Any) -> tuple[jax.Array, jax.Array]:
        v = value_def.apply(value_params, observations)  # [B]
        return jnp.mean(expectile_loss(target_q - v, config.expectile)), v

    value_params, value_opt_state, value_loss, v = model_free.gradient_step(
        value_loss_fn, state.value_params, state.value_opt_state, optax.adam(config.value_lr)
    )

    # The advantage of the data's actions under the updated value (as jaxrl's IQL does).
    advantage = target_q - value_def.apply(value_params, observations)  # [B]
    weights = jnp.minimum(jnp.exp(config.temperature * advantage), config.max_weight)  # [B]

    def actor_loss_fn(actor_params: Any) -> tuple[jax.Array, None]:
        mean, log_std = actor_def.apply(actor_params, observations)
        return -jnp.mean(weights * gaussian_log_prob(mean, log_std, actions)), None

    actor_params, actor_opt_state, actor_loss, _ = model_free.gradient_step(
        actor_loss_fn, state.actor_params, state.actor_opt_state, _actor_optimizer(config)
    )

    next_v = value_def.apply(value_params, next_observations)  # [B]
    q_target = batch["rewards"] + config.gamma * (1.0 - batch["terminations"]) * next_v  # [B]

    def critic_loss_fn(critic_params: Any) -> tuple[jax.Array, jax.Array]:
        qs = critic_def.apply(critic_params, observations, actions)  # [2, B]
        return model_free.twin_critic_loss(qs, q_target), qs

    critic_params, critic_opt_state, critic_loss, qs = model_free.gradient_step(
        critic_loss_fn, state.critic_params, state.critic_opt_state, optax.adam(config.critic_lr)
    )
    target_critic_params = optax.incremental_update(
        critic_params, state.target_critic_params, config.tau
    )

    new_state = state.replace(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        value_params=value_params,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        value_opt_state=value_opt_state,
        step=state.step + 1,
    )
    learning_rate = config.actor_learning_rate()
    metrics = {
        "value_loss": value_loss,
        "v": jnp.mean(v),
        "critic_loss": critic_loss,
        "q": jnp.mean(qs),
        "actor_loss": actor_loss,
        "advantage": jnp.mean(advantage),
        "weight": jnp.mean(weights),
        "actor_lr": jnp.asarray(
            learning_rate(state.step) if callable(learning_rate) else learning_rate, jnp.float32
        ),
    }
    return new_state, metrics


def _policy(state: IQL, observations: jax.Array) -> jax.Array:
    """The greedy actions tanh(mean) ``[n, a]`` for normalised observations ``[n, o]``."""
    mean, _ = _actor_def(state.config, state.act_dim).apply(state.actor_params, observations)
    return mean


FUNCTIONS = model_free.LearnerFunctions(IQL, _init, update, _policy)
"""IQL's ``create``, ``create_members``, ``update_n``, ``update_members(_n)``, ``act(_members)``
and their jitted forms (``jit_update``, ...), its metrics averaged over the steps:
`model_free.LearnerFunctions`."""

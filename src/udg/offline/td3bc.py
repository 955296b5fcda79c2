"""TD3+BC, a model-free offline learner, in pure JAX: TD3 whose actor loss adds a behaviour-
cloning term, over observations normalised by the dataset's statistics.

One learner is a `TD3BC` pytree (actor, twin critics, their targets, optimiser states, the
observation statistics, a step counter) whose config is a static field; a population is the same
pytree with a leading member axis on every leaf (`FUNCTIONS.create_members`,
`FUNCTIONS.update_members`: `model_free.LearnerFunctions`, built from this module's networks,
update and policy), as stage 1's SAC agents and MOPO's cells. `update(state, batch, key) ->
(state, metrics)` is one TD3+BC iteration: the critic step always, the actor step and the Polyak averaging of both targets only
when the new step count is a multiple of `policy_delay`, chosen by `lax.cond` on the traced
counter, so one compiled update serves every step (under `jax.vmap` the cond becomes a select:
both branches run, the same numbers come out). Batches hold raw observations; the learner
normalises them, and `FUNCTIONS.act` normalises too, so evaluation passes the environment's
observations.

Checked against sfujim/TD3_BC ``TD3_BC.py`` and ``utils.py`` (the authors' code) and
tinkoff-ai/CORL ``algorithms/offline/td3_bc.py``: the hyperparameters; the critic loss as the
sum of the twins' mean squared errors to ``r + gamma (1 - d) min_j Q'_j(s', clip(pi'(s') +
clip(noise), -1, 1))``; the actor loss ``-lambda mean Q_1(s, pi(s)) + mean (pi(s) - a)^2`` with
``lambda = alpha / mean |Q_1(s, pi(s))|`` detached and Q_1 the just-updated first critic; the
actor and both target networks moved only on delay steps (the first at step 2); the normalisation
``(s - mean) / (std + 1e-3)``. Deliberate differences: Xavier-uniform initialisation (the
project's `networks.default_init`) instead of PyTorch's default; the critic's first layer split
into observation and action parts (`networks.StateActionValue`, the same function as on the
concatenation); actions assumed in [-1, 1] (max_action = 1, true of every environment here).
EmptyJackson/unifloral ``algorithms/td3_bc.py`` is a variant not followed here: two critic steps
per sampled batch, targets averaged every step, Adam eps 1e-5 and ``1e-7`` added to ``mean |Q|``.
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

ACTOR_METRICS = ("actor_loss", "bc_loss", "q_pi", "lambda")
"""Metrics of the actor step; 0 on the steps that skip it (``actor_updated`` says which)."""


@dataclass(frozen=True)
class TD3BCConfig:
    """TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning",
    arXiv 2106.06860) with the paper's defaults:
      critic: L_Q = sum_j E[(Q_j(s, a) - y)^2], y = r + gamma (1 - d) min_j Q'_j(s', a'),
              a' = clip(pi'(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2);
      actor (every policy_delay steps): L_pi = -lambda E[Q_1(s, pi(s))] + E[(pi(s) - a)^2],
              lambda = alpha / E|Q_1(s, pi(s))| (no gradient through lambda);
      targets (with the actor): theta' <- tau theta + (1 - tau) theta';
      observations s -> (s - mean) / (std + 1e-3) over the dataset.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the actor and of each critic."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target actor and critics per actor step."""
    policy_noise: float = 0.2
    """sigma, the std of the target policy smoothing noise."""
    noise_clip: float = 0.5
    """c, the bound of the target policy smoothing noise."""
    policy_delay: int = 2
    """Critic steps per actor (and target) step."""
    alpha: float = 2.5
    """Weight of Q against behaviour cloning in the actor loss (through lambda)."""
    batch_size: int = 256
    """Transitions per update batch (read by the loop that samples the data)."""
    normalize_observations: bool = True
    """Normalise observations by the dataset's mean and std (the paper's default)."""

    def __post_init__(self) -> None:
        # A list would make the config unhashable, and the config is a jit cache key.
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in self.hidden_dims))
        if not self.hidden_dims or min(self.hidden_dims) <= 0:
            raise ConfigError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        for name in ("actor_lr", "critic_lr", "alpha"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("policy_noise", "noise_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        if self.policy_delay < 1:
            raise ConfigError(f"policy_delay must be >= 1, got {self.policy_delay}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got {self.batch_size}")


class DeterministicActor(nn.Module):
    """pi(s) = tanh(MLP(s)), one action in [-1, 1]^act_dim per row."""

    hidden_dims: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        h = MLP(self.hidden_dims, activate_final=True)(observations)
        return jnp.tanh(nn.Dense(self.act_dim, kernel_init=default_init())(h))


def _actor_def(config: TD3BCConfig, act_dim: int) -> DeterministicActor:
    return DeterministicActor(config.hidden_dims, act_dim)


def _critic_def(config: TD3BCConfig) -> CriticEnsemble:
    return CriticEnsemble(config.hidden_dims)


class TD3BC(struct.PyTreeNode):
    """One TD3+BC learner (or, with a leading axis on every leaf, a population of them)."""

    actor_params: Any
    target_actor_params: Any
    critic_params: Any  # every leaf [2, ...]: the twin critics
    target_critic_params: Any
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    obs_stats: ObservationStats
    step: jax.Array  # [] int32, updates done
    config: TD3BCConfig = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        key: jax.Array,
        obs_dim: int,
        act_dim: int,
        config: TD3BCConfig,
        obs_stats: ObservationStats | None = None,
    ) -> TD3BC:
        """Fresh learner (`model_free.LearnerFunctions.create`); the targets start equal to the
        networks."""
        return FUNCTIONS.create(key, obs_dim, act_dim, config, obs_stats)


def _init(
    key: jax.Array, config: TD3BCConfig, observations: jax.Array, actions: jax.Array
) -> dict[str, Any]:
    """A fresh learner's networks, targets and optimiser states, from example inputs."""
    actor_key, critic_key = jax.random.split(key)
    actor_params = _actor_def(config, actions.shape[-1]).init(actor_key, observations)
    critic_params = _critic_def(config).init(critic_key, observations, actions)
    return {
        "actor_params": actor_params,
        # Copies, not aliases: donating a state whose two fields share a buffer fails.
        "target_actor_params": jax.tree.map(jnp.copy, actor_params),
        "critic_params": critic_params,
        "target_critic_params": jax.tree.map(jnp.copy, critic_params),
        "actor_opt_state": optax.adam(config.actor_lr).init(actor_params),
        "critic_opt_state": optax.adam(config.critic_lr).init(critic_params),
    }


def update(state: TD3BC, batch: Batch, key: jax.Array) -> tuple[TD3BC, Metrics]:
    """One TD3+BC iteration on a batch ``{observations [B,o], actions [B,a], rewards [B],
    next_observations [B,o], terminations [B]}`` of raw observations. ``key`` draws the target
    smoothing noise, ``jax.random.normal(key, [B, a])``. Metrics: critic_loss, q, target_q,
    actor_updated (1 on delay steps) and the `ACTOR_METRICS` (0 when the actor was skipped)."""
    config = state.config
    actor_def, critic_def = _actor_def(config, state.act_dim), _critic_def(config)
    observations = state.obs_stats.normalize(batch["observations"])  # [B, o]
    next_observations = state.obs_stats.normalize(batch["next_observations"])  # [B, o]

    noise = config.policy_noise * jax.random.normal(key, batch["actions"].shape)  # [B, a]
    noise = jnp.clip(noise, -config.noise_clip, config.noise_clip)
    next_actions = actor_def.apply(state.target_actor_params, next_observations)
    next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)  # [B, a]
    next_qs = critic_def.apply(state.target_critic_params, next_observations, next_actions)
    target_q = batch["rewards"] + config.gamma * (1.0 - batch["terminations"]) * jnp.min(
        next_qs, axis=0
    )  # [B]

    def critic_loss_fn(critic_params: Any) -> tuple[jax.Array, jax.Array]:
        qs = critic_def.apply(critic_params, observations, batch["actions"])  # [2, B]
        return model_free.twin_critic_loss(qs, target_q), qs

    critic_params, critic_opt_state, critic_loss, qs = model_free.gradient_step(
        critic_loss_fn, state.critic_params, state.critic_opt_state, optax.adam(config.critic_lr)
    )
    step = state.step + 1

    def actor_loss_fn(actor_params: Any) -> tuple[jax.Array, Metrics]:
        actions = actor_def.apply(actor_params, observations)  # [B, a]
        q = critic_def.apply(critic_params, observations, actions)[0]  # [B], Q_1 only
        lmbda = jax.lax.stop_gradient(config.alpha / jnp.mean(jnp.abs(q)))
        bc_loss = jnp.mean(jnp.square(actions - batch["actions"]))
        loss = -lmbda * jnp.mean(q) + bc_loss
        return loss, {"actor_loss": loss, "bc_loss": bc_loss, "q_pi": jnp.mean(q), "lambda": lmbda}

    def actor_step(_: None) -> tuple[tuple[Any, ...], Metrics]:
        actor_params, actor_opt_state, _, metrics = model_free.gradient_step(
            actor_loss_fn, state.actor_params, state.actor_opt_state, optax.adam(config.actor_lr)
        )
        targets = (
            optax.incremental_update(actor_params, state.target_actor_params, config.tau),
            optax.incremental_update(critic_params, state.target_critic_params, config.tau),
        )
        return (actor_params, actor_opt_state, *targets), metrics

    def skip_actor(_: None) -> tuple[tuple[Any, ...], Metrics]:
        kept = (
            state.actor_params,
            state.actor_opt_state,
            state.target_actor_params,
            state.target_critic_params,
        )
        # zeros_like of a per-member value: under shard_map both branches must vary alike.
        return kept, {name: jnp.zeros_like(critic_loss) for name in ACTOR_METRICS}

    actor_updated = step % config.policy_delay == 0
    (actor_params, actor_opt_state, target_actor_params, target_critic_params), actor_metrics = (
        jax.lax.cond(actor_updated, actor_step, skip_actor, None)
    )
    new_state = state.replace(
        actor_params=actor_params,
        target_actor_params=target_actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        step=step,
    )
    metrics = {
        "critic_loss": critic_loss,
        "q": jnp.mean(qs),
        "target_q": jnp.mean(target_q),
        "actor_updated": actor_updated.astype(jnp.float32),
        **actor_metrics,
    }
    return new_state, metrics


def mean_metrics(metrics: Metrics) -> Metrics:
    """Means over the leading step axis of `update`'s metrics (``[N]`` each): the
    `ACTOR_METRICS` over the steps that updated the actor (0 if none did), ``actor_updated``
    their share, the others over every step."""
    updated = metrics["actor_updated"]
    count = jnp.maximum(jnp.sum(updated), 1.0)
    out = {k: jnp.mean(v) for k, v in metrics.items() if k not in ACTOR_METRICS}
    return out | {k: jnp.sum(metrics[k] * updated) / count for k in ACTOR_METRICS}


def _policy(state: TD3BC, observations: jax.Array) -> jax.Array:
    """pi(s) ``[n, a]`` for normalised observations ``[n, o]``."""
    return _actor_def(state.config, state.act_dim).apply(state.actor_params, observations)


FUNCTIONS = model_free.LearnerFunctions(TD3BC, _init, update, _policy, mean_metrics)
"""TD3+BC's ``create``, ``create_members``, ``update_n``, ``update_members(_n)``,
``act(_members)`` and their jitted forms (``jit_update``, ...): `model_free.LearnerFunctions`."""

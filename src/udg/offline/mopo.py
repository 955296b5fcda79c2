"""MOPO's pure parts: the config, the scanned model rollout and the mixed-batch SAC epoch.

MOPO (Yu et al. 2020, "Model-based Offline Policy Optimization") trains SAC on a mixture of real
transitions and short rollouts of a learned dynamics ensemble whose reward is penalised by the
model's uncertainty, ``r~ = r - lambda * u(s, a)``. Here the rollout of ``h`` steps from a batch
of dataset states is one ``lax.scan`` (a random elite per sample and step, the environment's
termination rule applied to the predicted next state, transitions after a termination masked
out) and the policy epoch is ``sac.update_n`` over pre-sampled mixed batches. Follows
EmptyJackson/unifloral ``algorithms/mopo.py`` and OfflineRL-Kit's MOPO defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp

from udg.agents import sac
from udg.errors import ConfigError
from udg.offline import dynamics
from udg.offline.ensemble import DynamicsConfig

TerminationFn = Callable[..., jax.Array]


@dataclass(frozen=True)
class MOPOConfig:
    """MOPO with the paper's defaults (SPEC section 5).

    Every ``rollout_freq`` policy steps, ``rollout_batch_size`` model rollouts of length
    ``rollout_length`` start from dataset states; their transitions carry the penalised reward
    ``r - penalty_coef * u(s, a)`` with ``u`` the max over elites of the predicted std's norm
    (``max_sigma``) or the elites' disagreement. SAC then trains on batches drawn
    ``real_ratio`` from the data and the rest from the last ``model_retain_epochs`` rollout
    batches.
    """

    rollout_length: int = 5
    """h, the model rollout horizon (MOPO: 1 to 5 by environment)."""
    penalty_coef: float = 1.0
    """lambda, the weight of the uncertainty penalty (MOPO: 0.5 to 5 by environment)."""
    penalty: str = "max_sigma"
    """Uncertainty measure: max_sigma (MOPO's) or disagreement (ensemble means)."""
    rollout_batch_size: int = 50_000
    """Rollouts started at each refresh."""
    rollout_freq: int = 1000
    """Policy updates between rollout refreshes."""
    model_retain_epochs: int = 5
    """How many rollout batches the model buffer keeps."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch."""
    epochs: int = 3000
    """Policy epochs."""
    steps_per_epoch: int = 1000
    """SAC updates per epoch."""
    updates_per_call: int = 50
    """SAC updates scanned in one jitted call."""
    observation_dims: int | None = None
    """Leading observation entries the model and the policy see (None: the env's default, all
    but Ant's 78 contact forces; the data's full observations still give the task rewards)."""
    eval_every: int = 10
    """Epochs between evaluations in the real environment."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy)."""
    checkpoint_every: int = 10
    """Epochs between checkpoints."""
    sac: sac.SACConfig = field(default_factory=sac.SACConfig)
    """The policy's SAC (MOPO: 2x256, lr 3e-4, auto-tuned alpha, batch 256)."""
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    """The dynamics ensemble (7 members, 5 elites, 4x200, holdout 20% up to 1000)."""

    def __post_init__(self) -> None:
        if self.penalty not in dynamics.PENALTIES:
            raise ConfigError(
                f"unknown penalty {self.penalty!r}; known: {', '.join(dynamics.PENALTIES)}"
            )
        positive = (
            "rollout_length",
            "rollout_batch_size",
            "rollout_freq",
            "model_retain_epochs",
            "epochs",
            "steps_per_epoch",
            "updates_per_call",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.observation_dims is not None and self.observation_dims < 1:
            raise ConfigError(f"observation_dims must be >= 1, got {self.observation_dims}")
        if not 0.0 <= self.real_ratio <= 1.0:  # also refuses NaN
            raise ConfigError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0 <= self.penalty_coef < math.inf:
            raise ConfigError(f"penalty_coef must be a finite number >= 0, got {self.penalty_coef}")


def rollout(
    agent: sac.SAC,
    model: dynamics.DynamicsModel,
    key: jax.Array,
    start_observations: jax.Array,
    horizon: int,
    penalty: str,
    penalty_coef: float,
    terminated: TerminationFn,
) -> dict[str, jax.Array]:
    """``horizon`` model steps from ``start_observations [N, o]`` with the agent's policy.

    Returns ``[h, N, ...]`` arrays: observations, actions, rewards (penalised),
    raw_rewards, uncertainty, next_observations, terminations (float) and ``valid``, which is
    False for every step after a rollout terminated.
    """

    def one_step(carry, step_key):
        observations, alive = carry  # [N, o], [N] bool
        act_key, model_key = jax.random.split(step_key)
        actions = sac.sample_actions_single(agent, observations, act_key)  # [N, a]
        next_obs, raw, penalised, uncertainty = dynamics.step(
            model, model_key, observations, actions, penalty, penalty_coef
        )
        done = terminated(next_obs, xp=jnp)  # [N] bool
        out = {
            "observations": observations,
            "actions": actions,
            "rewards": penalised,
            "raw_rewards": raw,
            "uncertainty": uncertainty,
            "next_observations": next_obs,
            "terminations": done.astype(jnp.float32),
            "valid": alive,
        }
        return (next_obs, alive & ~done), out

    keys = jax.random.split(key, horizon)
    alive = jnp.ones(start_observations.shape[0], bool)
    _, transitions = jax.lax.scan(one_step, (start_observations, alive), keys)
    return transitions


jit_rollout = jax.jit(rollout, static_argnums=(4, 5, 7))


@partial(jax.jit, donate_argnums=0)
def policy_updates(agent: sac.SAC, batches: dict[str, jax.Array], key: jax.Array):
    """``sac.update_n`` over pre-mixed batches ``[N, B, ...]`` (real and model rows)."""
    return sac.update_n(agent, batches, key)

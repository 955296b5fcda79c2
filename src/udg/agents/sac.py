"""Soft Actor-Critic for a population of K independent agents, in pure JAX.

One agent is a `SAC` pytree (parameters, optimiser states, log-temperature, step count) whose
config is a static field, so the jitted functions retrace only when the config or shapes
change. `update(agent, batch, key) -> (agent, metrics)` performs one SAC step (critic, target
Polyak average, actor, temperature); `update_n` scans it over N batches per dispatch. The
population is the same pytree with every leaf stacked on a leading agent axis `[K, ...]`, made
by `jax.vmap(SAC.create)` and trained by `jax.vmap(update)` (or, faster on CPU, `lax.map` over
the agents, with identical results), the agents split over the local devices when several
divide K (`udg.devices`); a single agent is K = 1 of the same code. Nothing here knows about
environments, replay buffers or files; `to_bytes`/`from_bytes` only turn the pytree into bytes
and back. Follows ikostrikov/walk_in_the_park `rl/agents/sac/sac_learner.py` and QDax
`qdax/baselines/sac_pbt.py`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from udg.agents.networks import (
    CriticEnsemble,
    TanhGaussianActor,
    sample_squashed_gaussian,
    squash_gaussian_noise,
)
from udg.devices import MEMBER_AXIS, member_mesh
from udg.errors import ConfigError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class SACConfig:
    """Soft Actor-Critic with twin Q and optional automatic entropy tuning.

    Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv 1812.05905):
      critic:      L_Q = sum_j E[(Q_j(s, a) - y)^2],
                   y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),
                   a' ~ pi(.|s'), Q' the Polyak-averaged target critics;
      actor:       L_pi = E[alpha log pi(a|s) - min_j Q_j(s, a)], a ~ pi(.|s) reparameterised;
      temperature: L_alpha = alpha * (H - target_entropy), H = -E[log pi(a|s)];
      target:      theta' <- tau theta + (1 - tau) theta'.
    WURL's diversity agents use a fixed alpha 0.2 (autotune_temperature=False,
    init_temperature=0.2); MOPO's policy uses autotuning (the defaults).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the actor and of each critic."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    temperature_lr: float = 3e-4
    """Adam learning rate of the log-temperature (used only when autotuning)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics per update."""
    batch_size: int = 256
    """Transitions per update batch (read by the training loop that samples the replay)."""
    init_temperature: float = 1.0
    """Initial entropy temperature alpha (the fixed value when not autotuning)."""
    autotune_temperature: bool = True
    """Learn alpha to hold the policy entropy at target_entropy; False keeps it fixed."""
    target_entropy: float | None = None
    """Entropy target of the autotuned alpha; None means -act_dim (the SAC paper's heuristic)."""

    def __post_init__(self) -> None:
        # A list would make the config unhashable, and the config is a jit cache key.
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in self.hidden_dims))
        if not self.hidden_dims or min(self.hidden_dims) <= 0:
            raise ConfigError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        for name in ("actor_lr", "critic_lr", "temperature_lr", "init_temperature"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got {self.batch_size}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ConfigError(f"target_entropy must be finite or None, got {self.target_entropy}")


def _actor_def(config: SACConfig, act_dim: int) -> TanhGaussianActor:
    return TanhGaussianActor(config.hidden_dims, act_dim)


def _critic_def(config: SACConfig) -> CriticEnsemble:
    return CriticEnsemble(config.hidden_dims)


class SAC(struct.PyTreeNode):
    """One SAC agent (or, with a leading axis on every leaf, a population of them)."""

    actor_params: Any
    critic_params: Any  # every leaf [2, ...]: the twin critics
    target_critic_params: Any
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    temperature_opt_state: optax.OptState
    log_temperature: jax.Array  # []
    step: jax.Array  # [] int32, updates done
    config: SACConfig = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, config: SACConfig, key: jax.Array, obs_dim: int, act_dim: int) -> "SAC":
        """Fresh agent; the target critics start equal to the critics."""
        if obs_dim <= 0 or act_dim <= 0:
            raise ValueError(f"obs_dim and act_dim must be > 0, got {obs_dim}, {act_dim}")
        actor_key, critic_key = jax.random.split(key)
        observations = jnp.zeros((1, obs_dim), jnp.float32)
        actions = jnp.zeros((1, act_dim), jnp.float32)
        actor_params = _actor_def(config, act_dim).init(actor_key, observations)
        critic_params = _critic_def(config).init(critic_key, observations, actions)
        log_temperature = jnp.log(jnp.asarray(config.init_temperature, jnp.float32))
        return cls(
            actor_params=actor_params,
            critic_params=critic_params,
            # A copy, not an alias: donating an agent whose two fields share a buffer fails.
            target_critic_params=jax.tree.map(jnp.copy, critic_params),
            actor_opt_state=optax.adam(config.actor_lr).init(actor_params),
            critic_opt_state=optax.adam(config.critic_lr).init(critic_params),
            temperature_opt_state=optax.adam(config.temperature_lr).init(log_temperature),
            log_temperature=log_temperature,
            step=jnp.zeros((), jnp.int32),
            config=config,
            act_dim=act_dim,
        )

    @property
    def target_entropy(self) -> float:
        """The entropy the autotuned temperature aims at."""
        if self.config.target_entropy is None:
            return -float(self.act_dim)
        return float(self.config.target_entropy)


def critic_target(
    rewards: jax.Array,
    terminations: jax.Array,
    next_q: jax.Array,
    next_log_prob: jax.Array,
    temperature: jax.Array,
    gamma: float,
) -> jax.Array:
    """Soft Bellman target y = r + gamma (1 - terminated) (Q'(s', a') - alpha log pi(a'|s')).

    All inputs `[B]` except the scalar temperature. Only termination stops bootstrapping; a
    time-limit truncation is not terminal and must keep terminations = 0.
    """
    next_value = next_q - temperature * next_log_prob  # [B]
    return rewards + gamma * (1.0 - terminations) * next_value


def update_noise(key: jax.Array, batch_size: int, act_dim: int) -> dict[str, jax.Array]:
    """The standard-normal draws of one update: for a' ~ pi(.|s') in the target and for
    a ~ pi(.|s) in the actor loss, each `[B, act_dim]`."""
    next_key, actor_key = jax.random.split(key)
    return {
        "next": jax.random.normal(next_key, (batch_size, act_dim), jnp.float32),
        "actor": jax.random.normal(actor_key, (batch_size, act_dim), jnp.float32),
    }


def update(agent: SAC, batch: Batch, key: jax.Array) -> tuple[SAC, Metrics]:
    """One SAC step on a batch `{observations [B,o], actions [B,a], rewards [B],
    next_observations [B,o], terminations [B]}`: critic, Polyak target, actor, temperature."""
    noise = update_noise(key, batch["rewards"].shape[0], agent.act_dim)
    return update_with_noise(agent, batch, noise)


def update_with_noise(agent: SAC, batch: Batch, noise: dict[str, jax.Array]) -> tuple[SAC, Metrics]:
    """`update` with its Gaussian draws given (`update_noise`), so that `update_n` can draw
    the noise of all N steps in one vectorised call instead of N small loops."""
    config = agent.config
    actor_def, critic_def = _actor_def(config, agent.act_dim), _critic_def(config)
    temperature = jnp.exp(agent.log_temperature)

    next_mean, next_log_std = actor_def.apply(agent.actor_params, batch["next_observations"])
    next_actions, next_log_prob = squash_gaussian_noise(next_mean, next_log_std, noise["next"])
    next_qs = critic_def.apply(
        agent.target_critic_params, batch["next_observations"], next_actions
    )  # [2, B]
    target_q = critic_target(
        batch["rewards"],
        batch["terminations"],
        jnp.min(next_qs, axis=0),
        next_log_prob,
        temperature,
        config.gamma,
    )  # [B]

    def critic_loss_fn(critic_params: Any) -> tuple[jax.Array, jax.Array]:
        qs = critic_def.apply(critic_params, batch["observations"], batch["actions"])  # [2, B]
        # Sum of the two critics' own mean squared errors: each critic has its own loss.
        loss = jnp.sum(jnp.mean(jnp.square(qs - target_q), axis=1))
        return loss, qs

    (critic_loss, qs), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        agent.critic_params
    )
    critic_updates, critic_opt_state = optax.adam(config.critic_lr).update(
        critic_grads, agent.critic_opt_state
    )
    critic_params = optax.apply_updates(agent.critic_params, critic_updates)
    target_critic_params = optax.incremental_update(
        critic_params, agent.target_critic_params, config.tau
    )

    def actor_loss_fn(actor_params: Any) -> tuple[jax.Array, jax.Array]:
        mean, log_std = actor_def.apply(actor_params, batch["observations"])
        actions, log_prob = squash_gaussian_noise(mean, log_std, noise["actor"])  # [B,a], [B]
        # The updated critics judge the actor (as in walk_in_the_park); min over the twins
        # as in the SAC paper, so the actor does not exploit one critic's overestimate.
        q = jnp.min(critic_def.apply(critic_params, batch["observations"], actions), axis=0)
        return jnp.mean(temperature * log_prob - q), log_prob

    (actor_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
        agent.actor_params
    )
    actor_updates, actor_opt_state = optax.adam(config.actor_lr).update(
        actor_grads, agent.actor_opt_state
    )
    actor_params = optax.apply_updates(agent.actor_params, actor_updates)

    entropy = -jnp.mean(log_prob)
    entropy_gap = jax.lax.stop_gradient(entropy - agent.target_entropy)
    temperature_loss = temperature * entropy_gap
    log_temperature = agent.log_temperature
    temperature_opt_state = agent.temperature_opt_state
    if config.autotune_temperature:
        # d/d(log alpha) of alpha * gap is alpha * gap: no autodiff needed.
        temperature_updates, temperature_opt_state = optax.adam(config.temperature_lr).update(
            temperature * entropy_gap, temperature_opt_state
        )
        log_temperature = optax.apply_updates(log_temperature, temperature_updates)

    new_agent = agent.replace(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        temperature_opt_state=temperature_opt_state,
        log_temperature=log_temperature,
        step=agent.step + 1,
    )
    metrics = {
        "critic_loss": critic_loss,
        "q": jnp.mean(qs),
        "target_q": jnp.mean(target_q),
        "actor_loss": actor_loss,
        "entropy": entropy,
        "temperature": temperature,
        "temperature_loss": temperature_loss,
    }
    return new_agent, metrics


def update_n(agent: SAC, batches: Batch, key: jax.Array) -> tuple[SAC, Metrics]:
    """`update` over N batches stacked on a leading axis (`[N, B, ...]`) in one `lax.scan`, so
    one dispatch runs N steps. Step i uses `jax.random.split(key, N)[i]`; the metrics are the
    means over the N steps."""
    num_steps, batch_size = batches["rewards"].shape
    keys = jax.random.split(key, num_steps)
    # The same draws as N calls of `update` with these keys, made in one vectorised call.
    noise = jax.vmap(lambda k: update_noise(k, batch_size, agent.act_dim))(keys)  # [N, B, a]

    def step(agent: SAC, inputs: tuple[Batch, dict[str, jax.Array]]) -> tuple[SAC, Metrics]:
        return update_with_noise(agent, *inputs)

    agent, metrics = jax.lax.scan(step, agent, (batches, noise))
    return agent, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def num_agents(agents: SAC) -> int:
    """K, the size of the leading agent axis of a population."""
    return agents.step.shape[0]


def create_population(
    config: SACConfig, key: jax.Array, num_agents: int, obs_dim: int, act_dim: int
) -> SAC:
    """K independent agents, every leaf `[K, ...]`; agent k is `SAC.create` with
    `jax.random.split(key, K)[k]`. The agent axis is split over the local devices as
    `population_update_n` leaves it (`udg.devices.member_mesh`), so that its first call
    compiles for the same placement as every later one."""
    if num_agents <= 0 or obs_dim <= 0 or act_dim <= 0:
        raise ValueError(
            f"num_agents, obs_dim, act_dim must be > 0, got {num_agents}, {obs_dim}, {act_dim}"
        )
    agents = create_members(config, jax.random.split(key, num_agents), obs_dim, act_dim)
    mesh = member_mesh(num_agents)
    if mesh is None:
        return agents
    return jax.device_put(agents, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def create_members(config: SACConfig, keys: jax.Array, obs_dim: int, act_dim: int) -> SAC:
    """One agent per key, stacked on a leading member axis: member k is the jitted
    ``SAC.create(config, keys[k], obs_dim, act_dim)``, each made by one compiled program, the
    same for every K: a vmapped init is compiled anew for each population size (seconds each on
    a CPU, for stage 1's K, the baselines' and stage 2's cells), while K calls of one compiled
    init cost milliseconds (stacking them compiles only tiny concatenations); the numbers are
    the same either way."""
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"obs_dim and act_dim must be > 0, got {obs_dim}, {act_dim}")
    members = [_create_one(config, key, obs_dim, act_dim) for key in keys]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)


@partial(jax.jit, static_argnums=(0, 2, 3))
def _create_one(config: SACConfig, key: jax.Array, obs_dim: int, act_dim: int) -> SAC:
    # Jitted because an eager flax init dispatches hundreds of tiny ops (about half a second).
    return SAC.create(config, key, obs_dim, act_dim)


def over_members(fn: Callable[..., Any], vectorize: bool | None, shard: bool, *args: Any) -> Any:
    """`fn` applied to member k of every argument (leading axis K), results stacked on K.

    vectorize=True: `jax.vmap`, one batched kernel for all agents (the right choice on an
    accelerator). vectorize=False: `jax.lax.map`, the agents one after another inside the same
    dispatch; on CPU this is faster, because K-batched matmuls of 256-wide layers run well below
    the throughput of single ones and K agents' parameters and Adam moments no longer fit in
    cache (see benchmarks/bench_sac.py). None picks False on CPU and True elsewhere.
    shard=True: when several local devices divide K (`udg.devices.member_mesh`; one CPU device
    per core after `udg.devices.use_cpu_cores`), each device runs this on its own K / D agents
    (`jax.shard_map`, no communication); the results stay sharded on the agent axis. All
    choices give the same numbers as K separate calls.
    """
    if vectorize is None:
        vectorize = jax.default_backend() != "cpu"

    def over(*member_args: Any) -> Any:
        if vectorize:
            return jax.vmap(fn)(*member_args)
        return jax.lax.map(lambda a: fn(*a), member_args)

    mesh = member_mesh(jax.tree.leaves(args)[0].shape[0]) if shard else None
    if mesh is None:
        return over(*args)
    spec = PartitionSpec(MEMBER_AXIS)
    return jax.shard_map(over, mesh=mesh, in_specs=spec, out_specs=spec)(*args)


def population_update(
    agents: SAC,
    batches: Batch,
    key: jax.Array,
    *,
    vectorize: bool | None = None,
    shard: bool = True,
) -> tuple[SAC, Metrics]:
    """`update` for every agent on its own batch (`[K, B, ...]`); agent k uses
    `jax.random.split(key, K)[k]`. Metrics are `[K]`. `vectorize`, `shard`: see
    `over_members`."""
    keys = jax.random.split(key, num_agents(agents))
    return over_members(update, vectorize, shard, agents, batches, keys)


def population_update_n(
    agents: SAC,
    batches: Batch,
    key: jax.Array,
    *,
    vectorize: bool | None = None,
    shard: bool = True,
) -> tuple[SAC, Metrics]:
    """`update_n` for every agent on its own N batches (`[K, N, B, ...]`); agent k uses
    `jax.random.split(key, K)[k]`. Metrics are `[K]` means over the N steps. `vectorize`,
    `shard`: see `over_members`."""
    keys = jax.random.split(key, num_agents(agents))
    return over_members(update_n, vectorize, shard, agents, batches, keys)


def sample_actions_single(agent: SAC, observations: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic actions `[n, a]` of one agent for observations `[n, o]`."""
    mean, log_std = _actor_def(agent.config, agent.act_dim).apply(agent.actor_params, observations)
    actions, _ = sample_squashed_gaussian(mean, log_std, key)
    return actions


def greedy_actions_single(agent: SAC, observations: jax.Array) -> jax.Array:
    """Deterministic actions tanh(mean) `[n, a]` of one agent for observations `[n, o]`."""
    mean, _ = _actor_def(agent.config, agent.act_dim).apply(agent.actor_params, observations)
    return jnp.tanh(mean)


def sample_actions(agents: SAC, observations: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic actions `[K, n, a]` of each agent for its own observations `[K, n, o]`."""
    keys = jax.random.split(key, num_agents(agents))
    return jax.vmap(sample_actions_single)(agents, observations, keys)


def greedy_actions(agents: SAC, observations: jax.Array) -> jax.Array:
    """Deterministic actions `[K, n, a]` of each agent for its own observations `[K, n, o]`."""
    return jax.vmap(greedy_actions_single)(agents, observations)


# Ready-jitted entry points. The config is static pytree metadata, so these trace once per
# (config, shapes). The update entry points donate the incoming agent: its buffers are reused
# for the result, and the caller must not touch the old agent afterwards.
jit_update = jax.jit(update, donate_argnums=0)
jit_update_n = jax.jit(update_n, donate_argnums=0)
jit_population_update = jax.jit(
    population_update, donate_argnums=0, static_argnames=("vectorize", "shard")
)
jit_population_update_n = jax.jit(
    population_update_n, donate_argnums=0, static_argnames=("vectorize", "shard")
)
jit_sample_actions = jax.jit(sample_actions)
jit_greedy_actions = jax.jit(greedy_actions)
jit_sample_actions_single = jax.jit(sample_actions_single)
jit_greedy_actions_single = jax.jit(greedy_actions_single)


def to_bytes(agent: SAC) -> bytes:
    """Serialise every array of an agent or population (msgpack); the config is not stored."""
    return flax.serialization.to_bytes(agent)


def from_bytes(template: SAC, data: bytes) -> SAC:
    """Restore arrays saved by `to_bytes` into a template with the same config and shapes
    (e.g. a freshly created agent or population), placed on the template's devices; a shape
    mismatch raises ValueError."""
    restored = flax.serialization.from_bytes(template, data)
    expected = jax.tree.map(jnp.shape, template)
    found = jax.tree.map(jnp.shape, restored)
    if found != expected:
        raise ValueError(
            "saved SAC arrays do not match the template's shapes (wrong K, dimensions or "
            "hidden sizes?)"
        )
    # On the template's devices (a NumPy template: the default device).
    placement = jax.tree.map(lambda leaf: getattr(leaf, "sharding", None), template)
    return jax.device_put(restored, placement)

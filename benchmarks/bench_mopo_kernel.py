"""MOPO's epoch kernel at MuJoCo size: a population of C cells against one cell, and the
dynamics fit, each against the machine's matmul peak, side by side in one run.

Issue 21's targets: the MuJoCo-sized update of a batch of cells costs at most 1.0x a single
cell's per cell; print the achieved GFLOP/s of the batched update and of the fit against the
peak. The cells are HalfCheetah-sized (obs 17, act 6) at the ``small`` preset (2x256 SAC,
7x4x200 ensemble, rollouts of h = 5 every ``rollout_freq`` updates); data and model are random
(a model fitted for one epoch): the kernel's work does not depend on what it learns.

    .venv/bin/python benchmarks/bench_mopo_kernel.py [--cells 6] [--updates 1000] [--rounds 2]

FLOPs are the matmuls' counted analytically (XLA's cost analysis counts a scanned loop's body
once, not once per trip): SAC's update as ``bench_sac.py`` counts it, the ensemble's training
step as 3x its forward less the first layer's input gradient, a rollout step as the forward of
every member and of the actor. The peak is the best of a jitted 2048 x 2048 float32 matmul,
timed in the same run. All timings keep their best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from udg.devices import use_cpu_cores

use_cpu_cores()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_sac import dense_flops, matmul_timer, sac_update_flops  # noqa: E402

from udg.agents import sac  # noqa: E402
from udg.envs.mujoco import never_terminated  # noqa: E402
from udg.experiments.offline_config import mopo_preset  # noqa: E402
from udg.experiments.runs import git_revision, machine_description  # noqa: E402
from udg.offline import dynamics, mopo  # noqa: E402

OBS, ACT, ROWS = 17, 6, 50_000


def best(fn, rounds: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ensemble_forward_flops(config, rows: int, in_dim: int, out_dim: int) -> int:
    dims = [in_dim, *config.hidden_dims, 2 * out_dim]  # mean and log-variance
    return config.ensemble_size * sum(dense_flops(rows, dims))


def fit_step_flops(config, in_dim: int, out_dim: int) -> int:
    forward = ensemble_forward_flops(config, config.batch_size, in_dim, out_dim)
    first = config.ensemble_size * 2 * config.batch_size * in_dim * config.hidden_dims[0]
    return 3 * forward - first


def epoch_flops(config, cells: int) -> int:
    """Matmul FLOPs of one MOPO epoch of ``cells`` cells: SAC updates and model rollouts."""
    hidden = config.sac.hidden_dims
    updates = config.steps_per_epoch * sac_update_flops(OBS, ACT, hidden, config.sac.batch_size)
    rollout_rows = config.rollout_batch_size * config.rollout_length
    step = ensemble_forward_flops(config.dynamics, rollout_rows, OBS + ACT, OBS + 1)
    step += sum(dense_flops(rollout_rows, [OBS, *hidden, 2 * ACT]))
    refreshes = config.steps_per_epoch // config.rollout_freq
    return cells * (updates + refreshes * step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--updates", type=int, default=1000, help="SAC updates per epoch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    preset = mopo_preset("halfcheetah", "small")
    config = dataclasses.replace(
        preset, steps_per_epoch=args.updates, rollout_freq=min(preset.rollout_freq, args.updates)
    )
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((ROWS, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, (ROWS, ACT)).astype(np.float32)
    next_obs = obs + 0.1 * rng.standard_normal((ROWS, OBS)).astype(np.float32)
    reward = rng.standard_normal(ROWS).astype(np.float32)
    fit_config = dataclasses.replace(config.dynamics, max_epochs=1)
    model, _ = dynamics.train_dynamics(fit_config, jax.random.key(0), obs, act, next_obs, reward)

    # The fit: one epoch of the ensemble's training steps, compiled as the runner compiles it.
    state = dynamics.EnsembleTrainState.create(
        config.dynamics, jax.random.key(1), OBS + ACT, OBS + 1
    )
    batch, members = config.dynamics.batch_size, config.dynamics.ensemble_size
    inputs = jnp.asarray(rng.standard_normal((20, members, batch, OBS + ACT)), jnp.float32)
    targets = jnp.asarray(rng.standard_normal((20, members, batch, OBS + 1)), jnp.float32)

    def twenty_steps(state):
        def body(s, xy):
            return dynamics.train_step(s, *xy)[0], None

        return jax.lax.scan(body, state, (inputs, targets))[0]

    fit = jax.jit(twenty_steps).lower(state).compile()
    fit_time = best(lambda: jax.block_until_ready(fit(state)), args.rounds)
    fit_flops = 20 * fit_step_flops(config.dynamics, OBS + ACT, OBS + 1)

    data = mopo.RealData(
        observations=jnp.asarray(obs),
        actions=jnp.asarray(act),
        next_observations=jnp.asarray(next_obs),
        terminations=jnp.zeros(ROWS, jnp.float32),
        rewards=jnp.asarray(reward),
    )
    spec = mopo.EpochSpec(config=config, terminated=never_terminated, reward=mopo.learned_reward)
    results = {}
    for count in (1, args.cells):
        keys = jax.random.split(jax.random.key(2), count)
        stack = lambda tree, n=count: jax.tree.map(lambda x: jnp.stack([x] * n), tree)  # noqa: E731
        cells = mopo.CellState(
            agent=sac.create_members(config.sac, keys, OBS, ACT),
            model=stack(model),
            buffer=stack(mopo.ModelBuffer.empty(config.buffer_capacity, OBS, ACT)),
            data_start=jnp.zeros(count, jnp.int32),
            data_size=jnp.full(count, ROWS, jnp.int32),
            reward_start=jnp.zeros(count, jnp.int32),
            task_index=jnp.zeros(count, jnp.int32),
        )
        epoch_keys = {
            "rollouts": jax.random.split(jax.random.key(3), count),
            "updates": jax.random.split(jax.random.key(4), count),
        }
        kernel = jax.jit(lambda c, d, k: mopo.population_epoch(spec, c, d, k))
        compiled = kernel.lower(cells, data, epoch_keys).compile()
        run = lambda f=compiled, c=cells, k=epoch_keys: jax.block_until_ready(f(c, data, k))  # noqa: E731
        seconds = best(run, args.rounds)
        results[count] = (seconds, epoch_flops(config, count))

    peak_timer = matmul_timer(2048)
    peak = 2 * 2048**3 / best(peak_timer, max(args.rounds, 5))
    one, many = results[1], results[args.cells]
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (2048^2 float32)")
    print(
        f"dynamics fit, 20 steps of {members} members x batch {batch}: {fit_time * 1e3 / 20:.2f} ms per "
        f"step, {fit_flops / fit_time / 1e9:.1f} GFLOP/s = {fit_flops / fit_time / peak:.2f} of peak"
    )
    for count, (seconds, work) in results.items():
        print(
            f"MOPO epoch, {count} cell(s) ({args.updates} SAC updates, batch "
            f"{config.sac.batch_size}, {config.rollout_batch_size} rollouts of h = "
            f"{config.rollout_length} per {config.rollout_freq} updates): {seconds:.2f} s, "
            f"{work / seconds / 1e9:.1f} GFLOP/s = {work / seconds / peak:.2f} of peak"
        )
    print(
        f"per-cell cost of {args.cells} cells in one population: "
        f"{many[0] / (args.cells * one[0]):.2f}x one cell alone (target <= 1.0)"
    )
    print(f"revision {git_revision()}, machine {machine_description()}")


if __name__ == "__main__":
    main()

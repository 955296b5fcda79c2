"""The demo's compute budget in FLOPs over the machine's measured matmul peak: is the time the
issue asks of `make demo` physically reachable?

Run: `.venv/bin/python benchmarks/demo_budget.py [--env rooms] [--seeds 3] [--fits N]`.

Counts the matmul FLOPs of every network update and forward pass the demo preset asks for,
per seed, from the preset's own numbers (`udg.experiments.presets`), with the analytic
per-update count of `bench_sac.sac_update_flops`:
  - stage 1: K agents x steps x updates_per_step SAC updates (stage 1's batch and widths);
  - baselines: one SAC agent per task (six angles; the supervised task is one of them);
  - stage 2: 5 columns x 6 tasks MOPO cells x epochs x steps_per_epoch SAC updates, plus each
    cell's rollouts (refreshes x rollout_batch_size x horizon forward passes of the ensemble
    and of the policy) and its evaluation (ignored: NumPy env steps, no matmul worth counting);
  - model fits: `--fits` per seed (the distinct datasets of a seed; a 3-seed demo run prints
    how many it made) x at most max_epochs x max_batches_per_epoch minibatches of every
    member, each ~3x a forward pass.
Then divides by the best of several large float32 `jnp.dot`s. The result is the time the demo
would take if every FLOP ran at the peak; its ratio to a measured time is the share of peak the
whole demo reaches (env stepping, Python, W1 solves and compiles make up the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from bench_sac import dense_flops, interleaved_best, matmul_timer, sac_update_flops  # noqa: E402

from udg.devices import use_cpu_cores  # noqa: E402
from udg.envs.tasks import PAPER_ANGLES  # noqa: E402
from udg.experiments.presets import preset  # noqa: E402

OBS, ACT = 4, 2  # point and rooms: (x, y, v_x, v_y), a 2-D force


def member_forward_flops(mopo, outputs: int) -> int:
    """One ensemble member's forward pass on one row, predicting ``outputs`` columns (mean and
    log-variance of each)."""
    return sum(dense_flops(1, [OBS + ACT, *mopo.dynamics.hidden_dims, 2 * outputs]))


def stage2_flops(mopo, cells: int, outputs: int) -> tuple[int, int]:
    """Matmul FLOPs of ``cells`` MOPO cells' policy training: their SAC updates, and their
    rollouts (refreshes x rollout_batch_size x horizon forward passes of every ensemble member
    and of the policy)."""
    updates = cells * mopo.epochs * mopo.steps_per_epoch
    sac = updates * sac_update_flops(OBS, ACT, mopo.sac.hidden_dims, mopo.sac.batch_size)
    refreshes = mopo.epochs * mopo.steps_per_epoch // mopo.rollout_freq
    steps = cells * refreshes * mopo.rollout_batch_size * mopo.rollout_length
    policy = sum(dense_flops(1, [OBS, *mopo.sac.hidden_dims, 2 * ACT]))
    member = member_forward_flops(mopo, outputs)
    return sac, steps * (mopo.dynamics.ensemble_size * member + policy)


def fit_flops(mopo, steps: int, outputs: int) -> int:
    """Matmul FLOPs of ``steps`` minibatches of a model fit, every member ~3x a forward pass."""
    d = mopo.dynamics
    return steps * d.batch_size * d.ensemble_size * 3 * member_forward_flops(mopo, outputs)


def budget(env: str, fits: int) -> dict[str, float]:
    """FLOPs per seed of each part of the demo on ``env``."""
    p = preset(env, "demo")
    gen, mopo = p.generate, p.mopo
    per_update_1 = sac_update_flops(OBS, ACT, gen.sac.hidden_dims, gen.sac.batch_size)
    updates_1 = gen.num_agents * gen.steps * gen.updates_per_step
    experts = len(PAPER_ANGLES) * gen.steps * gen.updates_per_step
    outputs = OBS + 1  # the next observation (and a reward: an upper bound for rooms)
    sac, rollouts = stage2_flops(mopo, 5 * len(PAPER_ANGLES), outputs)
    d = mopo.dynamics
    return {
        "stage 1 SAC": updates_1 * per_update_1,
        "baseline SAC": experts * per_update_1,
        "stage 2 SAC": sac,
        "stage 2 rollouts": rollouts,
        "model fits": fits * fit_flops(mopo, d.max_epochs * d.max_batches_per_epoch, outputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rooms")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fits", type=int, default=16, help="model fits per seed")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    use_cpu_cores()
    best = interleaved_best({n: matmul_timer(n) for n in (1024, 2048)}, args.rounds)
    peak = max(2 * n**3 / best[n] for n in (1024, 2048))
    parts = budget(args.env, args.fits)
    print(f"{args.env} demo, {args.seeds} seeds; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'part':<18} {'GFLOP/seed':>11} {'s at peak':>10}")
    for name, flops in parts.items():
        print(f"{name:<18} {flops / 1e9:>11.1f} {args.seeds * flops / peak:>10.1f}")
    total = args.seeds * sum(parts.values())
    print(f"{'total':<18} {total / args.seeds / 1e9:>11.1f} {total / peak:>10.1f}")
    print(f"measured at {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()

"""Fit the dynamics ensemble at several log-variance bound penalties on the same data and split.

For each penalty, fits the ``--scale`` preset's ensemble (seed 0) on the data relabelled for
``--task`` and prints its epochs, the elites' holdout MSE, the share of their output dims whose
bounds crossed, and MOPO's penalty u (max_sigma) on the data's own transitions beside the task
reward per step. The loss before git ``762fc9a`` summed the bound penalty over the E members; it
equals the current loss (members' mean) at E times the coefficient, so the defaults, 0.01 and
0.07 (E = 7), compare the current fit with the former one (``results/offline``).

    python scripts/bound_penalty_check.py --data DATASET... --task T [--penalties 0.01 0.07]
        [--scale small] [--model-epochs N] [--model-batches N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.data.minari_io import load_datasets
from udg.data.relabel import select
from udg.envs.registry import get_env_spec
from udg.envs.tasks import get_task
from udg.experiments.offline_config import mopo_preset
from udg.offline import dynamics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--select", default="all")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--penalties", nargs="+", type=float, default=[0.01, 0.07])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--model-epochs", type=int, help="epoch cap (default: the preset's)")
    parser.add_argument("--model-batches", type=int, help="minibatches per epoch (0: full passes)")
    args = parser.parse_args()
    task = get_task(args.task)
    data, _ = select(load_datasets(args.data), task, args.select)
    dims = get_env_spec(task.env).offline_observation_dims or data.obs_dim
    obs, next_obs = data.observations[:, :dims], data.next_observations[:, :dims]
    rewards = data.task_rewards[task.name].astype(np.float32)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(rewards), min(args.samples, len(rewards)), replace=False)
    base = mopo_preset(task.env, args.scale).dynamics
    if args.model_epochs is not None:
        base = dataclasses.replace(base, max_epochs=args.model_epochs)
    if args.model_batches is not None:
        base = dataclasses.replace(base, max_batches_per_epoch=args.model_batches or None)
    print(f"{data.name}: {len(rewards)} transitions, task reward per step {rewards.mean():.3f}")
    for penalty in args.penalties:
        config = dataclasses.replace(base, logvar_bound_penalty=penalty)
        start = time.perf_counter()
        model, metrics = dynamics.train_dynamics(
            config, jax.random.key(0), obs, data.actions, next_obs, rewards
        )
        mean, logvar = dynamics.predict(
            model, jnp.asarray(obs[idx]), jnp.asarray(data.actions[idx])
        )
        elites = np.asarray(model.elite_indices)
        std = jnp.exp(0.5 * logvar)[elites]  # [M, B, o + 1]
        u = np.asarray(dynamics.PENALTIES["max_sigma"](mean[elites], std))  # [B]
        print(
            f"penalty {penalty}: {metrics['epochs']} epochs, elites' holdout MSE "
            f"{metrics['elite_holdout_mse']:.4f}, bounds crossed {metrics['logvar_bounds_crossed']:.0%}"
            f", u mean {u.mean():.2f}, quantiles 10/50/90 %: "
            f"{', '.join(f'{q:.2f}' for q in np.quantile(u, [0.1, 0.5, 0.9]))} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()

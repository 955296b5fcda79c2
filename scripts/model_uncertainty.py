"""How uncertain a saved dynamics model is on a dataset's own transitions, and where.

Prints, for each model, MOPO's penalty u (max over elites of the norm of the predicted standard
deviation, raw units) on transitions drawn from the data with the data's actions, its mean and
quantiles, the task reward per step it is subtracted from, and the observation entries whose
predicted standard deviation contributes most to u. Used to compare a model's u with the reward
scale (``results/ant-angle/full-model``).

    python scripts/model_uncertainty.py --data DATASET... --task T --model A/model.msgpack ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from udg.data.minari_io import load_datasets
from udg.data.relabel import select
from udg.envs.registry import get_env_spec
from udg.envs.tasks import get_task
from udg.offline import dynamics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--select", default="all")
    parser.add_argument("--model", nargs="+", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    task = get_task(args.task)
    data, _ = select(load_datasets(args.data), task, args.select)
    dims = get_env_spec(task.env).offline_observation_dims or data.obs_dim
    rng = np.random.default_rng(0)
    idx = rng.choice(data.num_transitions, min(args.samples, data.num_transitions), replace=False)
    obs = jnp.asarray(data.observations[idx, :dims])
    act = jnp.asarray(data.actions[idx])
    rewards = data.task_rewards[task.name]
    print(
        f"{data.name}: {data.num_transitions} transitions, task reward per step "
        f"{rewards.mean():.3f} (quantiles 10/50/90 %: "
        f"{', '.join(f'{q:.2f}' for q in np.quantile(rewards, [0.1, 0.5, 0.9]))})"
    )
    for path in args.model:
        model = dynamics.load_model(path, expected_env_name=task.env)
        mean, logvar = dynamics.predict(model, obs, act)  # [E, B, o + 1]
        elites = np.asarray(model.elite_indices)
        std = np.exp(0.5 * np.asarray(logvar))[elites]  # [M, B, o + 1]
        u = np.asarray(dynamics.PENALTIES["max_sigma"](jnp.asarray(mean)[elites], std))  # [B]
        share = (std**2).mean(axis=(0, 1)) / (std**2).mean(axis=(0, 1)).sum()  # [o + 1]
        top = np.argsort(share)[::-1][:5]
        names = [f"obs[{i}]" if i < dims else "reward" for i in top]
        print(
            f"{path}: u mean {u.mean():.3f}, quantiles 10/50/90 %: "
            f"{', '.join(f'{q:.2f}' for q in np.quantile(u, [0.1, 0.5, 0.9]))}; "
            "largest shares of the variance: "
            + ", ".join(f"{n} {s:.0%}" for n, s in zip(names, share[top], strict=True))
        )


if __name__ == "__main__":
    main()

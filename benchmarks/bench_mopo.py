"""Wall time of one MOPO epoch (a rollout refresh plus 1000 SAC updates), paper vs small.

The data are synthetic Ant-v5-shaped transitions (obs 105, act 8); the dynamics ensemble is fit
for one epoch only, since its quality does not change the cost of an epoch. Each setting is
timed after a warm-up epoch (compilation excluded), best of ``--repeats``.

    .venv/bin/python benchmarks/bench_mopo.py [--transitions 100000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from udg.data.dataset import Episode, dataset_from_episodes
from udg.envs.mujoco import ANT_INFO_COLUMNS
from udg.envs.tasks import get_task
from udg.experiments import offline
from udg.experiments.offline_config import mopo_preset


def synthetic_ant(transitions: int, rng: np.random.Generator):
    episodes = []
    for _ in range(transitions // 1000):
        obs = rng.standard_normal((1001, 105))
        obs[:, 0] = 0.6  # a healthy torso height, so rollouts do not terminate at once
        episodes.append(
            Episode(
                obs,
                rng.uniform(-1, 1, (1000, 8)),
                rng.standard_normal(1000),
                np.zeros(1000, bool),
                np.arange(1000) == 999,
                {k: rng.standard_normal(1001) for k in ANT_INFO_COLUMNS},
            )
        )
    return dataset_from_episodes("synthetic-ant", "ant", episodes)


def time_epoch(scale: str, data, repeats: int) -> dict:
    task = get_task("ant-angle-0")
    mopo = mopo_preset("ant", scale)
    mopo = dataclasses.replace(
        mopo, eval_every=10**6, dynamics=dataclasses.replace(mopo.dynamics, max_epochs=1)
    )
    data = data.with_task_rewards(task.name, data.rewards)
    with tempfile.TemporaryDirectory() as out:
        config = offline.OfflineConfig(task=task.name, mopo=mopo)
        run = offline.start_run(config, data, task, Path(out))
        offline.fit_model(run)
        offline.run_epoch(run)  # compile
        best = {"epoch": float("inf")}
        for _ in range(repeats):
            run.timings = dict.fromkeys(run.timings, 0.0)
            start = time.perf_counter()
            offline.run_epoch(run)
            total = time.perf_counter() - start
            if total < best["epoch"]:
                best = {
                    "epoch": total,
                    "rollouts": run.timings["rollouts"],
                    "updates": run.timings["updates"],
                }
    best["rollout_batch"] = mopo.rollout_batch_size
    best["horizon"] = mopo.rollout_length
    best["updates_per_epoch"] = mopo.steps_per_epoch
    best["epochs"] = mopo.epochs
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = synthetic_ant(args.transitions, np.random.default_rng(0))
    print(f"MOPO epoch on {args.transitions:,} synthetic Ant-v5 transitions (obs 105, act 8)")
    print(
        f"{'scale':<8}{'rollouts':>10}{'h':>4}{'updates':>9}{'epoch s':>10}{'refresh s':>11}"
        f"{'updates s':>11}{'epochs':>8}{'all epochs h':>14}"
    )
    for scale in ("small", "paper"):
        r = time_epoch(scale, data, args.repeats)
        print(
            f"{scale:<8}{r['rollout_batch']:>10,}{r['horizon']:>4}{r['updates_per_epoch']:>9}"
            f"{r['epoch']:>10.2f}{r['rollouts']:>11.2f}{r['updates']:>11.2f}{r['epochs']:>8}"
            f"{r['epoch'] * r['epochs'] / 3600:>14.1f}"
        )


if __name__ == "__main__":
    main()

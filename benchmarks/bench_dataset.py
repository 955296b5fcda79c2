"""Dataset-layer throughput: write, load and relabel 1M Ant-v5-shaped transitions.

Episodes are synthetic (random values with Ant-v5's shapes, 1000-step episodes and UDG's Ant info
columns), because the dataset layer's cost does not depend on the values and simulating 1M Ant
steps would measure MuJoCo instead. Each step goes through the public API: ``write_dataset``
(Minari HDF5), ``load_dataset`` and ``relabel`` with ``ant-angle-60``. For reference the table
also reads the same file with Minari's own episode iterator. Target: load + relabel < 10 s.

    .venv/bin/python benchmarks/bench_dataset.py [--transitions 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

from udg.data.dataset import Episode
from udg.data.minari_io import dataset_id_for, load_dataset, write_dataset
from udg.data.relabel import relabel
from udg.envs.mujoco import ANT_INFO_COLUMNS
from udg.envs.tasks import get_task


def synthetic_ant_episodes(transitions: int, length: int, rng: np.random.Generator):
    episodes = []
    for start in range(0, transitions, length):
        t = min(length, transitions - start)
        episodes.append(
            Episode(
                observations=rng.standard_normal((t + 1, 105)),
                actions=rng.uniform(-1, 1, (t, 8)).astype(np.float32),
                rewards=rng.standard_normal(t),
                terminations=np.zeros(t, bool),
                truncations=np.arange(t) == t - 1,
                infos={k: rng.standard_normal(t + 1) for k in ANT_INFO_COLUMNS},
            )
        )
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--episode-length", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    episodes = synthetic_ant_episodes(args.transitions, args.episode_length, rng)
    root = tempfile.mkdtemp(prefix="udg-bench-")
    try:
        t0 = time.perf_counter()
        path = write_dataset(episodes, root, dataset_id_for("ant", "bench"), "ant")
        t_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        dataset = load_dataset(path)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        relabelled = relabel(dataset, get_task("ant-angle-60"))
        t_relabel = time.perf_counter() - t0
        assert relabelled.task_rewards["ant-angle-60"].shape == (args.transitions,)

        import minari

        t0 = time.perf_counter()
        steps = sum(len(ep) for ep in minari.MinariDataset(path / "data").iterate_episodes())
        t_minari = time.perf_counter() - t0
        assert steps == args.transitions
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n = args.transitions
    rows = [
        ("write (Minari HDF5)", t_write),
        ("load (udg.load_dataset)", t_load),
        ("relabel ant-angle-60", t_relabel),
        ("load + relabel", t_load + t_relabel),
        ("minari iterate_episodes (reference)", t_minari),
    ]
    print(f"{n:,} Ant-v5-shaped transitions, episodes of {args.episode_length}")
    print(f"{'stage':<38}{'seconds':>10}{'transitions/s':>16}")
    for name, seconds in rows:
        print(f"{name:<38}{seconds:>10.2f}{n / seconds:>16,.0f}")
    total = t_load + t_relabel
    verdict = "met" if total < 10 else "NOT met"
    print(f"target: load + relabel < 10 s -> {total:.2f} s, {verdict}")
    print(f"udg load vs minari iterate: {t_minari / t_load:.2f}x")


if __name__ == "__main__":
    main()

"""Stage 2 as one computation against cell by cell, side by side in one run.

A grid of MOPO cells at the demo preset on the rooms env (tasks x seeds, each selecting the
top-1 of two uniformly random datasets) is run three ways in fresh folders:

- ``per-cell``: each cell alone in its own folder, fitting its own model (stage 2 before the
  populations: one process-local cell at a time, one model fit per cell);
- ``shared models``: cell by cell, but one model per distinct (data, seed) in the grid;
- ``population``: every cell in one population (one jitted epoch for all cells).

It prints the wall time, the model fits and the ratios.

    .venv/bin/python benchmarks/bench_mopo.py [--seeds 2] [--steps 8000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from udg.devices import use_cpu_cores

use_cpu_cores()

from udg.data.collect import random_episodes  # noqa: E402
from udg.data.minari_io import dataset_id_for, write_dataset  # noqa: E402
from udg.experiments.grid import Cell, run_cells  # noqa: E402
from udg.experiments.offline import OfflineConfig, model_fits  # noqa: E402
from udg.experiments.offline_config import mopo_preset  # noqa: E402
from udg.experiments.runs import git_revision, machine_description  # noqa: E402

TASKS = ("rooms-angle-0", "rooms-angle-120", "rooms-goal-4,4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8000, help="transitions per dataset")
    args = parser.parse_args()
    mopo = mopo_preset("rooms", "demo")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            episodes = random_episodes("rooms", args.steps, seed=100 + i)
            write_dataset(episodes, root / "data", dataset_id_for("rooms", f"r{i}"), "rooms")
        data = (str(root / "data"),)

        def grid(name: str) -> list[Cell]:
            return [
                Cell(
                    data="udg",
                    config=OfflineConfig(task=task, select="top1", seed=seed, mopo=mopo),
                    datasets=data,
                    out=str(root / name / f"{task}-{seed}"),
                )
                for task in TASKS
                for seed in range(args.seeds)
            ]

        timings, fits = {}, {}
        for name in ("per-cell", "shared models", "population"):
            cells = grid(name)
            start = time.perf_counter()
            if name == "per-cell":
                results = {}
                for i, cell in enumerate(cells):  # each in its own work folder: its own model
                    results |= run_cells([cell], work=root / name / f"work-{i}")
            else:
                results = run_cells(
                    cells, work=root / name / "work", max_cells=1 if name != "population" else None
                )
            timings[name] = time.perf_counter() - start
            fits[name] = model_fits(list(results.values()))
            returns = [round(r["last_return"], 2) for r in results.values()]
            print(f"{name:>14}: {timings[name]:6.1f} s, {fits[name]} model fits, returns {returns}")
        cells = len(TASKS) * args.seeds
        print(
            f"{cells} cells at rooms/demo ({mopo.epochs} epochs x {mopo.steps_per_epoch} updates, "
            f"batch {mopo.sac.batch_size}); population vs per-cell: "
            f"{timings['per-cell'] / timings['population']:.2f}x faster, vs shared models "
            f"one by one: {timings['shared models'] / timings['population']:.2f}x; per-cell "
            f"cost in the population {timings['population'] / timings['per-cell']:.2f} of alone"
        )
        print(f"revision {git_revision()}, machine {machine_description()}")


if __name__ == "__main__":
    main()

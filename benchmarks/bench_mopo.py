"""Stage 2 as one computation against cell by cell, side by side in one run.

Two grids:

- the default, a small synthetic grid: MOPO cells at the demo preset on the rooms env (3 tasks
  x ``--seeds`` seeds, each selecting the top-1 of two uniformly random datasets);
- ``--demo-run DIR``: one seed's grid of ``udg demo`` (6 angles x 5 columns = 30 cells: UDG
  top-1, top-2 and all, random and supervised data) on the datasets of the finished demo run
  ``DIR``, at the demo's MOPO preset. This is the grid issue 21's target is stated for.

Each is run, in fresh folders, the ways asked for (``--ways``):

- ``per-cell``: each cell alone in its own folder, fitting its own model, in this process (how
  stage 2 ran before the populations, one cell at a time, one model fit per cell);
- ``per-cell-ray``: the same, each cell a Ray task with its own folder and model, as many at
  once as the machine has cores (the Ray executor before the populations);
- ``shared``: cell by cell in this process, one model per distinct (data, seed) in the grid;
- ``population``: every cell in one population (one jitted epoch for all cells).

It prints the wall time, the model fits and the ratios, and for the population the achieved
GFLOP/s of its policy epochs and of its model fits against the machine's matmul peak (matmul
FLOPs counted analytically, as ``demo_budget.py`` does; the fits' from the epochs they ran).

    .venv/bin/python benchmarks/bench_mopo.py [--seeds 2] [--steps 8000]
    .venv/bin/python benchmarks/bench_mopo.py --demo-run runs/demo [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from udg.devices import use_cpu_cores  # noqa: E402

use_cpu_cores()

from bench_sac import interleaved_best, matmul_timer  # noqa: E402
from demo_budget import OBS, fit_flops, stage2_flops  # noqa: E402

from udg.data.collect import random_episodes  # noqa: E402
from udg.data.minari_io import dataset_id_for, write_dataset  # noqa: E402
from udg.envs.tasks import PAPER_ANGLES  # noqa: E402
from udg.experiments.grid import Cell, run_cells  # noqa: E402
from udg.experiments.offline import OfflineConfig, model_fits  # noqa: E402
from udg.experiments.presets import mopo_preset  # noqa: E402
from udg.experiments.runs import git_revision, machine_description  # noqa: E402

SMALL_TASKS = ("rooms-angle-0", "rooms-angle-120", "rooms-goal-4,4")
DEMO_COLUMNS = (("udg", "top1"), ("udg", "top2"), ("udg", "all"), ("random", "all"))
WAYS = ("per-cell", "per-cell-ray", "shared", "population")
# OBS: rooms' (x, y, v_x, v_y); its model predicts the change of the observation only (every
# task's reward is computed from it).


def small_grid(root: Path, seeds: int, steps: int, mopo) -> list[Cell]:
    for i in range(2):
        episodes = random_episodes("rooms", steps, seed=100 + i)
        write_dataset(episodes, root / "data", dataset_id_for("rooms", f"r{i}"), "rooms")
    data = (str(root / "data"),)
    return [
        Cell(
            data="udg",
            config=OfflineConfig(task=task, select="top1", seed=seed, mopo=mopo),
            datasets=data,
            out=f"{task}-{seed}",
        )
        for task in SMALL_TASKS
        for seed in range(seeds)
    ]


def demo_grid(run: Path, seed: int, mopo) -> list[Cell]:
    """One seed's stage-2 grid of a finished ``udg demo`` run, as the pipeline builds it."""
    results = run / "results.json"
    if not results.is_file():
        sys.exit(f"error: {results} is missing: --demo-run needs a finished udg demo run")
    summary = json.loads(results.read_text())
    if summary["env"] != "rooms" or str(seed) not in summary["sources"]:
        sys.exit(f"error: {run} is not a rooms demo with seed {seed}")
    sources = summary["sources"][str(seed)]
    columns = [*DEMO_COLUMNS, ("supervised", "all")]
    return [
        Cell(
            data=kind,
            config=OfflineConfig(task=task, select=rule, seed=seed, mopo=mopo),
            datasets=tuple(sources[kind]),
            out=f"{task}-{kind}-{rule}",
        )
        for task in (f"rooms-angle-{a}" for a in PAPER_ANGLES)
        for kind, rule in columns
    ]


def in_folder(cells: list[Cell], folder: Path) -> list[Cell]:
    return [Cell(c.data, c.config, c.datasets, str(folder / c.out)) for c in cells]


def per_cell_ray(cells: list[Cell], root: Path) -> dict[str, dict]:
    """Every cell a Ray task with its own work folder (its own model), one per core."""
    import ray

    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}},
    )
    try:
        remote = ray.remote(num_cpus=1)(run_cells)
        refs = [remote.remote([c], root / f"work-{i}") for i, c in enumerate(cells)]
        results = {}
        for part in ray.get(refs):
            results |= part
        return results
    finally:
        ray.shutdown()


def run_way(way: str, cells: list[Cell], root: Path) -> dict[str, dict]:
    cells = in_folder(cells, root / way)
    if way == "per-cell":  # each in its own work folder: its own model
        results = {}
        for i, cell in enumerate(cells):
            results |= run_cells([cell], work=root / way / f"work-{i}")
        return results
    if way == "per-cell-ray":
        return per_cell_ray(cells, root / way)
    return run_cells(cells, work=root / way / "work", max_cells=1 if way == "shared" else None)


def population_gflops(results: dict[str, dict], mopo, peak: float) -> None:
    """Achieved GFLOP/s of the population's policy epochs and of its model fits."""
    first = next(iter(results.values()))
    timings, cells = first["population"]["timings"], len(results)
    sac, rollouts = stage2_flops(mopo, cells, OBS)
    epochs = sac + rollouts
    d = mopo.dynamics
    fits = {}
    for r in results.values():  # each distinct model once, with the epochs it ran
        m = r["dynamics"]
        steps = math.ceil(m["train_size"] / min(d.batch_size, m["train_size"]))
        steps = min(steps, d.max_batches_per_epoch or steps)
        fits[r["model"]] = fit_flops(mopo, m["epochs"] * steps, OBS)
    fit_flops_total = sum(fits.values())
    for what, flops, seconds in (
        ("policy epochs (SAC updates + rollouts)", epochs, timings["epochs"]),
        (f"model fits ({len(fits)})", fit_flops_total, timings["dynamics"]),
    ):
        rate = flops / seconds
        print(
            f"population {what}: {flops / 1e9:.0f} GFLOP in {seconds:.1f} s = "
            f"{rate / 1e9:.1f} GFLOP/s, {rate / peak:.2f} of the matmul peak"
        )
    print(f"population timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the small grid")
    parser.add_argument("--steps", type=int, default=8000, help="transitions per dataset")
    parser.add_argument("--demo-run", type=Path, help="a finished udg demo run (rooms)")
    parser.add_argument("--seed", type=int, default=0, help="the demo run's seed to take")
    parser.add_argument("--ways", default="per-cell,shared,population", help=", ".join(WAYS))
    args = parser.parse_args()
    ways = args.ways.split(",")
    if not ways or any(w not in WAYS for w in ways):
        sys.exit(f"error: --ways takes a comma-separated subset of {', '.join(WAYS)}")
    mopo = mopo_preset("rooms", "demo")
    best = interleaved_best({n: matmul_timer(n) for n in (1024, 2048)}, 5)
    peak = max(2 * n**3 / best[n] for n in (1024, 2048))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.demo_run is not None:
            cells, grid = (
                demo_grid(args.demo_run, args.seed, mopo),
                f"{args.demo_run} seed {args.seed}",
            )
        else:
            cells, grid = small_grid(root, args.seeds, args.steps, mopo), "synthetic"
        timings, fits = {}, {}
        for way in ways:
            start = time.perf_counter()
            results = run_way(way, cells, root)
            timings[way] = time.perf_counter() - start
            fits[way] = model_fits(list(results.values()))
            returns = [round(r["last_return"], 2) for r in results.values()]
            print(f"{way:>14}: {timings[way]:6.1f} s, {fits[way]} model fits, returns {returns}")
            if way == "population":
                population_gflops(results, mopo, peak)
        print(
            f"{len(cells)} cells ({grid}) at rooms/demo ({mopo.epochs} epochs x "
            f"{mopo.steps_per_epoch} updates, batch {mopo.sac.batch_size}); matmul peak "
            f"{peak / 1e9:.1f} GFLOP/s"
        )
        if "population" in timings:
            for way in (w for w in ways if w != "population"):
                print(
                    f"population vs {way}: {timings[way] / timings['population']:.2f}x faster"
                    f" (per-cell cost in the population {timings['population'] / timings[way]:.2f}"
                    " of this way's)"
                )
        print(f"revision {git_revision()}, machine {machine_description()}")


if __name__ == "__main__":
    main()

"""The whole UDG pipeline with its baselines and the theory check: ``udg demo`` and
``udg experiment``.

Stage 1 trains K diverse agents (the UDG data). Two baselines come beside it: uniformly random
actions with as many transitions as UDG's total, and supervised data, the replay history of one
SAC agent trained on a known task. The supervised agent is trained in one population with an
expert per downstream task (one task per agent); the experts' last episodes are the expert data
of the W1 theory check. For each downstream task, MOPO then trains on UDG's selections and on
the baselines, cell by cell (a finished cell is never recomputed), and the report compares them
in the paper's format beside the paper's numbers. Rerunning the command resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from udg.data.collect import random_episodes
from udg.data.minari_io import dataset_id_for, load_dataset, write_dataset
from udg.data.relabel import select
from udg.envs.tasks import PAPER_ANGLES, get_task
from udg.errors import UdgError, unknown_name
from udg.evaluation import theory
from udg.experiments.generate import plot_run_coverage, round_summary, run_generate
from udg.experiments.generate_config import GenerateConfig, generate_preset
from udg.experiments.grid import DATA_KINDS, EXECUTORS, Cell, populations, run_cells_with_bar
from udg.experiments.offline import OfflineConfig
from udg.experiments.offline_config import mopo_preset
from udg.experiments.runs import (
    MANIFEST,
    atomic_write_json,
    git_revision,
    machine_description,
    read_json,
)
from udg.offline.mopo import MOPOConfig

EXPERT_EPISODES = 10
"""Episodes at the end of an expert's replay taken as the task's expert data."""


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """One experiment of the paper (or the demo): env, downstream tasks, data compared."""

    name: str
    env: str
    tasks: tuple[str, ...]
    """Downstream tasks, each a row of the table."""
    selections: tuple[str, ...]
    """Selection rules applied to the UDG buffers (columns ``udg-<rule>``)."""
    supervised_task: str
    """Task of the supervised baseline's SAC agent."""
    paper: dict = dataclasses.field(default_factory=dict)
    """The paper's numbers: ``paper[task][column] = "mean ± std"``."""


EXPERIMENTS: dict[str, ExperimentSpec] = {
    "demo": ExperimentSpec(
        name="demo",
        env="point",
        tasks=tuple(f"point-angle-{a}" for a in PAPER_ANGLES),
        selections=("top1", "top2", "all"),
        supervised_task="point-angle-0",
    ),
    "ant-angle": ExperimentSpec(
        name="ant-angle",
        env="ant",
        tasks=tuple(f"ant-angle-{a}" for a in PAPER_ANGLES),
        selections=("top1", "top2", "all"),
        supervised_task="ant-angle-0",
        paper={
            "ant-angle-0": {
                "udg-top1": "1236.26 ± 247",
                "udg-top2": "1437.24 ± 31",
                "udg-all": "989.13 ± 65",
            },
            "ant-angle-60": {
                "udg-top1": "910.70 ± 121",
                "udg-top2": "1285.31 ± 66",
                "udg-all": "593.88 ± 434",
            },
        },
    ),
    "cheetah": ExperimentSpec(
        name="cheetah",
        env="halfcheetah",
        tasks=("cheetah-jump", "cheetah-crawl"),
        selections=("top1",),
        supervised_task="cheetah-run",
        paper={
            "cheetah-jump": {"random-all": "1152.98 ± 120", "udg-top1": "1721.25 ± 56"},
            "cheetah-crawl": {"random-all": "1239.00 ± 57", "udg-top1": "1348.19 ± 274"},
        },
    ),
}
"""The experiments ``udg experiment`` runs (``demo`` is ``udg demo``)."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How to run an experiment: scale, seeds, and optional stage-1 override."""

    experiment: str = "demo"
    """Name in :data:`EXPERIMENTS`."""
    scale: str = "demo"
    """Preset scale of every stage."""
    seed: int = 0
    """Seed of data generation; MOPO cells use seeds ``seed .. seed + seeds - 1``."""
    seeds: int = 1
    """MOPO seeds per cell."""
    generate: GenerateConfig | None = None
    """Stage-1 config (None: the scale's preset)."""
    mopo: MOPOConfig | None = None
    """MOPO config of every cell (None: the scale's preset)."""
    tasks: tuple[str, ...] | None = None
    """A subset of the experiment's tasks (None: all)."""
    expert_steps: int | None = None
    """Environment steps of each baseline SAC agent (the supervised agent and the theory
    check's experts; None: stage 1's steps per agent). The random data always matches UDG's
    total."""


def _random_dataset(env: str, steps: int, episode_length: int, seed: int, root: Path) -> Path:
    dataset_id = dataset_id_for(env, "random")
    path = root / dataset_id
    if path.exists():
        return path
    episodes = random_episodes(env, steps, seed, max_episode_steps=episode_length)
    return write_dataset(
        episodes,
        root,
        dataset_id,
        env,
        max_episode_steps=episode_length,
        algorithm="uniform-random",
        udg_metadata={"kind": "random"},
    )


Progress = Callable[[str, int, str], contextlib.AbstractContextManager[Any]]
"""``progress(description, total, unit)`` -> a context whose value has ``update(n, **metrics)``
(:func:`udg.cli.progress.progress_bar`)."""


def _no_progress(description: str, total: int, unit: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext(SimpleNamespace(update=lambda completed, **metrics: None))


def _generate_with_bar(
    config: GenerateConfig, out: Path, description: str, progress: Progress
) -> list[Path]:
    """:func:`run_generate` under a progress bar; returns the datasets it wrote, one per agent."""
    total = config.rounds * config.episode_length
    with progress(description, total, "steps") as bar:

        def on_round(round_done: int, row: dict) -> None:
            bar.update(min(round_done * config.episode_length, total), **round_summary(config, row))

        _, paths = run_generate(config, out, on_round)
    return paths


def get_experiment(name: str) -> ExperimentSpec:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise unknown_name("experiment", name, EXPERIMENTS) from None


def run_pipeline(
    config: PipelineConfig,
    out: Path,
    executor: str = "local",
    address: str | None = None,
    log: Callable[[str], None] = print,
    progress: Progress = _no_progress,
    max_cells: int | None = None,
) -> dict:
    """Run (or resume) the experiment in ``out``; returns what it wrote to results.json.

    ``log`` gets one line per stage and per finished cell; ``progress`` makes a bar per stage.
    ``max_cells`` caps how many MOPO cells train as one population (default: all that can).
    """
    spec = get_experiment(config.experiment)
    gen, tasks = _validated(config, spec)
    if executor not in EXECUTORS:  # before any work, not after stage 1
        raise unknown_name("executor", executor, EXECUTORS)
    if max_cells is not None and max_cells < 1:
        raise UdgError(f"--population-cells must be at least 1, got {max_cells}")
    mopo = config.mopo or mopo_preset(spec.env, config.scale)
    out = Path(out)
    start = time.perf_counter()
    sources, experts = _make_data(config, spec, gen, tasks, out, log, progress)
    cells = _cells(config, spec, tasks, sources, mopo, out)
    batches = populations(cells, max_cells)
    log(f"stage 2: {len(cells)} MOPO cells in {len(batches)} population(s) ({executor} executor)")
    with progress("stage 2 MOPO", len(cells) * mopo.epochs, "epochs") as bar:
        results = run_cells_with_bar(
            cells,
            bar,
            mopo.epochs,
            log=log,
            work=out / "offline",
            executor=executor,
            address=address,
            max_cells=max_cells,
        )

    log("theory check: exact W1 to expert data")
    summary = {
        "experiment": spec.name,
        "config": dataclasses.asdict(config) | {"generate": dataclasses.asdict(gen)},
        "tasks": tasks,
        "columns": [f"udg-{s}" for s in spec.selections] + ["random-all", "supervised-all"],
        "supervised_task": spec.supervised_task,
        "paper": spec.paper,
        "cells": {c.name: _cell_summary(results[c.name]) for c in cells},
        "table": _table(cells, results),
        "theory": _theory(config.seed, tasks, sources, experts, cells, results),
        "git_revision": git_revision(),
        "machine": machine_description(),
        "wall_seconds": time.perf_counter() - start,
        "stage_seconds": _stage_seconds(out, cells, results),
    }
    atomic_write_json(out / "results.json", summary)
    from udg.experiments.report import write_report

    write_report(out, summary)
    return summary


def _validated(config: PipelineConfig, spec: ExperimentSpec) -> tuple[GenerateConfig, list[str]]:
    """Stage 1's config and the tasks to run, or a clear error for a bad pipeline config."""
    if config.seeds < 1:
        raise UdgError(f"--seeds must be at least 1, got {config.seeds}")
    if config.seed < 0:
        raise UdgError(f"--seed must be >= 0, got {config.seed}")
    if config.expert_steps is not None and config.expert_steps <= 0:
        raise UdgError(f"--expert-steps must be positive, got {config.expert_steps}")
    tasks = list(config.tasks or spec.tasks)
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown:
        raise UdgError(f"task(s) {', '.join(unknown)} are not part of experiment {spec.name}")
    gen = config.generate or dataclasses.replace(
        generate_preset(spec.env, config.scale), seed=config.seed
    )
    return gen, tasks


def _make_data(
    config: PipelineConfig,
    spec: ExperimentSpec,
    gen: GenerateConfig,
    tasks: list[str],
    out: Path,
    log: Callable[[str], None],
    progress: Progress,
) -> tuple[dict[str, tuple[str, ...]], dict[str, Path]]:
    """Stage 1 and the baselines' data; returns the dataset folders of each data kind (UDG: one
    per agent) and each task's expert dataset, as the stages wrote them."""
    expert_tasks = tasks + ([spec.supervised_task] if spec.supervised_task not in tasks else [])
    expert_steps = config.expert_steps or gen.steps
    log(f"stage 1: {gen.num_agents} diverse agents, {gen.steps} steps each")
    udg_paths = _generate_with_bar(
        gen, out / "udg", f"stage 1 {spec.env} K={gen.num_agents}", progress
    )
    plot_run_coverage(out / "udg")
    log(
        f"baselines: {len(expert_tasks)} SAC agents, one per task, trained at once, "
        f"{expert_steps} steps each (supervised data: {spec.supervised_task}; "
        "the others are the theory check's experts)"
    )
    experts_config = dataclasses.replace(
        gen,
        num_agents=len(expert_tasks),
        agent_tasks=tuple(expert_tasks),
        task=None,
        w_task=1.0,
        w_div=0.0,
        steps=expert_steps,
    )
    expert_paths = _generate_with_bar(
        experts_config, out / "experts", f"baselines {spec.env} K={len(expert_tasks)}", progress
    )
    experts = dict(zip(expert_tasks, expert_paths, strict=True))  # agent i learnt task i
    total = gen.num_agents * gen.rounds * gen.episode_length
    log(f"baseline: {total} uniformly random transitions")
    random_path = _random_dataset(spec.env, total, gen.episode_length, config.seed, out / "random")
    sources = {
        "udg": tuple(str(p) for p in udg_paths),
        "random": (str(random_path),),
        "supervised": (str(experts[spec.supervised_task]),),
    }
    return sources, experts


def _cells(
    config: PipelineConfig,
    spec: ExperimentSpec,
    tasks: list[str],
    sources: dict[str, tuple[str, ...]],
    mopo: MOPOConfig,
    out: Path,
) -> list[Cell]:
    """Stage 2's grid: per task and seed, UDG's selections then the two baselines."""
    kinds = [("udg", s) for s in spec.selections] + [("random", "all"), ("supervised", "all")]
    cells = []
    for task in tasks:
        for seed in range(config.seed, config.seed + config.seeds):
            for kind, rule in kinds:
                offline = OfflineConfig(
                    task=task, select=rule, seed=seed, mopo=mopo, eval_episode_length=None
                )
                cell = Cell(data=kind, config=offline, datasets=sources[kind], out="")
                # The folder is named after the cell, whose name comes from its fields.
                cells.append(dataclasses.replace(cell, out=str(out / "offline" / cell.name)))
    return cells


def _stage_seconds(out: Path, cells, results) -> dict[str, float]:
    """Time of the main stages as each recorded it: stage 1 and the baselines summed over
    resumed runs (their manifests keep it); each MOPO cell as the invocation that finished it.
    The experiment's ``wall_seconds`` is only this invocation's when it was resumed."""
    return {
        "stage 1": read_json(out / "udg" / MANIFEST)["wall_seconds"],
        "baselines": read_json(out / "experts" / MANIFEST)["wall_seconds"],
        "MOPO cells": sum(results[c.name]["wall_seconds"] for c in cells),
    }


def _cell_summary(result: dict) -> dict:
    keys = (
        "task",
        "select",
        "seed",
        "selected",
        "selected_transitions",
        "data_mean_return",
        "last_return",
        "last_std",
        "best_return",
        "wall_seconds",
    )
    return {k: result[k] for k in keys}


def _table(cells: list[Cell], results: dict[str, dict]) -> dict:
    """``table[task][column] = {mean, std, n}`` of last returns over seeds."""
    table: dict = {}
    for cell in cells:
        returns = table.setdefault(cell.task, {}).setdefault(cell.column, [])
        returns.append(results[cell.name]["last_return"])
    return {
        task: {
            col: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for col, v in cols.items()
        }
        for task, cols in table.items()
    }


def _theory(
    seed: int,
    tasks: list[str],
    sources: dict[str, tuple[str, ...]],
    experts: dict[str, Path],
    cells: list[Cell],
    results: dict[str, dict],
) -> dict:
    """W1 of each buffer and of each cell's selected data (the cells of ``seed``) to the task's
    expert data, beside the cell's return averaged over seeds."""
    loaded = {p: load_dataset(p) for kind in DATA_KINDS for p in sources[kind]}
    udg = [loaded[p] for p in sources["udg"]]
    pairs = []
    per_buffer: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in DATA_KINDS}
    for task_name in tasks:
        task = get_task(task_name)
        expert = theory.last_episodes(load_dataset(experts[task_name]), EXPERT_EPISODES)
        per_buffer["udg"][task_name] = {
            d.name: theory.w1_to_expert(d, expert, seed=seed) for d in udg
        }
        for kind in ("random", "supervised"):  # one dataset each, named by its kind
            (data,) = [loaded[p] for p in sources[kind]]
            per_buffer[kind][task_name] = {kind: theory.w1_to_expert(data, expert, seed=seed)}
        for cell in cells:
            if cell.task != task_name or cell.seed != seed:
                continue
            selected, _ = select([loaded[p] for p in cell.datasets], task, cell.selection)
            returns = [
                results[c.name]["last_return"]
                for c in cells
                if (c.task, c.column) == (cell.task, cell.column)
            ]
            pairs.append(
                {
                    "task": task_name,
                    "data": cell.column,
                    "w1": theory.w1_to_expert(selected, expert, seed=seed),
                    "return": float(np.mean(returns)),
                }
            )
    return {
        "metric": "exact W1 (POT) on state-action vectors (observation ++ action, raw units), "
        f"subsampled to 1000 points; expert data = the last {EXPERT_EPISODES} "
        "episodes of a SAC agent trained on the task",
        "pairs": pairs,
        "spearman": theory.spearman([p["w1"] for p in pairs], [p["return"] for p in pairs]),
        "worst_case_proxy": {k: theory.worst_case_proxy(v) for k, v in per_buffer.items()},
        "per_buffer_w1": per_buffer,
    }

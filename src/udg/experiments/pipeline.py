"""The whole UDG pipeline with its baselines and the theory check: ``udg demo`` and
``udg experiment``.

A seed is the whole pipeline. For each seed, stage 1 trains K diverse agents (the UDG data),
and two baselines come beside it: uniformly random actions with as many transitions as UDG's
total, and supervised data, the replay history of one SAC agent trained on a known task. The
supervised agent is trained in one population with an expert per downstream task (one task per
agent); the experts' last episodes are the expert data of the W1 theory check and the expert
row of the reference returns. These data jobs of every seed run side by side, one process per
core (:mod:`udg.experiments.data_stage`). For each downstream task, the offline learner (MOPO,
the paper's, or ``algo`` td3bc or iql) then trains on UDG's selections and on the baselines of
every seed, all cells as one population where their settings agree (a finished cell is never
recomputed). A seed's MOPO dynamics models are fitted in the data workers as soon as its data
is there, and the theory check's exact W1 solves run on low-priority threads during stage 2.
The summary gives every return as mean and std over seeds, beside the online reference
returns (zero action, random actions, expert) and D4RL's normalised score, with coverage
diagnostics on the rooms world; the report compares them in the paper's format beside the
paper's numbers. Rerunning the command resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from udg.data.dataset import Dataset
from udg.data.minari_io import dataset_bytes, load_datasets
from udg.data.relabel import parse_selection, relabel, select
from udg.devices import usable_cores
from udg.envs.registry import get_env_spec, observed_columns
from udg.envs.tasks import PAPER_ANGLES, get_task
from udg.errors import UdgError, unknown_name
from udg.evaluation import coverage, theory
from udg.evaluation.reference import normalised_score, reference_rows
from udg.experiments.data_stage import (
    DataJob,
    FitJob,
    SeedData,
    experts_config,
    make_data,
    seed_jobs,
    worker_count,
)
from udg.experiments.generate import check_generate_memory
from udg.experiments.generate_config import GenerateConfig, generate_preset
from udg.experiments.grid import (
    DATA_KINDS,
    EXECUTORS,
    Cell,
    models_folder,
    populations,
    run_cells_with_bar,
)
from udg.experiments.offline import (
    CellJob,
    ModelFit,
    OfflineConfig,
    model_fits,
    model_metrics,
    prepare_cell,
    shared_model_file,
    stored_result,
)
from udg.experiments.presets import learner_preset, mopo_preset
from udg.experiments.runs import (
    MANIFEST,
    atomic_write_json,
    check_run,
    config_dict,
    git_revision,
    hold_folder,
    machine_description,
    read_json,
    release_folder,
    write_manifest,
)
from udg.offline import ALGO_LABELS, ALGOS
from udg.offline.learners import ModelFreeConfig
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


DEMO_ENVS = ("rooms", "point")
"""The worlds ``udg demo`` runs on: ``rooms`` (the default, where data coverage decides) and
``point``, the open plane, the control where it cannot matter."""


def _demo(env: str) -> ExperimentSpec:
    return ExperimentSpec(
        name="demo" if env == DEMO_ENVS[0] else f"demo-{env}",
        env=env,
        tasks=tuple(f"{env}-angle-{a}" for a in PAPER_ANGLES),
        selections=("top1", "top2", "all"),
        supervised_task=f"{env}-angle-0",
    )


EXPERIMENTS: dict[str, ExperimentSpec] = {
    "demo": _demo("rooms"),
    "demo-point": _demo("point"),
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
"""The experiments ``udg experiment`` runs (``demo`` and ``demo-point`` are ``udg demo``)."""


def demo_experiment(env: str) -> str:
    """The name of the demo experiment on ``env`` (one of :data:`DEMO_ENVS`)."""
    if env not in DEMO_ENVS:
        raise unknown_name("demo env", env, DEMO_ENVS)
    return _demo(env).name


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How to run an experiment: scale, seeds, and optional stage-1 override."""

    experiment: str = "demo"
    """Name in :data:`EXPERIMENTS`."""
    scale: str = "demo"
    """Preset scale of every stage."""
    seed: int = 0
    """The first seed; the pipeline runs seeds ``seed .. seed + seeds - 1``."""
    seeds: int = 3
    """Seeds of the whole pipeline: each has its own stage 1, baselines and MOPO cells."""
    generate: GenerateConfig | None = None
    """Stage-1 config (None: the scale's preset); seed ``seed + i`` replaces its seed by
    ``generate.seed + i``."""
    algo: str = "mopo"
    """Offline learner of every cell: mopo (the paper's), td3bc or iql."""
    mopo: MOPOConfig | None = None
    """MOPO config of every cell when ``algo`` is mopo (None: the scale's preset)."""
    learner: ModelFreeConfig | None = None
    """The model-free learner of every cell when ``algo`` is td3bc or iql (None: the scale's
    preset)."""
    tasks: tuple[str, ...] | None = None
    """A subset of the experiment's tasks (None: all)."""
    expert_steps: int | None = None
    """Environment steps of each baseline SAC agent (the supervised agent and the theory
    check's experts; None: stage 1's steps per agent). The random data always matches UDG's
    total."""


Progress = Callable[[str, int, str], contextlib.AbstractContextManager[Any]]
"""``progress(description, total, unit)`` -> a context whose value has ``update(n, **metrics)``
(:func:`udg.cli.progress.progress_bar`)."""


def _no_progress(description: str, total: int, unit: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext(SimpleNamespace(update=lambda completed, **metrics: None))


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
    data_workers: int | None = None,
) -> dict:
    """Run (or resume) the experiment in ``out``; returns what it wrote to results.json.

    Seed ``s`` writes its stage 1 and baselines under ``out/seed-<s>/``; every MOPO cell of
    every seed goes under ``out/offline/``. ``log`` gets one line per stage and per finished
    cell; ``progress`` makes a bar per stage. ``max_cells`` caps how many MOPO cells train as
    one population (default: all that can). ``data_workers`` is how many of the seeds' data
    jobs run side by side, each in its own process (default: one per CPU core,
    :func:`udg.experiments.data_stage.worker_count`; 1 runs them here, one after another).
    """
    spec = get_experiment(config.experiment)
    gens, tasks = _validated(config, spec)
    if executor not in EXECUTORS:  # before any work, not after stage 1
        raise unknown_name("executor", executor, EXECUTORS)
    if max_cells is not None and max_cells < 1:
        raise UdgError(f"--population-cells must be at least 1, got {max_cells}")
    if address is not None and executor != "ray":
        raise UdgError(f"--address {address} names a Ray cluster; it needs --executor ray")
    template = _offline_template(config, spec, tasks)
    out = Path(out)
    jobs = [
        job for seed, gen in gens.items() for job in _seed_jobs(config, spec, seed, gen, tasks, out)
    ]
    for job in jobs[:2]:  # the seeds' stage-1 runs differ only in their seed: each fits in
        check_generate_memory(job.config)  # memory if the first seed's do (udg, experts)
    workers = worker_count(jobs, data_workers)
    fields = _claim(out, config)
    try:
        summary = _run_claimed(config, spec, jobs, workers, tasks, template, out, executor,
                               address, log, progress, max_cells)  # fmt: skip
        write_manifest(out, PIPELINE_KIND, "complete", fields)
        return summary
    finally:
        release_folder(out)


def _offline_template(config: PipelineConfig, spec: ExperimentSpec, tasks: list[str]):
    """Every stage-2 cell's :class:`OfflineConfig` but its task, selection and seed."""
    if config.algo == "mopo":
        return OfflineConfig(task=tasks[0], mopo=config.mopo or mopo_preset(spec.env, config.scale))
    learner = config.learner or learner_preset(spec.env, config.scale, config.algo)
    return OfflineConfig(task=tasks[0], learner=learner)


PIPELINE_KIND = "experiment"
"""The kind in a pipeline folder's manifest."""

PIPELINE_FILES = ("results.json", "report.html", "report.md", "RUN.md", "figures", "offline")
"""What a pipeline writes at the top of its folder, besides ``seed-<s>/`` folders and the
manifest (a folder of only these, without a manifest, was made before udg wrote one)."""


def _own_file(name: str) -> bool:
    return (
        name in PIPELINE_FILES
        or name.startswith(".")
        or (name.startswith("seed-") and name[5:].isdigit())
    )


PIPELINE_DEFAULTS = {"algo": "mopo"}
"""What a pipeline's manifest lacks when it was made before udg had other learners."""


def pipeline_fields(config: PipelineConfig) -> dict:
    """What a pipeline folder's manifest records of its config: everything but the number of
    seeds, which a rerun may change (each seed's runs are folders of their own)."""
    fields = config_dict(config)
    fields.pop("seeds")
    return fields


def check_pipeline_folder(out: Path, config: PipelineConfig) -> None:
    """Refuse, writing nothing, an ``out`` that holds anything but this pipeline's own run: a
    file, another kind of run (a generate run's datasets would be mixed with the pipeline's),
    a pipeline of another config, or a folder of other files."""
    out = Path(out)
    legacy = (
        out.is_dir()
        and not (out / MANIFEST).exists()
        and any(not p.name.startswith(".") for p in out.iterdir())
        and all(_own_file(p.name) for p in out.iterdir())
    )
    if not legacy:
        check_run(out, PIPELINE_KIND, pipeline_fields(config), PIPELINE_DEFAULTS)


def _claim(out: Path, config: PipelineConfig) -> dict:
    """Check ``out`` (:func:`check_pipeline_folder`), then lock it for this process and mark
    it as this pipeline's running run; the manifest's config."""
    check_pipeline_folder(out, config)
    fields = pipeline_fields(config)
    hold_folder(out, "an experiment into")
    if (out / MANIFEST).exists():
        check_run(out, PIPELINE_KIND, fields, PIPELINE_DEFAULTS)  # again, under the lock
    write_manifest(out, PIPELINE_KIND, "running", fields)
    return fields


def _expert_tasks(spec: ExperimentSpec, tasks: list[str]) -> list[str]:
    """The baselines' agents' tasks: each downstream task (an expert), then the supervised
    task when it is not one of them."""
    return tasks + ([spec.supervised_task] if spec.supervised_task not in tasks else [])


def _seed_jobs(config, spec, seed, gen, tasks, out: Path) -> list[DataJob]:
    """The data jobs of seed ``seed`` (stage-1 config ``gen``) under ``out/seed-<s>/``."""
    return seed_jobs(
        seed, gen, _expert_tasks(spec, tasks), config.expert_steps, spec.supervised_task,
        out / f"seed-{seed}",
    )  # fmt: skip


def _run_claimed(config, spec, jobs, workers, tasks, template, out, executor, address, log,
                 progress, max_cells) -> dict:  # fmt: skip
    start = time.perf_counter()
    schedule, label = template.schedule, ALGO_LABELS[template.algo]
    on_seed = None
    if template.algo == "mopo" and executor == "local" and workers > 1:
        # A seed's dynamics models are fitted in the data workers as soon as its data is
        # there, beside the other seeds' jobs (and on the cores their last jobs leave idle);
        # with one worker, stage 2's population fits them, one per device at a time.
        on_seed = partial(_model_fits, spec, tasks, template, out, set())
    data, cache = make_data(jobs, workers, spec.supervised_task, log, progress, on_seed)
    with _background_pool() as background:
        data_seconds = time.perf_counter() - start
        cells = _cells(spec, tasks, data, template, out)
        batches = populations(cells, max_cells)
        loaded = _load_all(data, cache)  # every dataset: stage 2, reference rows, coverage, W1
        solves = _theory_solves(spec.env, tasks, data, loaded, cells, background)
        log(
            f"stage 2: {len(cells)} {label} cells ({len(data)} seed(s)) in {len(batches)} "
            f"population(s) ({executor} executor); the theory check's exact W1s beside it"
        )
        stage2_start = time.perf_counter()
        with progress(f"stage 2 {label}", len(cells) * schedule.epochs, "epochs") as bar:
            results = run_cells_with_bar(
                cells,
                bar,
                schedule.epochs,
                log=log,
                work=out / "offline",
                executor=executor,
                address=address,
                max_cells=max_cells,
                loaded=cache,
            )
        stage2_seconds = time.perf_counter() - stage2_start
        log("reference returns: zero action, random actions, expert; theory check: exact W1")
        reference = _reference(tasks, data, loaded, schedule.eval_episodes)
        theory_summary = _theory(solves, data, results, reference)
    table = _table(cells, results)
    summary = {
        "experiment": spec.name,
        "env": spec.env,
        "algo": template.algo,
        "config": dataclasses.asdict(config) | {"generate": dataclasses.asdict(jobs[0].config)},
        "seeds": list(data),
        "sources": {str(s): d.sources for s, d in data.items()},
        "tasks": tasks,
        "columns": [f"udg-{s}" for s in spec.selections] + ["random-all", "supervised-all"],
        "supervised_task": spec.supervised_task,
        "paper": spec.paper,
        "cells": {c.name: _cell_summary(results[c.name]) for c in cells},
        "table": table,
        "reference": reference,
        "normalised": _normalised(cells, results, reference),
        "data_returns": _data_returns(cells, results),
        "coverage": _coverage(spec.env, data, loaded),
        "theory": theory_summary,
        "git_revision": git_revision(),
        "machine": machine_description(),
        "wall_seconds": time.perf_counter() - start,
        "phase_seconds": {  # this invocation's
            "data": data_seconds,
            "stage 2": stage2_seconds,
            "the rest": time.perf_counter() - start - data_seconds - stage2_seconds,
        },
        "data_workers": workers,
        "stage_seconds": _stage_seconds(out, data, cells, results, label),
        "model_fits": model_fits([results[c.name] for c in cells]),
    }
    atomic_write_json(out / "results.json", summary)
    from udg.experiments.report import write_report

    write_report(out, summary)
    return summary


def _validated(
    config: PipelineConfig, spec: ExperimentSpec
) -> tuple[dict[int, GenerateConfig], list[str]]:
    """Stage 1's config of each seed and the tasks to run, or a clear error for a bad
    pipeline config."""
    if config.seeds < 1:
        raise UdgError(f"--seeds must be at least 1, got {config.seeds}")
    if config.seed < 0:
        raise UdgError(f"--seed must be >= 0, got {config.seed}")
    if config.expert_steps is not None and config.expert_steps <= 0:
        raise UdgError(f"--expert-steps must be positive, got {config.expert_steps}")
    if config.algo not in ALGOS:
        raise unknown_name("algo", config.algo, ALGOS)
    if (config.mopo is not None and config.algo != "mopo") or (
        config.learner is not None and config.learner.algo != config.algo
    ):
        raise UdgError(f"the stage-2 settings given are not those of algo {config.algo}")
    tasks = list(config.tasks or spec.tasks)
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown:
        raise UdgError(f"task(s) {', '.join(unknown)} are not part of experiment {spec.name}")
    base = config.generate or dataclasses.replace(
        generate_preset(spec.env, config.scale), seed=config.seed
    )
    gens = {
        config.seed + i: dataclasses.replace(base, seed=base.seed + i) for i in range(config.seeds)
    }
    return gens, tasks


def pipeline_disk_bytes(config: PipelineConfig) -> int:
    """A lower estimate of the disk a pipeline's datasets take: each seed's stage 1, its
    baselines and its random data (MOPO's files are small beside them)."""
    spec = get_experiment(config.experiment)
    # Every seed writes datasets of the same shapes: one seed's, times the seeds.
    gens, tasks = _validated(dataclasses.replace(config, seeds=1), spec)
    gen = next(iter(gens.values()))
    experts = experts_config(gen, _expert_tasks(spec, tasks), config.expert_steps)
    total = 0
    for run in (gen, experts):
        steps = run.rounds * run.episode_length
        total += run.num_agents * dataset_bytes(spec.env, steps, run.episode_length)
    random_steps = gen.num_agents * gen.rounds * gen.episode_length
    total += dataset_bytes(spec.env, random_steps, gen.episode_length)
    return config.seeds * total


def _cells(
    spec: ExperimentSpec,
    tasks: list[str],
    data: dict[int, SeedData],
    template: OfflineConfig,
    out: Path,
) -> list[Cell]:
    """Stage 2's grid: per task and seed, UDG's selections then the two baselines, each on
    its seed's data, each cell ``template`` with its task, selection and seed."""
    kinds = [("udg", s) for s in spec.selections] + [("random", "all"), ("supervised", "all")]
    cells = []
    for task in tasks:
        for seed, seed_data in data.items():
            for kind, rule in kinds:
                offline = dataclasses.replace(template, task=task, select=rule, seed=seed)
                cell = Cell(data=kind, config=offline, datasets=seed_data.sources[kind], out="")
                # The folder is named after the cell, whose name comes from its fields.
                cells.append(dataclasses.replace(cell, out=str(out / "offline" / cell.name)))
    return cells


def _stage_seconds(
    out: Path, data: dict[int, SeedData], cells, results, label: str = "MOPO"
) -> dict[str, float]:
    """Time of the main stages as each recorded it, summed over seeds: stage 1 and the
    baselines over resumed runs (their manifests keep it); the stage-2 cells as the invocations
    that finished them (a population's time shared among its cells). The experiment's
    ``wall_seconds`` is only this invocation's when it was resumed."""
    return {
        "stage 1": sum(
            read_json(out / f"seed-{s}" / "udg" / MANIFEST)["wall_seconds"] for s in data
        ),
        "baselines": sum(
            read_json(out / f"seed-{s}" / "experts" / MANIFEST)["wall_seconds"] for s in data
        ),
        f"{label} cells": sum(results[c.name]["wall_seconds"] for c in cells),
        **_worker_fit_seconds(cells, results),
    }


def _worker_fit_seconds(cells, results) -> dict[str, float]:
    """The time of the dynamics fits made in the data workers (a population's own fits are in
    its cells' time), summed over the models: none when there were none."""
    models = {results[c.name].get("model") for c in cells} - {None}
    metrics = [model_metrics(m) for m in sorted(models)]
    seconds = [m["fit_seconds"] for m in metrics if m.get("fitted_in") == "data worker"]
    return {"model fits in the data workers": sum(seconds)} if seconds else {}


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


def _over_seeds(values: list[float]) -> dict:
    """``{mean, std, n, values}`` of one number per seed (std over seeds, 0 for one seed);
    mean and std are None, and so is each NaN value, when some value is NaN."""
    defined = bool(np.all(np.isfinite(values)))
    return {
        "mean": float(np.mean(values)) if defined else None,
        "std": float(np.std(values)) if defined else None,
        "n": len(values),
        "values": [float(v) if np.isfinite(v) else None for v in values],
    }


def _per_column(cells: list[Cell], value: Callable[[Cell], float]) -> dict:
    """``{task: {column: _over_seeds([value(cell) for the column's cells])}}``."""
    grouped: dict = {}
    for cell in cells:
        grouped.setdefault(cell.task, {}).setdefault(cell.column, []).append(value(cell))
    return {
        task: {col: _over_seeds(v) for col, v in cols.items()} for task, cols in grouped.items()
    }


def _table(cells: list[Cell], results: dict[str, dict]) -> dict:
    """``table[task][column]``: the learner's last return over seeds (each seed's the mean over its
    evaluation episodes; their std stays in ``cells``)."""
    return _per_column(cells, lambda c: results[c.name]["last_return"])


def _data_returns(cells: list[Cell], results: dict[str, dict]) -> dict:
    """``data_returns[task][column]``: the selected data's own mean episode return under the
    task, over seeds."""
    return _per_column(cells, lambda c: results[c.name]["data_mean_return"])


def _load_all(data: dict[int, SeedData], loaded: dict[Path, Dataset]) -> dict[str, Dataset]:
    """Every dataset of every seed (the data kinds' and the experts'), by its folder; those in
    ``loaded`` (by folder) are not read again."""
    paths = {
        str(p)
        for d in data.values()
        for p in [*(q for kind in DATA_KINDS for q in d.sources[kind]), *d.experts.values()]
    }
    return {p: load_datasets([p], loaded)[0] for p in sorted(paths)}


def _reference(
    tasks: list[str], data: dict[int, SeedData], loaded: dict[str, Dataset], episodes: int
) -> dict:
    """``reference[task][row]`` for the rows ``zero``, ``random`` and ``expert``: the online
    return in the real env over seeds, each seed's the mean over its episodes. Zero and random
    actions run ``episodes`` episodes (the cells' evaluation's) from the seed's evaluation resets, as the
    cells' policies do; the expert's return is that of its last episodes in its replay (the
    theory check's expert data: the online SAC agent trained on the task, stochastic, as it
    collected them)."""
    out = {}
    for task_name in tasks:
        task = get_task(task_name)
        rows: dict[str, list[float]] = {"zero": [], "random": [], "expert": []}
        for seed, seed_data in data.items():
            expert = loaded[str(seed_data.experts[task_name])]
            first = max(0, expert.num_episodes - EXPERT_EPISODES)
            returns = expert.episode_returns(relabel(expert, task).task_rewards[task_name])[first:]
            seed_rows = reference_rows(task, returns, None, episodes, seed)
            for name in rows:
                rows[name].append(seed_rows[name]["mean"])
        out[task_name] = {name: _over_seeds(values) for name, values in rows.items()}
    return out


def _normalised(cells: list[Cell], results: dict[str, dict], reference: dict) -> dict:
    """``normalised[task][column]``: D4RL's score of each seed's last return (0 the random
    policy's online return, 100 the expert's, both the means over seeds), over seeds; NaN
    where the expert does not beat the random policy (the scale then means nothing)."""

    def score(cell: Cell) -> float:
        return _score(results[cell.name]["last_return"], reference[cell.task])

    return _per_column(cells, score)


def _score(value: float, reference: dict) -> float:
    """D4RL's normalised score of ``value`` on a task's reference rows; NaN where the expert's
    return is not above the random policy's."""
    random_mean, expert_mean = reference["random"]["mean"], reference["expert"]["mean"]
    if not expert_mean > random_mean:
        return float("nan")
    return normalised_score(value, random_mean, expert_mean)


def _coverage(env: str, data: dict[int, SeedData], loaded: dict[str, Dataset]) -> dict | None:
    """On the rooms world, ``coverage[seed][buffer]`` = ``{kind, outside_start, rooms}``: the
    fraction of the buffer's transitions that end outside the start room and the rooms they
    reach; None on other envs."""
    if env != "rooms":
        return None
    out = {}
    for seed, seed_data in data.items():
        buffers = {}
        for kind in DATA_KINDS:
            for path in seed_data.sources[kind]:
                dataset = loaded[str(path)]
                name = Path(path).name.removesuffix("-v0") if kind == "udg" else kind
                buffers[name] = {
                    "kind": kind,
                    "outside_start": coverage.outside_start_fraction(dataset),
                    "rooms": coverage.rooms_reached(dataset),
                }
        out[str(seed)] = buffers
    return out


def _feature_columns(env: str, obs_dim: int) -> list[int] | None:
    """The observation entries that hold the env's diversity features, or None where some
    feature is not observed (ant's x, y)."""
    spec = get_env_spec(env)
    observed = dict(observed_columns(spec, obs_dim))
    if not all(c in observed for c in spec.feature_columns):
        return None
    return [observed[c] for c in spec.feature_columns]


@contextlib.contextmanager
def _background_pool() -> Iterator[ThreadPoolExecutor]:
    """A thread per core at the lowest CPU priority (nice 19, where the OS lets a thread lower
    its own): the theory check's exact W1 solves run there while stage 2 trains, on the time
    its learners leave a core idle (compiling, evaluating, writing), and slow them little
    (POT's solver runs on the calling thread; XLA's computations would run on its own threads,
    at normal priority). Leaving the block early (an error) drops the solves not yet started."""

    def lower_priority() -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

    pool = ThreadPoolExecutor(max_workers=usable_cores(), initializer=lower_priority)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _model_fits(
    spec: ExperimentSpec,
    tasks: list[str],
    template: OfflineConfig,
    out: Path,
    started: set[Path],
    seed_data: SeedData,
    loaded: dict[Path, Dataset],
) -> list[FitJob]:
    """A job for each dynamics model that a cell of the seed will need and the grid's model
    folder lacks (``started``: the model files already given a job); stage 2's population
    then finds them there. A finished cell needs none."""
    folder, fits = models_folder(out / "offline"), []
    for cell in _cells(spec, tasks, {seed_data.seed: seed_data}, template, out):
        job = CellJob(config=cell.config, data_paths=cell.datasets, out=cell.out)
        if stored_result(job) is not None:
            continue
        prepared = prepare_cell(job, loaded)
        path = shared_model_file(prepared, folder)
        if path not in started and not path.exists():
            started.add(path)
            fits.append(FitJob(ModelFit.of(prepared, path, fitted_in="data worker")))
    return fits


def _theory_solves(
    env: str,
    tasks: list[str],
    data: dict[int, SeedData],
    loaded: dict[str, Dataset],
    cells: list[Cell],
    pool: ThreadPoolExecutor,
) -> tuple[list[dict], dict[str, list[dict[str, dict[str, Any]]]]]:
    """Start on ``pool`` every exact W1 the theory check needs (they depend on the data alone):
    each cell's pair (``w1`` and ``w1_features`` as futures, ``return`` yet to come) and each
    buffer's W1 per seed and task (futures), as :func:`_theory` takes them."""
    pairs = []
    per_buffer: dict[str, list[dict[str, dict[str, Any]]]] = {k: [] for k in DATA_KINDS}
    # POT releases the GIL; a cell whose selection is one buffer (top-1, random, supervised)
    # reuses the buffer's solve.
    solves: dict[tuple, Future] = {}

    def w1(key: tuple, solve: Callable[[], float]) -> Future:
        if key not in solves:
            solves[key] = pool.submit(solve)
        return solves[key]

    for seed, seed_data in data.items():
        features = _feature_columns(env, loaded[seed_data.sources["random"][0]].obs_dim)
        seed_w1: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in DATA_KINDS}
        for task_name in tasks:
            task = get_task(task_name)
            expert = theory.last_episodes(
                loaded[str(seed_data.experts[task_name])], EXPERT_EPISODES
            )
            for kind in DATA_KINDS:
                seed_w1[kind][task_name] = {
                    (Path(p).name if kind == "udg" else kind): w1(
                        (seed, task_name, (p,)),
                        partial(theory.w1_to_expert, loaded[p], expert, seed=seed),
                    )
                    for p in seed_data.sources[kind]
                }
            for cell in cells:
                if cell.task != task_name or cell.seed != seed:
                    continue
                selected, ranking = select([loaded[p] for p in cell.datasets], task, cell.selection)
                k = parse_selection(cell.selection) or len(ranking)
                chosen = tuple(cell.datasets[r.index] for r in ranking[:k])
                pairs.append(
                    {
                        "task": task_name,
                        "data": cell.column,
                        "seed": seed,
                        "cell": cell.name,
                        "w1": w1(
                            (seed, task_name, chosen),
                            partial(theory.w1_to_expert, selected, expert, seed=seed),
                        ),
                        "w1_features": None
                        if features is None
                        else pool.submit(
                            theory.w1_features_to_expert, selected, expert, seed, features
                        ),
                    }
                )
        for kind in DATA_KINDS:
            per_buffer[kind].append(seed_w1[kind])
    return pairs, per_buffer


def _theory(
    solves: tuple[list[dict], dict[str, list[dict[str, dict[str, Any]]]]],
    data: dict[int, SeedData],
    results: dict[str, dict],
    reference: dict,
) -> dict:
    """W1 of each buffer and of each cell's selected data to its seed's expert data of the
    task, in state-action space and in feature space (:func:`_theory_solves`), beside the
    cell's return; Spearman's rho within each task (one point per data column, W1 and return
    averaged over seeds) and pooled over every task's points with returns as normalised
    scores."""
    started, per_buffer = solves
    pairs = []
    for pair in started:
        pair = {k: v for k, v in pair.items() if k != "cell"} | {
            "return": results[pair["cell"]]["last_return"]
        }
        pair.update({k: pair[k].result() for k in ("w1", "w1_features") if pair[k] is not None})
        pairs.append(pair)
    per_buffer = {
        kind: [
            {task: {name: f.result() for name, f in task_w1.items()} for task, task_w1 in s.items()}
            for s in seeds
        ]
        for kind, seeds in per_buffer.items()
    }
    points = _theory_points(pairs, reference)
    pooled = [p for p in points if p["normalised"] is not None]
    has_features = all(p["w1_features"] is not None for p in points)
    return {
        "metric": "exact W1 (POT) to the expert data, subsampled to 1000 points: in "
        "state-action space (observation ++ action, raw units) and in feature space (the "
        "env's diversity features, e.g. the rooms world's (x, y)); expert data = the last "
        f"{EXPERT_EPISODES} episodes of a SAC agent trained on the task, one per seed",
        "pairs": pairs,
        "points": points,
        "spearman_within": theory.spearman_within(points),
        "spearman_within_features": theory.spearman_within(points, w1="w1_features")
        if has_features
        else None,
        "spearman": theory.spearman([p["w1"] for p in pooled], [p["normalised"] for p in pooled]),
        "spearman_features": theory.spearman(
            [p["w1_features"] for p in pooled], [p["normalised"] for p in pooled]
        )
        if has_features
        else None,
        "worst_case_proxy": {
            k: float(np.mean([theory.worst_case_proxy(w) for w in v]))
            for k, v in per_buffer.items()
        },
        "per_buffer_w1": {
            k: dict(zip(map(str, data), v, strict=True)) for k, v in per_buffer.items()
        },
    }


def _theory_points(pairs: list[dict], reference: dict) -> list[dict]:
    """One point per (task, data column): W1s and return averaged over seeds, the return also
    as a normalised score (None where the task's scale has no width)."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for pair in pairs:
        grouped.setdefault((pair["task"], pair["data"]), []).append(pair)
    points = []
    for (task, column), members in grouped.items():
        ret = float(np.mean([p["return"] for p in members]))
        score = _score(ret, reference[task])
        features = [p["w1_features"] for p in members]
        points.append(
            {
                "task": task,
                "data": column,
                "seeds": len(members),
                "w1": float(np.mean([p["w1"] for p in members])),
                "w1_features": None if None in features else float(np.mean(features)),
                "return": ret,
                "normalised": None if np.isnan(score) else score,
            }
        )
    return points

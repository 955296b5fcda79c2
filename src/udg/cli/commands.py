"""What each ``udg`` subcommand does, between the parsed flags and the library.

Thin imperative glue: validate settings, call the data and env packages, print a rich table or
JSON on stdout. Kept apart from :mod:`udg.cli.main` so that parsing stays declarative.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from udg.errors import UdgError

stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def list_tasks(as_json: bool = False) -> None:
    from udg.envs import ENVS
    from udg.envs.tasks import TASK_FAMILIES, TASKS, example_tasks

    tasks = example_tasks()
    if as_json:
        _print_json(
            {
                "envs": {
                    n: {
                        "gym_id": s.gym_id,
                        "max_episode_steps": s.max_episode_steps,
                        "features": list(s.feature_columns),
                        "info_columns": list(s.info_columns),
                        "description": s.description,
                    }
                    for n, s in ENVS.items()
                },
                "families": list(TASK_FAMILIES),
                "named": list(TASKS),
                "tasks": [
                    {"name": t.name, "env": t.env, "formula": t.formula, "columns": list(t.columns)}
                    for t in tasks
                ],
            }
        )
        return
    envs = Table(title="environments")
    for col in ("env", "gym id", "episode", "diversity features", "description"):
        envs.add_column(col)
    for name, spec in ENVS.items():
        envs.add_row(
            name,
            spec.gym_id,
            str(spec.max_episode_steps),
            ", ".join(spec.feature_columns),
            spec.description,
        )
    stdout.print(envs)
    table = Table(title="tasks (families accept any value: " + ", ".join(TASK_FAMILIES) + ")")
    for col in ("task", "env", "reward"):
        table.add_column(col)
    for task in tasks:
        table.add_row(task.name, task.env, task.formula)
    stdout.print(table)


def collect_random(
    env: str, steps: int, seed: int, out: Path, name: str | None, max_episode_steps: int | None
) -> Path:
    from udg.cli.progress import progress_bar
    from udg.data.collect import collect_episodes, uniform_random_policy
    from udg.data.minari_io import dataset_id_for, write_dataset
    from udg.envs import get_env_spec, make_env

    get_env_spec(env)
    if steps <= 0:
        raise UdgError(f"--steps must be positive, got {steps}")
    name = name or f"random-s{seed}"
    dataset_id = dataset_id_for(env, name)
    target = Path(out) / dataset_id
    if target.exists():
        raise UdgError(f"dataset {target} exists already; choose another --name or --out")
    gym_env = make_env(env, max_episode_steps=max_episode_steps)
    policy = uniform_random_policy(gym_env.action_space, np.random.default_rng(seed))
    with progress_bar(f"collect-random {env}", total=steps) as bar:
        episodes = collect_episodes(
            gym_env, policy, steps, seed=seed, on_step=lambda n: n % 1000 == 0 and bar.update(n)
        )
        bar.update(steps, episodes=len(episodes))
    gym_env.close()
    path = write_dataset(
        episodes,
        out,
        dataset_id,
        env,
        max_episode_steps=max_episode_steps,
        algorithm="uniform-random",
        description=f"uniformly random actions on {env}, {steps} transitions, seed {seed}",
        udg_metadata={"kind": "random", "seed": seed, "steps": steps},
    )
    returns = [float(np.sum(e.rewards)) for e in episodes]
    stdout.print(
        f"wrote {path}  ({len(episodes)} episodes, {steps} transitions, "
        f"mean collected return {np.mean(returns):.2f})"
    )
    return path


def list_datasets(paths: Sequence[Path], as_json: bool = False) -> None:
    from udg.data.minari_io import dataset_env, find_datasets, read_metadata

    rows = []
    for path in find_datasets(paths):
        meta = read_metadata(path)
        rows.append(
            {
                "id": meta.get("dataset_id"),
                "env": dataset_env(meta, path),
                "episodes": meta.get("total_episodes"),
                "transitions": meta.get("total_steps"),
                "algorithm": meta.get("algorithm_name"),
                "path": str(path),
            }
        )
    if as_json:
        _print_json(rows)
        return
    table = Table()
    for col in ("id", "env", "episodes", "transitions", "algorithm", "path"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("id", "env", "episodes", "transitions", "algorithm", "path"))
        )
    stdout.print(table)


def show_dataset(path: Path, as_json: bool = False) -> None:
    from udg.data.minari_io import load_dataset, read_metadata

    meta = read_metadata(path)
    dataset = load_dataset(path)
    returns = dataset.episode_returns()
    summary = {
        "id": dataset.name,
        "env": dataset.env,
        "path": str(path),
        "episodes": dataset.num_episodes,
        "transitions": dataset.num_transitions,
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "info_columns": sorted(dataset.infos),
        "terminations": int(dataset.terminations.sum()),
        "collected_return_mean": float(returns.mean()),
        "collected_return_std": float(returns.std()),
        "algorithm": meta.get("algorithm_name"),
        "description": meta.get("description"),
        "udg": meta.get("udg", {}),
    }
    if as_json:
        _print_json(summary)
        return
    for key, value in summary.items():
        stdout.print(f"[bold]{key:>22}[/bold]  {value}")


def rank_datasets(paths: Sequence[Path], task_name: str, as_json: bool = False) -> None:
    from udg.data.minari_io import load_datasets
    from udg.data.relabel import rank
    from udg.envs import get_task

    task = get_task(task_name)
    if not paths:
        raise UdgError("give at least one dataset folder to rank")
    datasets = load_datasets(paths)
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the datasets are of env {datasets[0].env}"
        )
    ranking = rank(datasets, task)
    if as_json:
        _print_json({"task": task.name, "ranking": [r.__dict__ for r in ranking]})
        return
    table = Table(title=f"ranked for {task.name}: {task.formula}")
    for col in ("rank", "dataset", "mean return", "episodes", "transitions"):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    for r in ranking:
        table.add_row(
            str(r.rank), r.name, f"{r.score:.2f}", str(r.num_episodes), str(r.num_transitions)
        )
    stdout.print(table)

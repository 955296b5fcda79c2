"""Relabel, score, rank and select datasets for a task (stage 3 of the pipeline).

When a downstream task arrives, every buffer is relabelled with the task's reward from its
stored columns (never by re-simulating), scored by its mean episode return under the task, and
ranked; a selection rule then picks the data for offline RL: UDG's top-1, the union of the top
k, or all of them. Relabelling adds a column and keeps the collected reward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from udg.data.dataset import Dataset, concatenate
from udg.envs.tasks import TaskSpec
from udg.errors import UdgError


def relabel(dataset: Dataset, task: TaskSpec) -> Dataset:
    """``dataset`` with a reward column for ``task`` (the collected reward is untouched)."""
    if task.name in dataset.task_rewards:
        return dataset
    if dataset.env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but dataset {dataset.name} "
            f"is of env {dataset.env}"
        )
    try:
        rewards = task.reward(dataset.columns())
    except UdgError as err:
        raise UdgError(f"dataset {dataset.name}: {err}") from None
    if not np.all(np.isfinite(rewards)):
        raise UdgError(f"task {task.name} gives NaN or inf rewards on dataset {dataset.name}")
    return dataset.with_task_rewards(task.name, rewards)


def score(dataset: Dataset, task: TaskSpec) -> float:
    """Mean undiscounted episode return of ``dataset`` under ``task``."""
    rewards = relabel(dataset, task).task_rewards[task.name]
    return float(np.mean(dataset.episode_returns(rewards)))


def reward_per_step(dataset: Dataset, task: TaskSpec) -> float:
    """Mean task reward per transition: the score without the episodes' lengths in it."""
    return float(np.mean(relabel(dataset, task).task_rewards[task.name]))


@dataclass(frozen=True)
class Ranked:
    """One line of a ranking."""

    rank: int
    index: int
    """Position of the dataset in the list that was ranked."""
    name: str
    score: float
    """Mean episode return under the task."""
    reward_per_step: float
    """Mean task reward per transition (short episodes lower the score, not this)."""
    num_episodes: int
    num_transitions: int
    path: str | None


def rank(datasets: Sequence[Dataset], task: TaskSpec) -> list[Ranked]:
    """Datasets ranked by mean relabelled episode return, best first (ties keep input order)."""
    datasets = [relabel(d, task) for d in datasets]  # once; score and reward_per_step reuse it
    scores = [score(d, task) for d in datasets]
    order = sorted(range(len(datasets)), key=lambda i: -scores[i])
    return [
        Ranked(
            rank=r + 1,
            index=i,
            name=datasets[i].name,
            score=scores[i],
            reward_per_step=reward_per_step(datasets[i], task),
            num_episodes=datasets[i].num_episodes,
            num_transitions=datasets[i].num_transitions,
            path=datasets[i].metadata.get("path"),
        )
        for r, i in enumerate(order)
    ]


_TOP = re.compile(r"top(?::)?(\d+)")


def parse_selection(rule: str) -> int | None:
    """How many top datasets a rule keeps: ``top1`` -> 1, ``top:3`` -> 3, ``all`` -> None."""
    if rule == "all":
        return None
    match = _TOP.fullmatch(rule)
    if not match or int(match.group(1)) < 1:
        raise UdgError(f"unknown selection {rule!r}; use top1, top2, top:K (K >= 1) or all")
    return int(match.group(1))


def select(datasets: Sequence[Dataset], task: TaskSpec, rule: str) -> tuple[Dataset, list[Ranked]]:
    """Relabel all, rank, and return the union of the selected datasets and the ranking.

    The union holds the chosen datasets in the order they were given, not in rank order, so
    that the same datasets chosen for different tasks are the same data, transition for
    transition: a dynamics model shared by those tasks is then the model each would fit alone
    (its holdout split and minibatches follow the rows' order). Its name lists them best first.
    """
    if not datasets:
        raise UdgError("no datasets to select from")
    k = parse_selection(rule)
    if k is not None and k > len(datasets):
        raise UdgError(f"selection {rule} needs {k} datasets but only {len(datasets)} were given")
    relabelled = [relabel(d, task) for d in datasets]
    ranking = rank(relabelled, task)
    best = [r.index for r in ranking[: k or len(ranking)]]
    name = f"{rule}({'+'.join(relabelled[i].name for i in best)})"
    selected = concatenate([relabelled[i] for i in sorted(best)], name=name)
    if selected.num_transitions == 0:
        raise UdgError(f"selection {rule} for {task.name} leaves no data")
    return selected, ranking

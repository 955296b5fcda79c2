"""Exporting a task's selection of datasets as a new Minari dataset that anyone can train on.

udg's datasets store the reward they were collected with (the diversity reward, or 0); a task's
reward is computed from their columns only when the task is known. An export is that moment
written down: the datasets are relabelled with the task, ranked, selected (top-1, top-k or all)
exactly as ``udg rank`` and stage 2 do, and the selection's episodes are written as a Minari
dataset whose ``rewards`` are the task's. Nothing else of an episode changes, so every
observation, action, termination and info is the source's; the collected reward is kept as the
info column ``collected_reward``. The metadata names the sources, the task and its formula, and
udg's version and revision.

Beside Minari's ``data/``, an export can hold ``d3rlpy.npz``: the same episodes laid out as
d3rlpy's ``MDPDataset`` reads them (see :func:`d3rlpy_arrays`), because d3rlpy's Minari loader
pairs each episode's T+1 observations with its T actions.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udg.data.dataset import Episode
from udg.data.minari_io import dataset_id_for, find_datasets, load_episodes, write_dataset
from udg.data.relabel import Ranked, parse_selection, rank
from udg.envs.tasks import TaskSpec
from udg.errors import UdgError
from udg.provenance import Authorship, git_revision, version

COLLECTED_REWARD = "collected_reward"
"""Info column of an export holding the reward the data was collected with (0 at the reset)."""

D3RLPY_FILE = "d3rlpy.npz"


@dataclass(frozen=True)
class Export:
    """What :func:`export_selection` wrote."""

    path: Path
    dataset_id: str
    ranking: list[Ranked]
    selected: list[str]
    """Paths of the source datasets in the export, best first."""
    num_episodes: int
    num_transitions: int
    mean_return: float
    """Mean episode return of the export under the task."""


def default_name(task: TaskSpec, rule: str) -> str:
    """The export's dataset name: task and rule, with what a Minari id cannot hold replaced
    (``rooms-goal-4,4`` + ``top:3`` -> ``rooms-goal-4_4-top3``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{task.name}-{rule.replace(':', '')}")


def relabelled_episodes(episodes: Sequence[Episode], task: TaskSpec) -> list[Episode]:
    """``episodes`` with the task's reward as ``rewards`` and the collected reward kept as the
    info column :data:`COLLECTED_REWARD` (T+1 values, 0 at the reset, as infos have them)."""
    out = []
    for episode in episodes:
        rewards = np.asarray(task.reward(episode.columns()), dtype=np.float64)  # [T]
        if not np.all(np.isfinite(rewards)):
            raise UdgError(f"task {task.name} gives NaN or inf rewards on an episode")
        infos = dict(episode.infos)
        if COLLECTED_REWARD in infos:
            raise UdgError(
                f"the data holds an info column {COLLECTED_REWARD!r} already (an export?); "
                "export the original datasets"
            )
        infos[COLLECTED_REWARD] = np.concatenate([[0.0], episode.rewards])
        out.append(
            Episode(
                observations=episode.observations,
                actions=episode.actions,
                rewards=rewards,
                terminations=episode.terminations,
                truncations=episode.truncations,
                infos=infos,
            )
        )
    return out


def d3rlpy_arrays(episodes: Sequence[Episode]) -> dict[str, np.ndarray]:
    """The episodes as the arrays of ``d3rlpy.dataset.MDPDataset(observations, actions,
    rewards, terminals, timeouts)``, which splits episodes at a terminal or timeout and reads a
    transition's next observation from the next row of its episode.

    An episode that terminated keeps its T observations before the end, the terminal on the
    last (d3rlpy gives a terminal transition a zero next observation). Any other episode gets
    its final observation as one more row, with a zero action and reward and the timeout on it,
    so d3rlpy's T transitions of it are exactly the episode's.
    """
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")
    }
    for e in episodes:
        t = len(e)
        terminated = bool(e.terminations[-1])
        rows = t if terminated else t + 1
        flags = np.zeros(rows, dtype=np.float32)
        flags[-1] = 1.0
        columns["observations"].append(e.observations[:rows])
        columns["actions"].append(
            e.actions if terminated else np.concatenate([e.actions, np.zeros_like(e.actions[:1])])
        )
        columns["rewards"].append(np.concatenate([e.rewards, np.zeros(rows - t)])[:, None])
        columns["terminals"].append(flags if terminated else np.zeros(rows, np.float32))
        columns["timeouts"].append(np.zeros(rows, np.float32) if terminated else flags)
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    arrays["observations"] = arrays["observations"].astype(np.float32)
    arrays["actions"] = arrays["actions"].astype(np.float32)
    arrays["rewards"] = arrays["rewards"].astype(np.float32)
    return arrays


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def export_selection(
    paths: Sequence[str | Path],
    task: TaskSpec,
    rule: str,
    out: str | Path,
    *,
    name: str | None = None,
    authorship: Authorship | None = None,
    ref_scores: tuple[float, float] | None = None,
    d3rlpy: bool = True,
) -> Export:
    """Relabel the datasets at or below ``paths`` with ``task``, select by ``rule`` and write the
    selection as the Minari dataset ``udg/<env>/<name>-v0`` under ``out``.

    ``ref_scores`` = (random policy, expert) returns under the task, for Minari's normalised
    score. ``d3rlpy`` also writes :data:`D3RLPY_FILE` (see :func:`d3rlpy_arrays`).
    """
    k = parse_selection(rule)
    name = name or default_name(task, rule)
    dataset_id = dataset_id_for(task.env, name)
    target = Path(out).resolve() / dataset_id
    if target.exists() or target.is_symlink():
        raise UdgError(f"dataset {target} exists already; choose another --name or --out")
    sources = find_datasets(paths)
    if k is not None and k > len(sources):
        raise UdgError(f"selection {rule} needs {k} datasets but only {len(sources)} were given")
    loaded = [load_episodes(p, expected_env=task.env) for p in sources]
    relabelled = [relabelled_episodes(episodes, task) for _, _, episodes in loaded]
    ranking = _rank(sources, loaded, task)
    chosen = [r.index for r in ranking[: k or len(ranking)]]
    episodes = [e for i in chosen for e in relabelled[i]]
    returns = np.array([float(np.sum(e.rewards)) for e in episodes])
    selected = [str(sources[i]) for i in chosen]
    udg_metadata = {
        "kind": "export",
        "task": task.name,
        "formula": task.formula,
        "selection": rule,
        "sources": selected,
        "source_ids": [loaded[i][1].get("dataset_id", sources[i].name) for i in chosen],
        "ranking": [
            {"rank": r.rank, "path": str(sources[r.index]), "score": r.score} for r in ranking
        ],
        "rewards": f"the task's reward ({task.formula}); the collected reward is the info "
        f"column {COLLECTED_REWARD}",
        "udg_version": version(),
        "git_revision": git_revision(),
    }
    path = write_dataset(
        episodes,
        out,
        dataset_id,
        task.env,
        max_episode_steps=max(len(e) for e in episodes),
        algorithm=f"udg export: {rule} of {len(sources)} datasets for {task.name}",
        description=(
            f"{rule} of {len(sources)} udg datasets ranked by mean return under {task.name}; "
            f"rewards are {task.name}'s: {task.formula}. Evaluate with that reward: an "
            "evaluation env's own reward may differ."
        ),
        udg_metadata=udg_metadata,
        authorship=authorship,
        ref_scores=ref_scores,
        extra_files={D3RLPY_FILE: _npz_bytes(d3rlpy_arrays(episodes))} if d3rlpy else None,
    )
    return Export(
        path=path,
        dataset_id=dataset_id,
        ranking=ranking,
        selected=selected,
        num_episodes=len(episodes),
        num_transitions=int(sum(len(e) for e in episodes)),
        mean_return=float(returns.mean()),
    )


def _rank(sources: Sequence[Path], loaded, task: TaskSpec) -> list[Ranked]:
    """:func:`udg.data.relabel.rank` of the loaded datasets: the ranking ``udg rank`` prints."""
    from udg.data.dataset import check_finite, dataset_from_episodes

    datasets = []
    for path, (env, metadata, episodes) in zip(sources, loaded, strict=True):
        dataset = dataset_from_episodes(
            metadata.get("dataset_id", path.name), env, episodes, metadata={"path": str(path)}
        )
        check_finite(dataset)
        datasets.append(dataset)
    return rank(datasets, task)

"""Episodes and flat transition datasets, the data model every later stage reads.

An :class:`Episode` is what one run of the environment produced, in Gymnasium/Minari terms:
T+1 observations, T actions, rewards, terminations and truncations, and per-step ``infos``
columns of length T+1 (the reset's values first). A :class:`Dataset` is a batch of whole
episodes flattened into transitions (``observations[i] -> next_observations[i]``) with the info
values reported *after* each step, which is what task rewards read. Datasets are immutable:
relabelling adds a column (:meth:`Dataset.with_task_rewards`) and never touches the collected
rewards; selection builds new datasets (:func:`concatenate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from udg.errors import UdgError


@dataclass(frozen=True)
class Episode:
    """One episode: ``T+1`` observations and ``T`` of everything else (infos have ``T+1``)."""

    observations: np.ndarray  # [T+1, obs_dim]
    actions: np.ndarray  # [T, act_dim]
    rewards: np.ndarray  # [T]
    terminations: np.ndarray  # [T] bool
    truncations: np.ndarray  # [T] bool
    infos: Mapping[str, np.ndarray] = field(default_factory=dict)  # each [T+1]

    def __len__(self) -> int:
        return len(self.actions)

    def columns(self) -> dict[str, np.ndarray]:
        """The episode's transitions by column name, as :meth:`Dataset.columns` has them (infos
        as reported after each step): what a task reward reads."""
        return {
            "observations": self.observations[:-1],
            "actions": self.actions,
            "next_observations": self.observations[1:],
            **{k: v[1:] for k, v in self.infos.items()},
        }

    def validate(self) -> None:
        """Raise :class:`UdgError` on inconsistent lengths or non-finite values."""
        t = len(self.actions)
        if t == 0:
            raise UdgError("an episode must have at least one step")
        if len(self.observations) != t + 1:
            raise UdgError(f"episode has {len(self.observations)} observations for {t} actions")
        for name, col in [
            ("rewards", self.rewards),
            ("terminations", self.terminations),
            ("truncations", self.truncations),
        ]:
            if len(col) != t:
                raise UdgError(f"episode column {name} has length {len(col)}, expected {t}")
        for name, col in self.infos.items():
            if len(col) != t + 1:
                raise UdgError(f"episode info {name} has length {len(col)}, expected {t + 1}")
        for name, col in [
            ("observations", self.observations),
            ("actions", self.actions),
            ("rewards", self.rewards),
            *self.infos.items(),
        ]:
            if not np.all(np.isfinite(col)):
                raise UdgError(f"episode column {name!r} holds NaN or inf")


@dataclass(frozen=True)
class Dataset:
    """Whole episodes flattened into transitions (all arrays share the leading axis ``N``)."""

    name: str
    env: str
    observations: np.ndarray  # [N, obs_dim] float32
    actions: np.ndarray  # [N, act_dim] float32
    next_observations: np.ndarray  # [N, obs_dim] float32
    rewards: np.ndarray  # [N] float64, the reward the data was collected with
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    infos: Mapping[str, np.ndarray]  # each [N] float64, reported after the step
    episode_starts: np.ndarray  # [E + 1] int64 offsets of episodes into the transitions
    task_rewards: Mapping[str, np.ndarray] = field(default_factory=dict)  # task -> [N]
    metadata: Mapping = field(default_factory=dict)

    @property
    def num_transitions(self) -> int:
        return len(self.actions)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    def columns(self) -> dict[str, np.ndarray]:
        """Every stored column by name: what a task reward reads."""
        return {
            "observations": self.observations,
            "actions": self.actions,
            "next_observations": self.next_observations,
            **self.infos,
        }

    def episode_returns(self, rewards: np.ndarray | None = None) -> np.ndarray:
        """Undiscounted return of each episode under ``rewards`` (default: collected); ``[E]``."""
        rewards = self.rewards if rewards is None else rewards
        return (
            np.add.reduceat(rewards, self.episode_starts[:-1])
            if self.num_episodes
            else (np.zeros(0))
        )

    def with_task_rewards(self, task: str, rewards: np.ndarray) -> Dataset:
        """A view with one more reward column; the collected rewards stay as they are."""
        if rewards.shape != (self.num_transitions,):
            raise UdgError(
                f"reward column for {task} has shape {rewards.shape}, "
                f"expected ({self.num_transitions},)"
            )
        return replace(self, task_rewards={**self.task_rewards, task: rewards})

    def episode(self, index: int) -> slice:
        """The transitions of episode ``index``."""
        return slice(int(self.episode_starts[index]), int(self.episode_starts[index + 1]))

    def feature_episodes(self, columns: Sequence[str]) -> list[np.ndarray]:
        """Each episode's info ``columns`` side by side (e.g. its path in feature space),
        ``[T, len(columns)]`` per episode."""
        values = np.stack([self.infos[c] for c in columns], axis=-1)  # [N, c]
        return [values[self.episode(e)] for e in range(self.num_episodes)]


def dataset_from_episodes(
    name: str, env: str, episodes: Sequence[Episode], metadata: Mapping | None = None
) -> Dataset:
    """Flatten episodes into a :class:`Dataset` (infos shifted to the values after each step)."""
    if not episodes:
        raise UdgError(f"dataset {name} has no episodes")
    for i, episode in enumerate(episodes):
        try:
            episode.validate()
        except UdgError as err:
            raise UdgError(f"dataset {name}, episode {i}: {err}") from None
    info_keys = sorted(episodes[0].infos)
    for i, episode in enumerate(episodes):
        if sorted(episode.infos) != info_keys:
            raise UdgError(f"dataset {name}: episode {i} has info columns unlike episode 0")
    lengths = np.array([len(e) for e in episodes], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    first = episodes[0]

    def gather(get, dtype, trailing=()) -> np.ndarray:
        # One preallocated array filled slice by slice: a single cast-copy per column.
        out = np.empty((starts[-1], *trailing), dtype=dtype)
        for episode, begin, end in zip(episodes, starts[:-1], starts[1:], strict=True):
            out[begin:end] = get(episode)
        return out

    obs_shape, act_shape = first.observations.shape[1:], first.actions.shape[1:]
    return Dataset(
        name=name,
        env=env,
        observations=gather(lambda e: e.observations[:-1], np.float32, obs_shape),
        actions=gather(lambda e: e.actions, np.float32, act_shape),
        next_observations=gather(lambda e: e.observations[1:], np.float32, obs_shape),
        rewards=gather(lambda e: e.rewards, np.float64),
        terminations=gather(lambda e: e.terminations, bool),
        truncations=gather(lambda e: e.truncations, bool),
        infos={k: gather(lambda e, k=k: e.infos[k][1:], np.float64) for k in info_keys},
        episode_starts=starts,
        metadata=dict(metadata or {}),
    )


def check_finite(dataset: Dataset) -> None:
    """Raise :class:`UdgError` naming the first column holding NaN or inf."""
    for column, values in [
        ("observations", dataset.observations),
        ("actions", dataset.actions),
        ("next_observations", dataset.next_observations),
        ("rewards", dataset.rewards),
        *dataset.infos.items(),
        *dataset.task_rewards.items(),
    ]:
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise UdgError(
                f"dataset {dataset.name} has NaN or inf in column {column!r} (transition {row})"
            )


def concatenate(datasets: Sequence[Dataset], name: str | None = None) -> Dataset:
    """The union of datasets of one environment, episodes kept whole and in order."""
    if not datasets:
        raise UdgError("nothing to concatenate: no datasets")
    first = datasets[0]
    for d in datasets[1:]:
        if d.env != first.env:
            raise UdgError(f"cannot mix datasets of envs {first.env} and {d.env}")
        if d.obs_dim != first.obs_dim or d.act_dim != first.act_dim:
            raise UdgError(
                f"cannot mix dataset {d.name} (obs {d.obs_dim}, act {d.act_dim}) with "
                f"{first.name} (obs {first.obs_dim}, act {first.act_dim})"
            )
    if len(datasets) == 1 and name is None:
        return first
    info_keys = set.intersection(*(set(d.infos) for d in datasets))
    task_keys = set.intersection(*(set(d.task_rewards) for d in datasets))
    offsets = np.cumsum([0] + [d.num_transitions for d in datasets])
    starts = np.concatenate(
        [d.episode_starts[:-1] + off for d, off in zip(datasets, offsets, strict=False)]
        + [[offsets[-1]]]
    )
    return Dataset(
        name=name or "+".join(d.name for d in datasets),
        env=first.env,
        observations=np.concatenate([d.observations for d in datasets]),
        actions=np.concatenate([d.actions for d in datasets]),
        next_observations=np.concatenate([d.next_observations for d in datasets]),
        rewards=np.concatenate([d.rewards for d in datasets]),
        terminations=np.concatenate([d.terminations for d in datasets]),
        truncations=np.concatenate([d.truncations for d in datasets]),
        infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in sorted(info_keys)},
        episode_starts=starts.astype(np.int64),
        task_rewards={
            k: np.concatenate([d.task_rewards[k] for d in datasets]) for k in sorted(task_keys)
        },
        metadata={"sources": [d.name for d in datasets]},
    )

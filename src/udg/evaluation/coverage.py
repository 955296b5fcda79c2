"""Coverage diagnostics of rooms datasets: which rooms the data reaches, and how much of it
leaves the start room.

On the rooms world (:mod:`udg.envs.rooms`) the best return of every task lies beyond a doorway,
and uniformly random actions almost never pass one; so where a dataset's transitions end up is
the first thing to read beside the return that offline RL gets from it. A transition's position
is that after the step, ``next_observations[:, :2]`` (the observation is ``(x, y, v_x, v_y)``),
so a dataset whose last step goes through a doorway counts as reaching the room beyond.
"""

from __future__ import annotations

import numpy as np

from udg.data.dataset import Dataset
from udg.envs import rooms
from udg.errors import UdgError

NUM_ROOMS = 9
"""The rooms world has 3 x 3 rooms, numbered by :func:`room_of`."""


def room_of(xy: np.ndarray) -> np.ndarray:
    """The room of each position ``xy`` (``[N, 2]``); ``[N]`` int in ``0..8``.

    Row-major from the south-west: ``room = 3 * row + column``, row 0 the south
    (``y < -START_HALF``), column 0 the west (``x < -START_HALF``). So 0 is the south-west room,
    2 the south-east, 4 the start room (:data:`udg.envs.rooms.START_ROOM`), 6 the north-west and
    8 the north-east. The inner walls lie on ``|x| = START_HALF`` and ``|y| = START_HALF``; a
    point exactly on such a line (which the env never produces) counts to the room east or
    north of it.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"positions must have shape [N, 2], got {xy.shape}")
    return rooms.room_of(xy[:, 0], xy[:, 1]).astype(np.int64)  # [N]


def next_positions(dataset: Dataset) -> np.ndarray:
    """The position after each transition of a rooms dataset; ``[N, 2]``."""
    if dataset.env != "rooms":
        raise UdgError(
            f"coverage diagnostics read the rooms world's positions; dataset {dataset.name} is "
            f"of env {dataset.env!r}"
        )
    return dataset.next_observations[:, :2].astype(np.float64)


def outside_start_fraction(dataset: Dataset) -> float:
    """The fraction of transitions whose position after the step lies outside the start room."""
    if dataset.num_transitions == 0:
        raise UdgError(f"dataset {dataset.name} has no transitions")
    return float(np.mean(room_of(next_positions(dataset)) != rooms.START_ROOM))


def rooms_reached(dataset: Dataset) -> list[int]:
    """The rooms (:func:`room_of` ids) that some transition's next position lies in, sorted."""
    return sorted(int(r) for r in np.unique(room_of(next_positions(dataset))))


def room_counts(dataset: Dataset) -> np.ndarray:
    """How many transitions end in each room; ``[9]`` indexed by room id."""
    return np.bincount(room_of(next_positions(dataset)), minlength=NUM_ROOMS)

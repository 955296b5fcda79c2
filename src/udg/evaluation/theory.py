"""The theory check: Wasserstein-1 distance from each dataset to expert data, and its link
to offline return.

The paper's bound says MOPO's return falls as ``W1(rho_data, rho_expert)`` grows. For every
(dataset, task) pair this module computes the exact W1 (POT, uniform weights, Euclidean ground
metric, subsampled) between the dataset's state-action distribution (observation concatenated
with action, raw units) and that of expert data for the task (the last episodes of a SAC agent
trained on it), the Spearman rank correlation of W1 with MOPO's return over all pairs, and the
worst-case proxy ``max over tasks of min over buffers of W1`` of a collection of buffers.
The same W1 is also given in the diversity feature space (chosen observation entries, e.g. the
rooms world's ``(x, y)``, on the very same subsampled transitions), and the correlation within
each task as well as pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from udg.data.dataset import Dataset
from udg.diversity.exact import exact_w1


def state_actions(dataset: Dataset) -> np.ndarray:
    """Observation and action of every transition; ``[N, obs_dim + act_dim]``."""
    return np.concatenate([dataset.observations, dataset.actions], axis=1).astype(np.float64)


def last_episodes(dataset: Dataset, count: int) -> np.ndarray:
    """State-actions of the last ``count`` episodes (a trained agent's near-final policy)."""
    first = max(0, dataset.num_episodes - count)
    start = int(dataset.episode_starts[first])
    return state_actions(dataset)[start:]


def w1_to_expert(
    dataset: Dataset, expert: np.ndarray, max_points: int = 1000, seed: int = 0
) -> float:
    """Exact W1 between a dataset's state-actions and expert state-actions (subsampled)."""
    rng = np.random.default_rng(seed)
    return exact_w1(state_actions(dataset), expert, max_points=max_points, rng=rng)


def w1_features_to_expert(
    dataset: Dataset,
    expert: np.ndarray,
    seed: int = 0,
    columns: Sequence[int] = (0, 1),
    max_points: int = 1000,
) -> float:
    """Exact W1 between a dataset and expert data in feature space: the observation entries
    ``columns`` only (default ``(0, 1)``, the position of ``point`` and ``rooms``).

    ``expert`` holds rows that begin with the observation (:func:`last_episodes`'s
    state-actions, or plain observations). The subsample is :func:`w1_to_expert`'s at the same
    ``seed`` and ``max_points``, so the two distances are of the same transitions."""
    columns = list(columns)
    if not columns or max(columns) >= dataset.obs_dim or min(columns) < 0:
        raise ValueError(
            f"feature columns {columns} must index the observation (dimension {dataset.obs_dim})"
        )
    rng = np.random.default_rng(seed)
    data = state_actions(dataset)[:, columns]  # [N, f]
    return exact_w1(data, np.asarray(expert)[:, columns], max_points=max_points, rng=rng)


def spearman(w1: Sequence[float], returns: Sequence[float]) -> dict:
    """Spearman's rank correlation of W1 with return (the theory predicts it negative)."""
    if len(w1) < 3:
        return {"rho": float("nan"), "p_value": float("nan"), "pairs": len(w1)}
    result = spearmanr(w1, returns)
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "pairs": len(w1)}


def worst_case_proxy(w1: Mapping[str, Mapping[str, float]]) -> float:
    """``max over tasks of min over buffers of W1``; ``w1[task][buffer]``."""
    return float(max(min(per_buffer.values()) for per_buffer in w1.values()))


def spearman_within(
    pairs: Sequence[Mapping], key: str = "task", w1: str = "w1", value: str = "return"
) -> dict[str, dict]:
    """:func:`spearman` of ``pair[w1]`` with ``pair[value]`` among the pairs of each
    ``pair[key]`` (e.g. each task's five data columns); ``{group: spearman}``, groups in first
    appearance order."""
    groups: dict[str, list[Mapping]] = {}
    for pair in pairs:
        groups.setdefault(pair[key], []).append(pair)
    return {
        group: spearman([p[w1] for p in members], [p[value] for p in members])
        for group, members in groups.items()
    }

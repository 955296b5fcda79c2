"""The theory check: Wasserstein-1 distance from each dataset to expert data, and its link
to offline return.

The paper's bound says MOPO's return falls as ``W1(rho_data, rho_expert)`` grows. For every
(dataset, task) pair this module computes the exact W1 (POT, uniform weights, Euclidean ground
metric, subsampled) between the dataset's state-action distribution (observation concatenated
with action, raw units) and that of expert data for the task (the last episodes of a SAC agent
trained on it), the Spearman rank correlation of W1 with MOPO's return over all pairs, and the
worst-case proxy ``max over tasks of min over buffers of W1`` of a collection of buffers.
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


def spearman(w1: Sequence[float], returns: Sequence[float]) -> dict:
    """Spearman's rank correlation of W1 with return (the theory predicts it negative)."""
    if len(w1) < 3:
        return {"rho": float("nan"), "p_value": float("nan"), "pairs": len(w1)}
    result = spearmanr(w1, returns)
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "pairs": len(w1)}


def worst_case_proxy(w1: Mapping[str, Mapping[str, float]]) -> float:
    """``max over tasks of min over buffers of W1``; ``w1[task][buffer]``."""
    return float(max(min(per_buffer.values()) for per_buffer in w1.values()))

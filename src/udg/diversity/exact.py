"""Exact Wasserstein-1 distances between empirical sets, for analysis (not for training).

The diversity reward only estimates W1 through projected monotone plans; this module gives
the ground truth with an optimal-transport solver (POT's network simplex): uniform weights,
Euclidean ground metric, each set subsampled without replacement to a configurable size so
that the O(n^2) cost matrix and the O(n^3)-ish solver stay affordable. NumPy only, float64.
"""

from __future__ import annotations

import numpy as np
import ot

_MAX_SOLVER_ITERATIONS = 10_000_000
"""Network-simplex iteration cap; POT's default (1e5) stops early above ~1000 points a side."""


def _validated(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, f], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _subsample(x: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[0] <= max_points:
        return x
    return x[rng.choice(x.shape[0], size=max_points, replace=False)]


def exact_w1(
    x: np.ndarray,
    y: np.ndarray,
    max_points: int = 2000,
    rng: np.random.Generator | None = None,
) -> float:
    """W1 between the uniform empirical measures on x [n, f] and y [m, f] (Euclidean cost).

    Sets larger than `max_points` are subsampled without replacement with `rng`
    (default: np.random.default_rng(0), so repeated calls agree).
    """
    x, y = _validated(x, "x"), _validated(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same feature dim, got {x.shape[1]} and {y.shape[1]}"
        )
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    rng = np.random.default_rng(0) if rng is None else rng
    x, y = _subsample(x, max_points, rng), _subsample(y, max_points, rng)
    cost = ot.dist(x, y, metric="euclidean")  # [n, m]
    weights_x = np.full(x.shape[0], 1.0 / x.shape[0])
    weights_y = np.full(y.shape[0], 1.0 / y.shape[0])
    return float(ot.emd2(weights_x, weights_y, cost, numItermax=_MAX_SOLVER_ITERATIONS))


def pairwise_exact_w1(
    sets: list[np.ndarray],
    max_points: int = 2000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Symmetric [K, K] matrix of exact_w1 between every pair of sets; the diagonal is 0."""
    if len(sets) == 0:
        raise ValueError("sets must contain at least one array")
    sets = [_validated(s, f"sets[{i}]") for i, s in enumerate(sets)]
    dims = {s.shape[1] for s in sets}
    if len(dims) != 1:
        raise ValueError(f"all sets must have the same feature dim, got {sorted(dims)}")
    rng = np.random.default_rng(0) if rng is None else rng
    num_sets = len(sets)
    distances = np.zeros((num_sets, num_sets))  # [K, K]
    for i in range(num_sets):
        for j in range(i + 1, num_sets):
            distances[i, j] = distances[j, i] = exact_w1(sets[i], sets[j], max_points, rng)
    return distances

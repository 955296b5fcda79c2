"""Online reference rows and the normalised score; rooms coverage diagnostics; W1 in feature
space and Spearman within each task."""

from __future__ import annotations

import numpy as np
import pytest

from udg.envs import get_task
from udg.errors import UdgError
from udg.evaluation import reference

ANGLE_0 = get_task("rooms-angle-0")


def push_east(obs: np.ndarray) -> np.ndarray:
    """A scripted 'expert' for rooms-angle-0: full push along +x; ``[n, 2]``."""
    return np.tile(np.array([1.0, 0.0], np.float32), (len(obs), 1))


def test_zero_action_on_rooms_earns_nothing():
    # The point starts at rest and no force moves it: every displacement and cost is zero.
    returns = reference.zero_action_returns(ANGLE_0, episodes=3, seed=0)
    assert returns.shape == (3,)
    np.testing.assert_allclose(returns, 0.0, atol=1e-6)


def test_random_returns_are_finite_and_reproducible_by_seed():
    a = reference.random_policy_returns(ANGLE_0, episodes=4, seed=1)
    b = reference.random_policy_returns(ANGLE_0, episodes=4, seed=1)
    c = reference.random_policy_returns(ANGLE_0, episodes=4, seed=2)
    assert a.shape == (4,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # The random walk stays near the start and pays about 2/3 * 0.01 a step in control cost.
    assert np.all(np.abs(a) < 2.5)


def test_normalised_score_is_0_at_random_and_100_at_expert():
    assert reference.normalised_score(-0.3, -0.3, 1.7) == 0.0
    assert reference.normalised_score(1.7, -0.3, 1.7) == pytest.approx(100.0)
    assert reference.normalised_score(0.7, -0.3, 1.7) == pytest.approx(50.0)
    np.testing.assert_allclose(reference.normalised_score([-0.3, 1.7], -0.3, 1.7), [0, 100])
    with pytest.raises(UdgError, match="expert's return equals the random policy's"):
        reference.normalised_score(1.0, 2.0, 2.0)
    with pytest.raises(UdgError, match="finite references"):
        reference.normalised_score(1.0, float("nan"), 2.0)


def test_reference_rows_of_a_policy_and_of_returns_agree():
    rows = reference.reference_rows(ANGLE_0, push_east, 0.25, episodes=3, seed=0)
    assert set(rows) == {"zero", "random", "expert", "data"}
    assert rows["zero"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # The straight push ends at the start room's east wall: about 2.5 along x, minus 1 of cost.
    assert rows["expert"]["mean"] == pytest.approx(1.5, abs=0.15)
    assert rows["expert"]["std"] < 0.1 and rows["expert"]["episodes"] == 3
    assert rows["random"]["normalised"] == 0.0
    assert rows["expert"]["normalised"] == pytest.approx(100.0)
    assert rows["data"] == {
        "mean": 0.25,
        "std": None,
        "episodes": None,
        "normalised": reference.normalised_score(
            0.25, rows["random"]["mean"], rows["expert"]["mean"]
        ),
    }
    measured = np.full(3, rows["expert"]["mean"])
    again = reference.reference_rows(ANGLE_0, measured, [0.0, 0.5], episodes=3, seed=0)
    assert again["random"] == rows["random"] and again["zero"] == rows["zero"]
    assert again["data"]["mean"] == 0.25 and again["data"]["std"] == pytest.approx(0.25)


def test_reference_rows_without_a_scale_have_no_normalised_score():
    rows = reference.reference_rows(ANGLE_0, [0.0, 0.0], 0.0, episodes=1, seed=0)
    random = rows["random"]["mean"]
    rows = reference.reference_rows(ANGLE_0, [random], 0.0, episodes=1, seed=0)
    assert all(row["normalised"] is None for row in rows.values())

"""Online reference rows and the normalised score; rooms coverage diagnostics; W1 in feature
space and Spearman within each task."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from udg.data.dataset import Episode, dataset_from_episodes
from udg.envs import get_task, rooms
from udg.errors import UdgError
from udg.evaluation import coverage, reference, theory
from udg.evaluation.coverage import room_of

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


# --- rooms coverage ------------------------------------------------------------------------


def rooms_dataset(*paths, actions: float = 0.0):
    """A hand-made rooms dataset, one episode per path of positions (velocities zero)."""
    episodes = []
    for path in paths:
        xy = np.asarray(path, np.float64)  # [T+1, 2]
        t = len(xy) - 1
        episodes.append(
            Episode(
                observations=np.concatenate([xy, np.zeros_like(xy)], axis=1),  # [T+1, 4]
                actions=np.full((t, 2), actions),
                rewards=np.zeros(t),
                terminations=np.zeros(t, bool),
                truncations=np.zeros(t, bool),
            )
        )
    return dataset_from_episodes("hand", "rooms", episodes)


def test_room_of_the_room_centres_is_row_major_from_the_south_west():
    centre = (rooms.START_HALF + rooms.ARENA_HALF) / 2  # 4.0
    centres = [(x, y) for y in (-centre, 0.0, centre) for x in (-centre, 0.0, centre)]
    np.testing.assert_array_equal(room_of(np.array(centres)), np.arange(9))
    assert room_of(np.zeros((1, 2)))[0] == rooms.START_ROOM


def test_room_of_points_near_the_walls():
    near = {
        (2.49, 0.0): 4,
        (2.51, 0.0): 5,
        (-2.49, 0.0): 4,
        (-2.51, 0.0): 3,
        (0.0, 2.49): 4,
        (0.0, 2.51): 7,
        (0.0, -2.51): 1,
        (-2.49, 2.49): 4,  # the start room's north-west corner
        (2.51, -2.51): 2,
        (-2.51, 2.51): 6,
        (5.49, 5.49): 8,  # the arena's corners
        (-5.49, -5.49): 0,
    }
    np.testing.assert_array_equal(room_of(np.array(list(near))), list(near.values()))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        room_of(np.zeros((3, 4)))


def test_outside_start_fraction_and_rooms_reached_of_a_hand_made_dataset():
    # Next positions: (1, 0) start, (3, 0) east, (3, 3) north-east, (0, 0) start; then (-4, -4)
    # south-west and (0, 1) start. The first episode's reset (0, 0) is no transition's end.
    data = rooms_dataset([(0, 0), (1, 0), (3, 0), (3, 3), (0, 0)], [(0, 0), (-4, -4), (0, 1)])
    assert coverage.outside_start_fraction(data) == pytest.approx(3 / 6)
    assert coverage.rooms_reached(data) == [0, 4, 5, 8]
    np.testing.assert_array_equal(coverage.room_counts(data), [1, 0, 0, 0, 3, 1, 0, 0, 1])
    inside = rooms_dataset([(0, 0), (1, 1), (-2, 2)])
    assert coverage.outside_start_fraction(inside) == 0.0
    assert coverage.rooms_reached(inside) == [rooms.START_ROOM]


def test_coverage_refuses_datasets_of_other_envs():
    point = replace(rooms_dataset([(0, 0), (1, 0)]), env="point")
    with pytest.raises(UdgError, match="of env 'point'"):
        coverage.outside_start_fraction(point)


# --- the theory check in feature space -----------------------------------------------------


def test_w1_in_feature_space_equals_a_hand_computation():
    # Data positions (observations, not next ones) (0, 0) and (1, 0); expert positions (3, 4)
    # and (1, 0) with velocities and actions far off, which the feature space must ignore.
    # Matchings: (0,0)-(1,0) + (1,0)-(3,4) costs (1 + sqrt 20) / 2 = 2.74; (0,0)-(3,4) +
    # (1,0)-(1,0) costs (5 + 0) / 2 = 2.5, the optimum.
    data = rooms_dataset([(0, 0), (1, 0), (2, 2)])
    expert = np.array([[3.0, 4.0, 9.0, -9.0, 1.0, 1.0], [1.0, 0.0, -7.0, 7.0, -1.0, 1.0]])
    assert theory.w1_features_to_expert(data, expert, seed=0) == pytest.approx(2.5)
    # x alone: {0, 1} to {3, 1}, (1 + 2) / 2.
    assert theory.w1_features_to_expert(data, expert, seed=0, columns=(0,)) == pytest.approx(1.5)
    # Plain observations as expert rows give the same distance.
    assert theory.w1_features_to_expert(data, expert[:, :4], seed=0) == pytest.approx(2.5)
    assert theory.w1_to_expert(data, expert, seed=0) > 2.5
    with pytest.raises(ValueError, match="must index the observation"):
        theory.w1_features_to_expert(data, expert, columns=(4,))


def test_w1_in_feature_space_subsamples_as_w1_to_expert_does():
    # With zero actions on both sides, all four observation entries are the whole state-action
    # distance; equal values at max_points below the set sizes mean the same subsample.
    rng = np.random.default_rng(3)
    data = rooms_dataset(rng.uniform(-2, 2, (40, 2)))
    expert = np.concatenate([rng.uniform(0, 3, (30, 2)), np.zeros((30, 4))], axis=1)
    for seed in (0, 1):
        full = theory.w1_to_expert(data, expert, max_points=7, seed=seed)
        features = theory.w1_features_to_expert(
            data, expert, seed=seed, columns=(0, 1, 2, 3), max_points=7
        )
        assert features == pytest.approx(full, abs=1e-12)


def test_spearman_within_each_task():
    pairs = [
        {"task": "a", "w1": 1.0, "return": 3.0},
        {"task": "b", "w1": 1.0, "return": 1.0},
        {"task": "a", "w1": 2.0, "return": 2.0},
        {"task": "b", "w1": 2.0, "return": 2.0},
        {"task": "a", "w1": 3.0, "return": 1.0},
        {"task": "b", "w1": 3.0, "return": 4.0},
        {"task": "b", "w1": 4.0, "return": 3.0},
        {"task": "c", "w1": 1.0, "return": 0.0},
        {"task": "c", "w1": 2.0, "return": 1.0},
    ]
    within = theory.spearman_within(pairs)
    assert list(within) == ["a", "b", "c"]
    assert within["a"]["rho"] == pytest.approx(-1.0) and within["a"]["pairs"] == 3
    assert within["b"]["rho"] == pytest.approx(0.8) and within["b"]["pairs"] == 4
    assert np.isnan(within["c"]["rho"]) and within["c"]["pairs"] == 2
    scored = [{**p, "score": -p["return"]} for p in pairs]
    assert theory.spearman_within(scored, value="score")["a"]["rho"] == pytest.approx(1.0)
    grouped = [{**p, "env": "rooms" if p["task"] != "c" else "point"} for p in pairs]
    assert {k: v["pairs"] for k, v in theory.spearman_within(grouped, key="env").items()} == {
        "rooms": 7,
        "point": 2,
    }

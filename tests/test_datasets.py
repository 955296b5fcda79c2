"""Datasets: Minari round trips, relabel/rank/select semantics, and every kind of bad input."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import gymnasium as gym
import minari
import numpy as np
import pytest

from udg.data.dataset import Episode, concatenate, dataset_from_episodes
from udg.data.minari_io import (
    dataset_id_for,
    find_datasets,
    load_dataset,
    load_datasets,
    write_dataset,
)
from udg.data.relabel import parse_selection, rank, relabel, score, select
from udg.envs import get_task, make_env
from udg.errors import UdgError


def test_minari_round_trip(tmp_path, point_episodes):
    path = write_dataset(point_episodes, tmp_path, dataset_id_for("point", "rt"), "point")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        loaded_by_minari = minari.load_dataset("udg/point/rt-v0")
        assert loaded_by_minari.total_steps == sum(len(e) for e in point_episodes)
        assert loaded_by_minari.recover_environment().spec.id == "udg/Point-v0"
        first = next(loaded_by_minari.iterate_episodes())
        np.testing.assert_array_equal(first.observations, point_episodes[0].observations)
        assert set(first.infos) == set(point_episodes[0].infos)
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    data = load_dataset(path)
    assert data.env == "point" and data.name == "udg/point/rt-v0"
    assert data.num_episodes == len(point_episodes)
    ep = point_episodes[1]
    sl = data.episode(1)
    np.testing.assert_allclose(data.observations[sl], ep.observations[:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[sl], ep.observations[1:], rtol=1e-6)
    np.testing.assert_array_equal(data.infos["x_velocity"][sl], ep.infos["x_velocity"][1:])
    np.testing.assert_allclose(data.episode_returns(), [e.rewards.sum() for e in point_episodes])


def test_relabel_adds_a_column_and_keeps_collected_rewards(point_root):
    data = load_dataset(point_root / "udg/point/a-v0")
    collected = data.rewards.copy()
    task = get_task("point-angle-90")
    relabelled = relabel(data, task)
    np.testing.assert_array_equal(relabelled.rewards, collected)
    assert "point-angle-90" not in data.task_rewards
    np.testing.assert_allclose(
        relabelled.task_rewards["point-angle-90"],
        data.infos["y_velocity"] - 0.1 * np.sum(data.actions.astype(np.float64) ** 2, axis=1),
    )
    # The collected reward of the point env is point-angle-0's.
    np.testing.assert_allclose(
        relabel(data, get_task("point-angle-0")).task_rewards["point-angle-0"],
        collected,
        atol=1e-6,
    )


def test_rank_orders_by_mean_relabelled_return(point_root):
    datasets = load_datasets([point_root])
    assert [d.name for d in datasets] == [f"udg/point/{n}-v0" for n in "abc"]
    east = rank(datasets, get_task("point-angle-0"))
    assert [r.name.split("/")[-1] for r in east] == ["b-v0", "a-v0", "c-v0"]
    west = rank(datasets, get_task("point-angle-180"))
    assert [r.name.split("/")[-1] for r in west] == ["c-v0", "a-v0", "b-v0"]
    assert east[0].score == pytest.approx(score(datasets[1], get_task("point-angle-0")))
    assert east[0].score - east[1].score == pytest.approx(50.0, rel=1e-6)  # shift 1 x 50 steps
    # Per step the same shift is 1: 50-step episodes.
    assert east[0].reward_per_step - east[1].reward_per_step == pytest.approx(1.0, rel=1e-6)
    assert east[0].reward_per_step == pytest.approx(
        np.mean(relabel(datasets[1], get_task("point-angle-0")).task_rewards["point-angle-0"])
    )


def test_select_semantics(point_root):
    datasets = load_datasets([point_root])
    task = get_task("point-angle-0")
    top1, ranking = select(datasets, task, "top1")
    assert top1.num_transitions == datasets[1].num_transitions
    np.testing.assert_array_equal(top1.infos["x_velocity"], datasets[1].infos["x_velocity"])
    top2, _ = select(datasets, task, "top2")
    assert top2.num_transitions == 2 * datasets[0].num_transitions
    assert top2.num_episodes == 2 * datasets[0].num_episodes
    assert select(datasets, task, "top:2")[0].num_transitions == top2.num_transitions
    everything, _ = select(datasets, task, "all")
    assert everything.num_transitions == sum(d.num_transitions for d in datasets)
    # The union keeps the order the datasets were given (here, the best is the second): the
    # same datasets chosen for another task are the same data.
    n = datasets[0].num_episodes
    np.testing.assert_array_equal(
        everything.episode_returns(everything.task_rewards[task.name])[n : 2 * n],
        datasets[1].episode_returns(top1.task_rewards[task.name]),
    )
    north, _ = select(datasets, get_task("point-angle-90"), "all")
    np.testing.assert_array_equal(north.observations, everything.observations)
    assert top2.name.startswith(f"top2({datasets[1].name}+")  # named best first
    assert [r.rank for r in ranking] == [1, 2, 3]


@pytest.mark.parametrize("rule", ["top0", "top", "best", "top:-1", "all2"])
def test_bad_selection_rules(rule):
    with pytest.raises(UdgError, match="unknown selection"):
        parse_selection(rule)


def test_selection_larger_than_available(point_root):
    with pytest.raises(UdgError, match="needs 5 datasets but only 3"):
        select(load_datasets([point_root]), get_task("point-angle-0"), "top:5")
    with pytest.raises(UdgError, match="no datasets"):
        select([], get_task("point-angle-0"), "top1")


def test_concatenate_keeps_episode_boundaries(point_episodes):
    a = dataset_from_episodes("a", "point", point_episodes[:3])
    b = dataset_from_episodes("b", "point", point_episodes[3:5])
    ab = concatenate([a, b])
    assert ab.num_episodes == 5
    np.testing.assert_allclose(ab.episode_returns(), [e.rewards.sum() for e in point_episodes[:5]])
    other = replace(b, env="ant")
    with pytest.raises(UdgError, match="cannot mix"):
        concatenate([a, other])


def test_task_of_another_env_is_refused(point_root):
    data = load_dataset(point_root / "udg/point/a-v0")
    with pytest.raises(UdgError, match="is for env ant"):
        relabel(data, get_task("ant-angle-0"))
    with pytest.raises(UdgError, match="is for env point, not ant"):
        load_dataset(point_root / "udg/point/a-v0", expected_env="ant")


def _write_with_minari(root, dataset_id, env_id, episodes, observation_space=None):
    from minari.data_collector import EpisodeBuffer

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        minari.create_dataset_from_buffers(
            dataset_id,
            [
                EpisodeBuffer(
                    observations=e["observations"],
                    actions=e["actions"],
                    rewards=e["rewards"],
                    terminations=e["terminations"],
                    truncations=e["truncations"],
                    infos=e.get("infos"),
                )
                for e in episodes
            ],
            env=env_id,
            observation_space=observation_space,
            algorithm_name="test",
        )
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    return root / dataset_id


def _raw_episode(t, obs_dim, act_dim, infos=None):
    rng = np.random.default_rng(0)
    return {
        "observations": rng.standard_normal((t + 1, obs_dim)),
        "actions": rng.uniform(-1, 1, (t, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(t),
        "terminations": np.zeros(t, bool),
        "truncations": np.arange(t) == t - 1,
        **({"infos": infos} if infos else {}),
    }


def test_foreign_minari_dataset_of_known_env_loads(tmp_path):
    path = _write_with_minari(
        tmp_path,
        "other/cheetah-v0",
        "HalfCheetah-v5",
        [_raw_episode(20, 17, 6), _raw_episode(10, 17, 6)],
    )
    data = load_dataset(path)
    assert data.env == "halfcheetah" and data.num_transitions == 30
    # It stores no udg columns: those its observations (and its rewards) determine are derived.
    np.testing.assert_allclose(
        data.columns()["z_position"], data.next_observations[:, 0], rtol=1e-6
    )
    assert "x_position" not in data.columns()  # the observation leaves it out


def test_a_plain_halfcheetah_dataset_relabels_for_cheetah_run_from_its_rewards(tmp_path):
    """A dataset of Gymnasium's own HalfCheetah-v5 stores no udg columns; its rewards are the
    env's (v_x - 0.1 |a|^2), so x_velocity follows, and relabelling for cheetah-run gives the
    stored rewards back."""
    env = make_env("halfcheetah", max_episode_steps=30)  # HalfCheetah-v5; its infos dropped
    rng = np.random.default_rng(0)
    episodes = []
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [],
              "truncations": []}  # fmt: skip
        done = False
        while not done:
            action = rng.uniform(-1, 1, 6).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(
                ("observations", "actions", "rewards", "terminations", "truncations"),
                (obs, action, reward, terminated, truncated),
                strict=True,
            ):
                ep[key].append(value)
            done = terminated or truncated
        episodes.append({k: np.asarray(v) for k, v in ep.items()})
    path = _write_with_minari(tmp_path, "plain/cheetah-v0", "HalfCheetah-v5", episodes)
    data = load_dataset(path)
    stored = np.concatenate([e["rewards"] for e in episodes])
    np.testing.assert_allclose(relabel(data, get_task("cheetah-run")).rewards, stored, rtol=1e-6)


def test_observation_shape_mismatch_is_refused(tmp_path):
    space = gym.spaces.Box(-np.inf, np.inf, (27,), np.float64)
    path = _write_with_minari(
        tmp_path, "other/ant-v0", "Ant-v5", [_raw_episode(5, 27, 8)], observation_space=space
    )
    with pytest.raises(UdgError, match=r"observations \(27,\).*env ant has \(105,\)"):
        load_dataset(path)


def test_unknown_environment_is_refused(tmp_path):
    path = _write_with_minari(tmp_path, "other/pend-v0", "Pendulum-v1", [_raw_episode(5, 3, 1)])
    with pytest.raises(UdgError, match="unknown environment id 'Pendulum-v1'"):
        load_dataset(path)


def test_nan_in_stored_data_is_refused(tmp_path):
    episode = _raw_episode(5, 4, 2)
    episode["observations"][3, 1] = np.nan
    path = _write_with_minari(tmp_path, "other/nan-v0", "udg/Point-v0", [episode])
    with pytest.raises(UdgError, match="episode 0: episode column 'observations' holds NaN or inf"):
        load_dataset(path)


def test_nan_is_never_written(tmp_path, point_episodes):
    bad = replace(point_episodes[0], rewards=np.full(len(point_episodes[0]), np.nan))
    with pytest.raises(UdgError, match="NaN"):
        write_dataset([bad], tmp_path, dataset_id_for("point", "nan"), "point")
    assert not (tmp_path / "udg/point/nan-v0").exists()


def test_truncated_file_is_refused(point_root):
    data_file = point_root / "udg/point/a-v0/data/main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:3000])
    with pytest.raises(UdgError, match="truncated or corrupt"):
        load_dataset(point_root / "udg/point/a-v0")


def test_corrupt_metadata_is_refused(point_root):
    (point_root / "udg/point/b-v0/data/metadata.json").write_text("{not json")
    with pytest.raises(UdgError, match="cannot read"):
        load_dataset(point_root / "udg/point/b-v0")


def test_failed_write_leaves_nothing(tmp_path, point_episodes, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", explode)
    with pytest.raises(RuntimeError):
        write_dataset(point_episodes, tmp_path, dataset_id_for("point", "x"), "point")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_existing_dataset_is_not_overwritten(point_root, point_episodes):
    before = (point_root / "udg/point/a-v0/data/metadata.json").read_text()
    with pytest.raises(UdgError, match="exists already"):
        write_dataset(point_episodes, point_root, dataset_id_for("point", "a"), "point")
    assert (point_root / "udg/point/a-v0/data/metadata.json").read_text() == before
    assert json.loads(before)["dataset_id"] == "udg/point/a-v0"


def test_episode_validation():
    good = Episode(
        np.zeros((3, 4)),
        np.zeros((2, 2)),
        np.zeros(2),
        np.zeros(2, bool),
        np.zeros(2, bool),
        {"x_velocity": np.zeros(3)},
    )
    good.validate()
    with pytest.raises(UdgError, match="3 observations for 3 actions"):
        replace(good, actions=np.zeros((3, 2))).validate()
    with pytest.raises(UdgError, match="info x_velocity has length 2"):
        replace(good, infos={"x_velocity": np.zeros(2)}).validate()


def test_find_datasets_errors(tmp_path):
    with pytest.raises(UdgError, match="no such file"):
        find_datasets([tmp_path / "missing"])
    with pytest.raises(UdgError, match="no Minari datasets"):
        find_datasets([tmp_path])


def test_episode_arrays_round_trip(point_episodes):
    from udg.data.episode_arrays import episode_arrays, episodes_from_arrays

    arrays = {f"a/{k}": v for k, v in episode_arrays(point_episodes[:4]).items()}
    back = episodes_from_arrays(arrays, "a/")
    assert len(back) == 4
    for a, b in zip(point_episodes[:4], back, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        assert set(a.infos) == set(b.infos)
        np.testing.assert_array_equal(a.infos["x_velocity"], b.infos["x_velocity"])

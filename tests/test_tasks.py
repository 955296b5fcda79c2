"""Tasks: parsing, and relabelling collected data reproduces the environments' own rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from udg.data.collect import collect_episodes
from udg.data.dataset import dataset_from_episodes
from udg.envs import get_task, make_env
from udg.errors import UdgError


def _collect(env_name: str, steps: int, seed: int):
    env = make_env(env_name, max_episode_steps=200)
    rng = np.random.default_rng(seed)
    policy = lambda _obs: rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)  # noqa: E731
    episodes = collect_episodes(env, policy, steps, seed=seed)
    return dataset_from_episodes(env_name, env_name, episodes)


@pytest.mark.parametrize(
    ("env_name", "task"),
    [
        ("ant", "ant-angle-0"),
        ("halfcheetah", "cheetah-run"),
        ("point", "point-angle-0"),
        ("rooms", "rooms-angle-0"),
    ],
)
def test_relabel_reproduces_environment_reward(env_name, task):
    data = _collect(env_name, 600, seed=1)
    relabelled = get_task(task).reward(data.columns())
    np.testing.assert_allclose(relabelled, data.rewards, atol=1e-5, rtol=0)


def test_ant_angle_rotates_the_forward_term():
    data = _collect("ant", 200, seed=2)
    cols = data.columns()
    r0, r90 = get_task("ant-angle-0").reward(cols), get_task("ant-angle-90").reward(cols)
    np.testing.assert_allclose(r90 - r0, cols["y_velocity"] - cols["x_velocity"], atol=1e-9)
    r60 = get_task("ant-angle-60").reward(cols)
    expected = (
        r0
        + (math.cos(math.pi / 3) - 1) * cols["x_velocity"]
        + math.sin(math.pi / 3) * cols["y_velocity"]
    )
    np.testing.assert_allclose(r60, expected, atol=1e-9)


def test_ant_outward_sums_to_the_distance_from_the_start():
    data = _collect("ant", 400, seed=3)
    cols = data.columns()
    outward = get_task("ant-outward").reward(cols)
    base = get_task("ant-angle-0").reward(cols) - cols["x_velocity"]
    radial = (outward - base) * 0.05  # Ant-v5's dt: the radial distance gained per step
    for start, stop in zip(data.episode_starts[:-1], data.episode_starts[1:], strict=True):
        x, y = cols["x_position"][start:stop], cols["y_position"][start:stop]
        r = np.hypot(x, y)
        far = np.flatnonzero(r > 0.1)  # beyond the clamp radius, the sum telescopes
        if len(far) > 2:
            i, j = far[0], far[-1]
            # to first order: the projection also counts a little sideways motion
            np.testing.assert_allclose(
                radial[start + i + 1 : start + j + 1].sum(), r[j] - r[i], rtol=0.1, atol=0.02
            )


def test_cheetah_jump_and_crawl_follow_the_formula():
    data = _collect("halfcheetah", 200, seed=4)
    cols = data.columns()
    base = np.minimum(cols["x_velocity"], 3.0) - 0.1 * np.sum(cols["actions"] ** 2, axis=1)
    np.testing.assert_allclose(
        get_task("cheetah-jump").reward(cols), base + 15 * cols["z_position"], atol=1e-6
    )
    np.testing.assert_allclose(
        get_task("cheetah-crawl").reward(cols), base - 15 * cols["z_position"], atol=1e-6
    )
    np.testing.assert_allclose(
        get_task("cheetah-cz-15").reward(cols), get_task("cheetah-jump").reward(cols)
    )


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("point-angle-45", "point"),
        ("rooms-angle-300", "rooms"),
        ("rooms-goal-2.5,-1", "rooms"),
        ("ant-angle-300", "ant"),
        ("ant-angle-12.5", "ant"),
        ("ant-angle--30", "ant"),
        ("ant-outward", "ant"),
        ("cheetah-cz-2.5", "halfcheetah"),
        ("cheetah-jump", "halfcheetah"),
        ("cheetah-crawl", "halfcheetah"),
        ("cheetah-run", "halfcheetah"),
    ],
)
def test_task_names_parse(name, env):
    assert get_task(name).env == env


@pytest.mark.parametrize("name", ["ant-angle", "ant-angle-x", "xant-angle-0", "cheetah", ""])
def test_unknown_task_lists_known(name):
    with pytest.raises(UdgError, match="known: ant-outward, cheetah-jump.*ant-angle-<deg>"):
        get_task(name)


def test_missing_column_is_named():
    with pytest.raises(UdgError, match="needs column.*contact_cost"):
        get_task("ant-angle-0").reward(
            {
                "actions": np.zeros((2, 8)),
                "x_velocity": np.zeros(2),
                "y_velocity": np.zeros(2),
                "healthy": np.ones(2),
            }
        )


def test_task_parameters_may_be_written_in_scientific_notation():
    assert get_task("point-angle-6e1").name == "point-angle-60"
    assert get_task("cheetah-cz-1.5E1").name == get_task("cheetah-cz-15").name
    with pytest.raises(UdgError, match="too large to be a finite number"):
        get_task("point-angle-" + "9" * 400)
    with pytest.raises(UdgError, match="such as 60, -1.5 or 1e5"):
        get_task("point-angle-six")

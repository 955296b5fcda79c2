"""Environments: Gymnasium's checker, the info schema, dynamics and termination rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from udg.envs import ENVS, get_env_spec, make_env
from udg.envs.mujoco import ant_terminated
from udg.errors import UdgError

EXPLAINED_WARNINGS = {
    # Velocities (and, on point's open plane, positions) have no bound a Box could state;
    # Gymnasium's own MuJoCo envs declare the same infinite bounds and get the same warning.
    "observation space minimum value is -infinity": ENVS,
    "observation space maximum value is infinity": ENVS,
    # For MuJoCo the env checked is udg's column wrapper (the fixed info schema) over
    # Gymnasium's env, on purpose: the wrapper is what udg adds.
    "is different from the unwrapped version": ("ant", "halfcheetah"),
}


@pytest.mark.parametrize("name", list(ENVS))
def test_env_passes_gymnasium_checker(name):
    """Gymnasium's checker passes, and each warning it gives is one explained above. Its render
    check makes the env in every mode of ``metadata["render_modes"]``, MuJoCo's "human" among
    them, which needs a display; that check runs for the NumPy envs (rgb_array only) and the
    rgb_array frames of every env are tested below."""
    env = make_env(name)
    numpy_env = name in ("point", "rooms")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped if numpy_env else env.env, skip_render_check=not numpy_env)
    for warning in caught:
        reason = [k for k, names in EXPLAINED_WARNINGS.items() if k in str(warning.message)]
        assert reason and name in EXPLAINED_WARNINGS[reason[0]], str(warning.message)


@pytest.mark.parametrize("name", list(ENVS))
def test_info_schema_is_fixed_and_complete(name):
    spec = get_env_spec(name)
    env = make_env(name)
    _, info = env.reset(seed=0)
    assert sorted(info) == sorted(spec.info_columns)
    assert set(spec.feature_columns) <= set(spec.info_columns)
    for _ in range(3):
        _, _, _, _, info = env.step(env.action_space.sample())
        assert sorted(info) == sorted(spec.info_columns)
        assert all(isinstance(v, float) for v in info.values())


def test_point_dynamics_have_inertia_and_terminal_speed():
    env = make_env("point", max_episode_steps=500)
    env.reset(seed=0)
    speeds = []
    for _ in range(200):
        obs, *_ = env.step(np.array([1.0, 0.0], dtype=np.float32))
        speeds.append(obs[2])
    assert 0 < speeds[0] < speeds[10] < speeds[-1]
    unwrapped = env.unwrapped
    assert speeds[-1] == pytest.approx(unwrapped.force_scale / unwrapped.damping, rel=1e-3)


def test_point_time_limit_truncates():
    env = make_env("point", max_episode_steps=7)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(7)]
    assert flags[-1] == (False, True)
    assert all(f == (False, False) for f in flags[:-1])


def test_ant_offline_observation_is_the_obs_without_contact_forces():
    spec = get_env_spec("ant")
    full = make_env("ant")
    truncated = make_env("ant", include_cfrc_ext_in_observation=False)
    obs_full, _ = full.reset(seed=5)
    obs_truncated, _ = truncated.reset(seed=5)
    assert obs_truncated.shape == (spec.offline_observation_dims,)
    np.testing.assert_array_equal(obs_full[: spec.offline_observation_dims], obs_truncated)
    action = np.full(8, 0.3, np.float32)
    np.testing.assert_allclose(
        full.step(action)[0][: spec.offline_observation_dims], truncated.step(action)[0]
    )


def test_ant_termination_rule_matches_env():
    env = make_env("ant", max_episode_steps=300)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    agree = 0
    for _ in range(300):
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 8).astype(np.float32))
        assert bool(ant_terminated(obs[None])[0]) == terminated
        agree += 1
        if terminated or truncated:
            obs, _ = env.reset()
    # Synthetic states on both sides of the healthy band, and a non-finite one.
    states = np.zeros((4, 105))
    states[:, 0] = [0.1, 0.5, 1.2, 0.5]
    states[3, 5] = np.nan
    np.testing.assert_array_equal(ant_terminated(states), [True, False, True, True])


def test_termination_rule_runs_under_jax():
    import jax.numpy as jnp

    states = jnp.zeros((2, 105)).at[:, 0].set(jnp.array([0.1, 0.5]))
    out = ant_terminated(states, xp=jnp)
    assert out.tolist() == [True, False]


def test_unknown_env_lists_known():
    with pytest.raises(UdgError, match="known: ant, halfcheetah, point, rooms"):
        make_env("hopper")
    with pytest.raises(UdgError, match="positive"):
        make_env("point", max_episode_steps=0)


@pytest.mark.parametrize("name", list(ENVS))
def test_every_env_renders_rgb_frames(name):
    """``render_mode="rgb_array"`` gives uint8 frames: the NumPy envs draw a 128 x 128 raster,
    MuJoCo renders off screen (EGL, set in conftest; skipped where the machine has no EGL)."""
    import gymnasium as gym
    from gymnasium.utils.passive_env_checker import env_render_passive_checker

    import udg  # noqa: F401  (registers the ids)

    env = gym.make(ENVS[name].gym_id, render_mode="rgb_array")
    env.reset(seed=0)
    try:
        frame = env.render()
    except Exception as error:  # noqa: BLE001  (MuJoCo's GL backends raise several types)
        if name in ("point", "rooms"):
            raise
        pytest.skip(f"no off-screen OpenGL here: {error}")
    env_render_passive_checker(env)
    expected = (128, 128) if name in ("point", "rooms") else (480, 480)
    assert frame.shape == (*expected, 3) and frame.dtype == np.uint8
    assert (frame != frame.flat[0]).any()  # something is drawn, not a blank frame
    env.close()
    if name in ("point", "rooms"):  # (Gymnasium's MuJoCo envs raise on render without a mode)
        plain = gym.make(ENVS[name].gym_id)
        plain.reset(seed=0)
        assert plain.render() is None  # no render mode: no frame


def test_making_a_mujoco_env_prints_nothing_and_leaves_no_log_file(tmp_path):
    """MuJoCo warns about Gymnasium's HalfCheetah model file (a deprecated attribute); left to
    MuJoCo, the warning went to stderr and into MUJOCO_LOG.TXT in the user's current folder."""
    import subprocess
    import sys

    code = "from udg.envs import make_env; make_env('halfcheetah').reset(seed=0)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []

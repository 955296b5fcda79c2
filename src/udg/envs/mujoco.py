"""Gymnasium's Ant-v5 and HalfCheetah-v5, reporting the columns UDG stores.

The MuJoCo environments are Gymnasium's own, unchanged in dynamics, observation and reward. A thin
wrapper replaces ``info`` with a fixed schema of floats (the same keys at reset and at every
step, as Minari requires) holding every value a task reward or a diversity feature needs: torso
position and velocity and the reward terms that are not functions of the observation and action
(Ant's contact cost and health). Task rewards are then pure functions of stored columns.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

KNOWN_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)
"""MuJoCo's warnings about Gymnasium's own model files, not udg's to mend: dropped."""


class MuJoCoWarning(UserWarning):
    """A warning of the MuJoCo library."""


def _mujoco_warning(message: str) -> None:
    if not any(known in message for known in KNOWN_MUJOCO_WARNINGS):
        warnings.warn(f"MuJoCo: {message}", MuJoCoWarning, stacklevel=2)


def _route_mujoco_warnings() -> None:
    """MuJoCo's warnings as Python warnings: left to MuJoCo, each is printed to stderr and
    appended to MUJOCO_LOG.TXT in the current folder, a file no udg command should leave.
    Called by the entry points, so that ``import udg`` does not load MuJoCo."""
    import mujoco

    mujoco.set_mju_user_warning(_mujoco_warning)


ANT_INFO_COLUMNS = (
    "x_position",
    "y_position",
    "z_position",
    "x_velocity",
    "y_velocity",
    "contact_cost",
    "healthy",
)
HALFCHEETAH_INFO_COLUMNS = ("x_position", "z_position", "pitch", "x_velocity")


class _InfoColumns(gym.Wrapper):
    """Replaces ``info`` by ``self._columns(info, stepped)`` at reset and at every step."""

    def _columns(self, info: dict, stepped: bool) -> dict[str, float]:
        raise NotImplementedError

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._columns(info, stepped=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._columns(info, stepped=True)


class AntColumns(_InfoColumns):
    """Ant-v5 with the info schema :data:`ANT_INFO_COLUMNS`."""

    def _columns(self, info: dict, stepped: bool) -> dict[str, float]:
        qpos = self.unwrapped.data.qpos
        return {
            "x_position": float(qpos[0]),
            "y_position": float(qpos[1]),
            "z_position": float(qpos[2]),
            "x_velocity": float(info["x_velocity"]) if stepped else 0.0,
            "y_velocity": float(info["y_velocity"]) if stepped else 0.0,
            "contact_cost": float(-info["reward_contact"]) if stepped else 0.0,
            "healthy": float(self.unwrapped.is_healthy),
        }


class HalfCheetahColumns(_InfoColumns):
    """HalfCheetah-v5 with the info schema :data:`HALFCHEETAH_INFO_COLUMNS`."""

    def _columns(self, info: dict, stepped: bool) -> dict[str, float]:
        qpos = self.unwrapped.data.qpos
        return {
            "x_position": float(qpos[0]),
            "z_position": float(qpos[1]),
            "pitch": float(qpos[2]),
            "x_velocity": float(info["x_velocity"]) if stepped else 0.0,
        }


def make_ant(**kwargs) -> gym.Env:
    """Entry point of ``udg/Ant-v5``: Gymnasium's Ant-v5 (no time limit) with UDG's columns."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv

    _route_mujoco_warnings()
    return AntColumns(AntEnv(**kwargs))


def make_halfcheetah(**kwargs) -> gym.Env:
    """Entry point of ``udg/HalfCheetah-v5``: HalfCheetah-v5 with UDG's columns."""
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    _route_mujoco_warnings()
    return HalfCheetahColumns(HalfCheetahEnv(**kwargs))


def halfcheetah_columns_from_rewards(
    actions: np.ndarray, rewards: np.ndarray, env_kwargs: dict
) -> dict[str, np.ndarray]:
    """The ``x_velocity`` column of an episode of plain HalfCheetah-v5, which stores no udg
    columns, from its rewards: Gymnasium's reward is ``w_f v_x - w_c |a|^2`` with the env's
    ``forward_reward_weight`` and ``ctrl_cost_weight`` (1 and 0.1 unless the dataset's env
    spec says otherwise), so ``v_x`` follows exactly. ``[T+1]``, 0 at the reset as udg records
    it."""
    forward = float(env_kwargs.get("forward_reward_weight", 1.0))
    ctrl = float(env_kwargs.get("ctrl_cost_weight", 0.1))
    if forward == 0.0:
        return {}
    ctrl_cost = ctrl * np.sum(np.square(np.asarray(actions, dtype=np.float64)), axis=-1)
    x_velocity = (np.asarray(rewards, dtype=np.float64) + ctrl_cost) / forward  # [T]
    return {"x_velocity": np.concatenate([[0.0], x_velocity])}


def ant_terminated(next_observations, xp=np):
    """Ant-v5's rule: unhealthy when the state is not finite or torso z leaves [0.2, 1.0].

    With Gymnasium's default observation the first entry is the torso height ``qpos[2]``.
    Works on NumPy or ``jax.numpy`` arrays (pass ``xp=jnp``); returns a bool array ``[...]``.
    """
    z = next_observations[..., 0]
    finite = xp.all(xp.isfinite(next_observations), axis=-1)
    return ~(finite & (z >= 0.2) & (z <= 1.0))


def never_terminated(next_observations, xp=np):
    """The rule of environments that only end by the time limit."""
    return xp.zeros(next_observations.shape[:-1], dtype=bool)

"""The built-in 2-D point mass: the cheap default environment.

A point with inertia on an unbounded plane, in pure NumPy (no MuJoCo), so that the whole UDG
pipeline runs on it in minutes. The action is a force in [-1, 1]^2; velocity follows
``v' = (1 - damping * dt) v + dt * force_scale * a`` and position ``p' = p + dt v'``, so the
terminal speed is ``force_scale / damping``. The observation is ``(x, y, v_x, v_y)``. There is no
termination: episodes end by the time limit only. Each step reports the columns its tasks and
diversity features need (position and velocity) in ``info``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

POINT_INFO_COLUMNS = ("x_position", "y_position", "x_velocity", "y_velocity")


class PointEnv(gym.Env):
    """2-D point mass with inertia and linear drag."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        dt: float = 0.1,
        force_scale: float = 2.0,
        damping: float = 1.0,
        reset_noise_scale: float = 0.1,
    ):
        if dt <= 0 or force_scale <= 0 or not 0 <= damping * dt < 1:
            raise ValueError("PointEnv needs dt > 0, force_scale > 0 and 0 <= damping * dt < 1")
        self.dt = dt
        self.force_scale = force_scale
        self.damping = damping
        self.reset_noise_scale = reset_noise_scale
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self._position = np.zeros(2)
        self._velocity = np.zeros(2)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._position, self._velocity])

    def _info(self) -> dict[str, float]:
        return {
            "x_position": float(self._position[0]),
            "y_position": float(self._position[1]),
            "x_velocity": float(self._velocity[0]),
            "y_velocity": float(self._velocity[1]),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        noise = self.reset_noise_scale
        self._position = self.np_random.uniform(-noise, noise, size=2)
        self._velocity = np.zeros(2)
        return self._obs(), self._info()

    def step(self, action):
        force = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._velocity = (1.0 - self.damping * self.dt) * self._velocity + (
            self.dt * self.force_scale * force
        )
        self._position = self._position + self.dt * self._velocity
        # The default reward is the task point-angle-0, so a plain rollout is meaningful.
        reward = float(self._velocity[0] - 0.1 * np.sum(np.square(force)))
        return self._obs(), reward, False, False, self._info()

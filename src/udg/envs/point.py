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
RENDER_SIZE = 128
"""Pixels per side of a rendered frame."""


def raster(position: np.ndarray, walls: list, half_size: float) -> np.ndarray:
    """A frame ``[RENDER_SIZE, RENDER_SIZE, 3]`` uint8 of a point and wall segments, +y up."""
    n = RENDER_SIZE
    image = np.full((n, n, 3), 255, np.uint8)

    def pixel(x, y):  # world -> (row, col), clipped into the frame
        col = np.clip(((np.asarray(x) + half_size) / (2 * half_size) * n).astype(int), 0, n - 1)
        row = np.clip(((half_size - np.asarray(y)) / (2 * half_size) * n).astype(int), 0, n - 1)
        return row, col

    for (x0, y0), (x1, y1) in walls:
        t = np.linspace(0.0, 1.0, 2 * n)
        image[pixel(x0 + t * (x1 - x0), y0 + t * (y1 - y0))] = (120, 120, 120)
    row, col = pixel(position[0], position[1])
    image[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = (30, 60, 200)
    return image


class PointEnv(gym.Env):
    """2-D point mass with inertia and linear drag."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    view_half_size = 5.0
    """Half the side of the square a rendered frame shows, centred on the origin."""

    def __init__(
        self,
        dt: float = 0.1,
        force_scale: float = 2.0,
        damping: float = 1.0,
        reset_noise_scale: float = 0.1,
        render_mode: str | None = None,
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
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

    def walls(self) -> list:
        """Segments ``((x0, y0), (x1, y1))`` a frame draws (the open plane has none)."""
        return []

    def render(self):
        """An RGB frame ``[RENDER_SIZE, RENDER_SIZE, 3]`` uint8: the walls in grey, the
        point as a dark square, the view ``[-view_half_size, view_half_size]^2``."""
        if self.render_mode != "rgb_array":
            return None
        return raster(self._position, self.walls(), self.view_half_size)

    def step(self, action):
        force = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._velocity = (1.0 - self.damping * self.dt) * self._velocity + (
            self.dt * self.force_scale * force
        )
        self._position = self._position + self.dt * self._velocity
        # The default reward is the task point-angle-0, so a plain rollout is meaningful.
        reward = float(self._velocity[0] - 0.1 * np.sum(np.square(force)))
        return self._obs(), reward, False, False, self._info()

"""The task registry: relabelable reward functions of stored columns.

A task is a reward that is a pure, vectorised function of stored columns: ``observations``,
``actions``, ``next_observations`` (``[N, dim]``) and the environment's info columns (``[N]``,
the values reported after each step). Any dataset of the task's environment can therefore be
relabelled for it without a simulator. The function is written once over an array namespace
``xp``: NumPy relabels datasets, ``jax.numpy`` computes the reward of a model rollout from the
model's predicted columns inside MOPO's jitted epoch (:meth:`TaskSpec.jax_reward`). Tasks come in parameterised families
(``point-angle-<deg>``, ``rooms-angle-<deg>``, ``rooms-goal-<x>,<y>``, ``ant-angle-<deg>``,
``cheetah-cz-<value>``) parsed by an explicit pattern each, plus named tasks (``ant-outward``,
``cheetah-jump``, ``cheetah-crawl``, ``cheetah-run``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from udg.envs.registry import get_env_spec
from udg.envs.rooms import ARENA_HALF, CTRL_COST
from udg.errors import UdgError

Columns = Mapping[str, np.ndarray]
RewardFn = Callable[..., np.ndarray]
"""``reward_fn(columns, xp) -> [N]``, with ``xp`` NumPy or ``jax.numpy``."""

POINT_CTRL_COST = 0.1
ROOMS_CTRL_COST = CTRL_COST
"""Point's control cost scaled as the rooms reward is: point pays 0.1 |a|^2 against a speed
reward of at most 2 a step, rooms pays 0.01 |a|^2 against a displacement of at most 0.2 a step
(``dt`` times the speed), so a full push costs the same 1/20 of the most it can earn."""
ANT_CTRL_COST = 0.5
ANT_MIN_RADIUS = 0.1
CHEETAH_CTRL_COST = 0.1
CHEETAH_SPEED_CAP = 3.0
CHEETAH_Z_INIT = 0.0


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task: an environment and a reward of stored columns."""

    name: str
    """Canonical task name (``ant-angle-60``)."""
    env: str
    """Name of the environment whose datasets the task can relabel."""
    formula: str
    """The reward in words, for ``udg tasks`` and reports."""
    columns: tuple[str, ...]
    """Info columns the reward reads (besides observations and actions)."""
    reward_fn: RewardFn
    """``reward_fn(columns, xp) -> [N]`` rewards, over the array namespace ``xp``."""

    def reward(self, columns: Columns) -> np.ndarray:
        """The task's reward of every transition in ``columns``; ``[N]`` float64."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise UdgError(
                f"task {self.name} needs column(s) {', '.join(missing)} which the data lacks"
            )
        return np.asarray(self.reward_fn(columns, np), dtype=np.float64)

    def jax_reward(self, columns: Mapping[str, Any]) -> Any:
        """The same reward of JAX arrays (traceable under jit and vmap); ``[N]``."""
        import jax.numpy as jnp

        return self.reward_fn(columns, jnp)

    @property
    def terminated(self):
        """The environment's termination rule (used by model rollouts)."""
        return get_env_spec(self.env).terminated


def _squared_norm(actions, xp=np):
    if xp is np:  # relabelling sums in float64; JAX keeps the rollout's float32
        actions = np.asarray(actions, dtype=np.float64)
    return xp.sum(xp.square(actions), axis=-1)


def point_angle(degrees: float) -> TaskSpec:
    """Velocity along (cos theta, sin theta) minus a small control cost, on ``point``."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def reward(cols: Columns, xp=np) -> np.ndarray:
        return (
            c * cols["x_velocity"]
            + s * cols["y_velocity"]
            - POINT_CTRL_COST * _squared_norm(cols["actions"], xp)
        )

    return TaskSpec(
        name=f"point-angle-{degrees:g}",
        env="point",
        formula=f"v_x cos({degrees:g}) + v_y sin({degrees:g}) - {POINT_CTRL_COST} |a|^2",
        columns=("x_velocity", "y_velocity"),
        reward_fn=reward,
    )


def _displacement(cols: Columns) -> np.ndarray:
    """The position's change over each step, ``[N, 2]``, from the stored observations."""
    return cols["next_observations"][:, :2] - cols["observations"][:, :2]


def rooms_angle(degrees: float) -> TaskSpec:
    """Displacement along (cos theta, sin theta) minus a small control cost, on ``rooms``.

    The displacement, not the velocity: at a wall the velocity into it is zeroed after the
    move, so only the displacement says how far a step went. The return telescopes to the
    episode's displacement along theta.
    """
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def reward(cols: Columns, xp=np) -> np.ndarray:
        d = _displacement(cols)  # [N, 2]
        return c * d[:, 0] + s * d[:, 1] - ROOMS_CTRL_COST * _squared_norm(cols["actions"], xp)

    return TaskSpec(
        name=f"rooms-angle-{degrees:g}",
        env="rooms",
        formula=f"dx cos({degrees:g}) + dy sin({degrees:g}) - {ROOMS_CTRL_COST} |a|^2  (d: the "
        "step's displacement)",
        columns=(),
        reward_fn=reward,
    )


def rooms_goal(x: float, y: float) -> TaskSpec:
    """Minus the distance from the position after each step to the goal ``(x, y)``, on ``rooms``.

    Minus the distance rather than ``exp(-distance / scale)``: it needs no scale (any scale
    small enough to mark the goal leaves most of an 11-wide arena flat, with no signal where
    the route starts), and the return still rewards arriving sooner. The Euclidean distance
    ignores walls, so the way to a goal behind one leads away from it first: a goal in an outer
    room, like the direction tasks, needs data beyond the start room. No control cost: time spent
    away from the goal already costs. Any point of the arena is accepted.
    """
    if not (abs(x) <= ARENA_HALF and abs(y) <= ARENA_HALF):
        raise UdgError(
            f"goal ({x:g}, {y:g}) lies outside the rooms arena [-{ARENA_HALF:g}, {ARENA_HALF:g}]^2"
        )

    def reward(cols: Columns, xp=np) -> np.ndarray:
        return -xp.hypot(cols["x_position"] - x, cols["y_position"] - y)

    return TaskSpec(
        name=f"rooms-goal-{x:g},{y:g}",
        env="rooms",
        formula=f"-|p - ({x:g}, {y:g})|  (p: the position after the step)",
        columns=("x_position", "y_position"),
        reward_fn=reward,
    )


ANT_COSTS_FORMULA = f"healthy - {ANT_CTRL_COST} |a|^2 - 5e-4 |clip(cfrc_ext, -1, 1)|^2"
ANT_COST_COLUMNS = ("healthy", "contact_cost")


def _ant_survival(cols: Columns, xp=np) -> np.ndarray:
    """Ant-v5's reward without its forward term: healthy bonus less control and contact costs."""
    return (
        cols["healthy"] - ANT_CTRL_COST * _squared_norm(cols["actions"], xp) - cols["contact_cost"]
    )


def ant_angle(degrees: float) -> TaskSpec:
    """Ant-v5's reward with the forward term turned to angle theta (SPEC section 4)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def reward(cols: Columns, xp=np) -> np.ndarray:
        return c * cols["x_velocity"] + s * cols["y_velocity"] + _ant_survival(cols, xp)

    return TaskSpec(
        name=f"ant-angle-{degrees:g}",
        env="ant",
        formula=f"v_x cos({degrees:g}) + v_y sin({degrees:g}) + {ANT_COSTS_FORMULA}",
        columns=("x_velocity", "y_velocity", *ANT_COST_COLUMNS),
        reward_fn=reward,
    )


def ant_outward() -> TaskSpec:
    """Ant-v5's reward with the forward term replaced by the speed away from the origin.

    The torso's velocity projected on its direction from the origin (where every episode
    starts), so an episode's sum is how far it ended from the start: a locomotion prior that
    names no direction. Mixed into stage 1 with the diversity reward (``--task ant-outward``
    with ``--observe-features True``, since the reward depends on the position), it teaches the
    gait while the diversity reward picks the headings. (The plain speed ``|v|`` would pay
    jitter as much as travel.)
    """

    def reward(cols: Columns, xp=np) -> np.ndarray:
        x, y = cols["x_position"], cols["y_position"]
        radius = xp.maximum(xp.hypot(x, y), ANT_MIN_RADIUS)
        return (cols["x_velocity"] * x + cols["y_velocity"] * y) / radius + _ant_survival(cols, xp)

    return TaskSpec(
        name="ant-outward",
        env="ant",
        formula=f"v . p / max(|p|, {ANT_MIN_RADIUS:g}) + {ANT_COSTS_FORMULA}  (p: torso x, y)",
        columns=("x_position", "y_position", "x_velocity", "y_velocity", *ANT_COST_COLUMNS),
        reward_fn=reward,
    )


def cheetah_cz(c_z: float, name: str | None = None) -> TaskSpec:
    """Capped forward speed plus ``c_z`` times the torso's height change (jump/crawl)."""

    def reward(cols: Columns, xp=np) -> np.ndarray:
        return (
            xp.minimum(cols["x_velocity"], CHEETAH_SPEED_CAP)
            - CHEETAH_CTRL_COST * _squared_norm(cols["actions"], xp)
            + c_z * (cols["z_position"] - CHEETAH_Z_INIT)
        )

    return TaskSpec(
        name=name or f"cheetah-cz-{c_z:g}",
        env="halfcheetah",
        formula=f"min(v_x, {CHEETAH_SPEED_CAP:g}) - {CHEETAH_CTRL_COST} |a|^2 + {c_z:g} (z - z_init)",
        columns=("x_velocity", "z_position"),
        reward_fn=reward,
    )


def cheetah_run() -> TaskSpec:
    """HalfCheetah-v5's own reward: forward velocity minus 0.1 |a|^2."""

    def reward(cols: Columns, xp=np) -> np.ndarray:
        return cols["x_velocity"] - CHEETAH_CTRL_COST * _squared_norm(cols["actions"], xp)

    return TaskSpec(
        name="cheetah-run",
        env="halfcheetah",
        formula=f"v_x - {CHEETAH_CTRL_COST} |a|^2  (HalfCheetah-v5's reward)",
        columns=("x_velocity",),
        reward_fn=reward,
    )


_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
NUMBER_FORMAT = "a number such as 60, -1.5 or 1e5"
"""How a task name's parameters are written (said when a name does not parse)."""

TASK_FAMILIES: dict[str, tuple[re.Pattern, Callable[..., TaskSpec]]] = {
    "point-angle-<deg>": (re.compile(rf"point-angle-{_NUMBER}"), point_angle),
    "rooms-angle-<deg>": (re.compile(rf"rooms-angle-{_NUMBER}"), rooms_angle),
    # A comma between the coordinates, since a hyphen also signs them: rooms-goal-2.5,-1.
    "rooms-goal-<x>,<y>": (re.compile(rf"rooms-goal-{_NUMBER},{_NUMBER}"), rooms_goal),
    "ant-angle-<deg>": (re.compile(rf"ant-angle-{_NUMBER}"), ant_angle),
    "cheetah-cz-<value>": (re.compile(rf"cheetah-cz-{_NUMBER}"), cheetah_cz),
}
"""Parameterised task families: the name pattern and the constructor of its parameters (one
per group of the pattern)."""

TASKS: dict[str, Callable[[], TaskSpec]] = {
    "ant-outward": ant_outward,
    "cheetah-jump": lambda: cheetah_cz(15.0, name="cheetah-jump"),
    "cheetah-crawl": lambda: cheetah_cz(-15.0, name="cheetah-crawl"),
    "cheetah-run": cheetah_run,
}
"""Named tasks."""

PAPER_ANGLES = (0, 60, 120, 180, 240, 300)
"""The six directions of the paper's Ant-Angle experiment."""

ROOMS_EXAMPLE_GOALS = ((0.0, 0.0), (4.0, 4.0), (-4.0, 0.0))
"""Goals ``udg tasks`` lists: the start, the middle of the north-east room, of the west room."""


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; an unknown name raises :class:`UdgError` listing the known."""
    if name in TASKS:
        return TASKS[name]()
    for pattern, make in TASK_FAMILIES.values():
        match = pattern.fullmatch(name)
        if match:
            values = [float(g) for g in match.groups()]
            if not all(math.isfinite(v) for v in values):
                raise UdgError(f"task {name[:60]}...: a parameter too large to be a finite number")
            return make(*values)
    raise UdgError(
        f"unknown task {name!r}; known: {', '.join(list(TASKS) + list(TASK_FAMILIES))}, each "
        f"<...> {NUMBER_FORMAT}"
    )


def example_tasks() -> list[TaskSpec]:
    """A listing for ``udg tasks``: every named task and the paper's instances of each family."""
    tasks = [point_angle(a) for a in PAPER_ANGLES] + [rooms_angle(a) for a in PAPER_ANGLES]
    tasks += [rooms_goal(*goal) for goal in ROOMS_EXAMPLE_GOALS]
    tasks += [ant_angle(a) for a in PAPER_ANGLES]
    return tasks + [make() for make in TASKS.values()]

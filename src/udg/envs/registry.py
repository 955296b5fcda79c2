"""The environment registry: names, Gymnasium ids, stored columns, features, termination.

Each environment UDG knows is an :class:`EnvSpec` in :data:`ENVS`. Its Gymnasium id is registered
when :mod:`udg.envs` is imported, so a Minari dataset written by UDG can recover its environment.
The spec also says which per-step ``info`` columns every episode stores, which of them form the
low-dimensional diversity features, and the termination rule as a pure function of the next
observation (needed by model rollouts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium as gym

from udg.envs.mujoco import (
    ANT_INFO_COLUMNS,
    HALFCHEETAH_INFO_COLUMNS,
    ant_terminated,
    halfcheetah_columns_from_rewards,
    never_terminated,
)
from udg.envs.point import POINT_INFO_COLUMNS
from udg.errors import UdgError, unknown_name


@dataclass(frozen=True)
class EnvSpec:
    """What UDG knows about one environment."""

    name: str
    """Short name used on the command line (``point``, ``rooms``, ``ant``, ``halfcheetah``)."""
    gym_id: str
    """Gymnasium id registered by udg (the environment plus UDG's info columns)."""
    entry_point: str
    """Gymnasium entry point of ``gym_id``."""
    max_episode_steps: int
    """Default time limit; every command that makes the env can override it."""
    info_columns: tuple[str, ...]
    """Per-step ``info`` values stored with every transition (floats)."""
    feature_columns: tuple[str, ...]
    """Info columns forming the diversity feature vector (SPEC section 3)."""
    terminated: Callable | None
    """Termination rule ``terminated(next_observations, xp=np) -> bool[...]``; None if unknown."""
    observed_columns: tuple[tuple[str, int], ...] = ()
    """Info columns that equal an entry of the next observation, as (column, index): a model
    rollout reads them from its predicted observation instead of predicting them again."""
    offline_observation_dims: int | None = None
    """Leading observation entries the offline learner (dynamics model and MOPO policy) sees by
    default; None: all of them."""
    foreign_gym_ids: tuple[str, ...] = ()
    """Ids of datasets written by others that hold this environment (e.g. plain ``Ant-v5``)."""
    columns_from_rewards: Callable | None = None
    """For a dataset of a foreign id, which stores none of udg's columns: the columns its
    rewards determine, ``(actions [T], rewards [T], env_kwargs) -> {column: [T+1]}`` (the
    observed columns come from the observations)."""
    description: str = ""
    """One line for ``udg tasks``."""


_POINT = EnvSpec(
    name="point",
    gym_id="udg/Point-v0",
    entry_point="udg.envs.point:PointEnv",
    max_episode_steps=100,
    info_columns=POINT_INFO_COLUMNS,
    feature_columns=("x_position", "y_position"),
    terminated=never_terminated,
    observed_columns=(("x_position", 0), ("y_position", 1), ("x_velocity", 2), ("y_velocity", 3)),
    description="built-in 2-D point mass with inertia (NumPy); obs (x, y, vx, vy)",
)

ENVS: dict[str, EnvSpec] = {
    "point": _POINT,
    # point's mass, columns, features and time limit, among walls.
    "rooms": replace(
        _POINT,
        name="rooms",
        gym_id="udg/Rooms-v0",
        entry_point="udg.envs.rooms:RoomsEnv",
        description="point's mass in 3 x 3 rooms with doorways (NumPy); obs (x, y, vx, vy)",
    ),
    "ant": EnvSpec(
        name="ant",
        gym_id="udg/Ant-v5",
        entry_point="udg.envs.mujoco:make_ant",
        max_episode_steps=1000,
        info_columns=ANT_INFO_COLUMNS,
        feature_columns=("x_position", "y_position"),
        terminated=ant_terminated,
        observed_columns=(("z_position", 0),),  # qpos[2]; the obs leaves out x and y
        # The 13 joint positions and 14 velocities, without the 78 contact forces: MOPO's (and
        # MBPO's) truncated Ant, whose model need not predict spiky contact forces.
        offline_observation_dims=27,
        foreign_gym_ids=("Ant-v5",),
        description="Gymnasium Ant-v5 (obs 105, act 8); terminates when torso z leaves [0.2, 1]",
    ),
    "halfcheetah": EnvSpec(
        name="halfcheetah",
        gym_id="udg/HalfCheetah-v5",
        entry_point="udg.envs.mujoco:make_halfcheetah",
        max_episode_steps=1000,
        info_columns=HALFCHEETAH_INFO_COLUMNS,
        feature_columns=("x_position", "z_position"),
        terminated=never_terminated,
        observed_columns=(("z_position", 0), ("pitch", 1)),  # qpos[1:3]; the obs leaves out x
        foreign_gym_ids=("HalfCheetah-v5",),
        columns_from_rewards=halfcheetah_columns_from_rewards,
        description="Gymnasium HalfCheetah-v5 (obs 17, act 6); no termination",
    ),
}


def register_envs() -> None:
    """Register every UDG environment with Gymnasium (idempotent)."""
    for spec in ENVS.values():
        if spec.gym_id not in gym.registry:
            gym.register(
                id=spec.gym_id,
                entry_point=spec.entry_point,
                max_episode_steps=spec.max_episode_steps,
            )


def observed_columns(spec: EnvSpec, dims: int | None = None) -> tuple[tuple[str, int], ...]:
    """:attr:`EnvSpec.observed_columns` within the first ``dims`` observation entries."""
    return tuple((name, i) for name, i in spec.observed_columns if dims is None or i < dims)


def predicted_columns(spec: EnvSpec, dims: int | None = None) -> tuple[str, ...]:
    """The info columns a task-independent dynamics model of the first ``dims`` observation
    entries predicts: those they do not hold (:func:`observed_columns`)."""
    observed = {name for name, _ in observed_columns(spec, dims)}
    return tuple(c for c in spec.info_columns if c not in observed)


def env_walls(name: str) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The walls of env ``name`` in its first two diversity features, as segments
    ``((x0, y0), (x1, y1))`` for drawing (the rooms world's; none elsewhere)."""
    if get_env_spec(name).name != "rooms":
        return []
    from udg.envs.rooms import wall_segments

    return wall_segments()


def get_env_spec(name: str) -> EnvSpec:
    """The spec of env ``name``; an unknown name raises :class:`UdgError` listing the known."""
    try:
        return ENVS[name]
    except KeyError:
        raise unknown_name("env", name, ENVS) from None


def env_name_for_gym_id(gym_id: str) -> str:
    """The UDG env name of a Gymnasium id (UDG's own or a known foreign one)."""
    for spec in ENVS.values():
        if gym_id == spec.gym_id or gym_id in spec.foreign_gym_ids:
            return spec.name
    known = [spec.gym_id for spec in ENVS.values()]
    known += [i for spec in ENVS.values() for i in spec.foreign_gym_ids]
    raise unknown_name("environment id", gym_id, known)


def make_env(name: str, max_episode_steps: int | None = None, **kwargs) -> gym.Env:
    """Make env ``name`` with UDG's info columns and a time limit (default: the spec's)."""
    spec = get_env_spec(name)
    if max_episode_steps is not None and max_episode_steps <= 0:
        raise UdgError(f"max_episode_steps must be positive, got {max_episode_steps}")
    register_envs()
    return gym.make(
        spec.gym_id, max_episode_steps=max_episode_steps or spec.max_episode_steps, **kwargs
    )

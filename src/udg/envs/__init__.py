"""Environments and their tasks (the first stage of the pipeline).

Importing this package registers UDG's Gymnasium ids.
"""

from udg.envs.registry import (
    ENVS,
    EnvSpec,
    env_name_for_gym_id,
    get_env_spec,
    make_env,
    register_envs,
)
from udg.envs.tasks import TASK_FAMILIES, TASKS, TaskSpec, get_task

register_envs()

__all__ = [
    "ENVS",
    "TASKS",
    "TASK_FAMILIES",
    "EnvSpec",
    "TaskSpec",
    "env_name_for_gym_id",
    "get_env_spec",
    "get_task",
    "make_env",
    "register_envs",
]

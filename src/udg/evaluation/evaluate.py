"""Evaluating a policy in the real environment under a task's reward.

The policy runs deterministically in ``n`` copies of the environment stepped in lockstep by
:func:`udg.data.collect.run_episodes` (one batched action call per step); each episode's return
is the task's reward of its transitions, computed from the same columns relabelling uses, so
evaluation and relabelling cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from udg.data.collect import run_episodes
from udg.envs.registry import make_env
from udg.envs.tasks import TaskSpec
from udg.seeds import int_seeds

BatchPolicy = Callable[[np.ndarray], np.ndarray]


def evaluate(
    task: TaskSpec,
    policy: BatchPolicy,
    episodes: int,
    seed: int,
    max_episode_steps: int | None = None,
    index: tuple[int, ...] = (),
) -> np.ndarray:
    """Task returns of ``episodes`` episodes of ``policy`` (``[n, o] -> [n, a]``); ``[n]``.

    The episodes' resets come from the run seed's ``evaluation`` stream at ``index`` (e.g. the
    epoch), so each evaluation of a run sees its own, reproducible start states."""
    envs = [make_env(task.env, max_episode_steps=max_episode_steps) for _ in range(episodes)]
    played = run_episodes(
        envs,
        lambda obs, t: policy(obs.astype(np.float32)),
        int_seeds(seed, "evaluation", episodes, *index),
    )
    for env in envs:
        env.close()
    return np.array([np.sum(task.reward(e.columns())) for e in played])  # [n]

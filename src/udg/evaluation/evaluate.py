"""Evaluating a policy in the real environment under a task's reward.

The policy runs deterministically in ``n`` copies of the environment stepped in lockstep by
:func:`udg.data.collect.run_episodes` (one batched action call per step); each episode's return
is the task's reward of its transitions, computed from the same columns relabelling uses, so
evaluation and relabelling cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    return evaluate_groups([task], policy, episodes, [seed], max_episode_steps, index)[0]


def evaluate_groups(
    tasks: Sequence[TaskSpec],
    policy: BatchPolicy,
    episodes: int,
    seeds: Sequence[int],
    max_episode_steps: int | None = None,
    index: tuple[int, ...] = (),
) -> np.ndarray:
    """:func:`evaluate` for G groups at once (a population's cells, all of one env), every
    episode stepped in lockstep: group g's ``episodes`` episodes are rows ``g * episodes ..``
    of the policy's ``[G * episodes, o]`` input, reset from ``seeds[g]``'s stream and scored
    with ``tasks[g]``. ``[G, episodes]``."""
    envs = [
        make_env(tasks[0].env, max_episode_steps=max_episode_steps)
        for _ in range(len(tasks) * episodes)
    ]
    resets = np.concatenate([int_seeds(s, "evaluation", episodes, *index) for s in seeds])
    try:
        played = run_episodes(envs, lambda obs, t: policy(obs.astype(np.float32)), resets)
    finally:
        for env in envs:
            env.close()
    scored = [t for t in tasks for _ in range(episodes)]
    returns = [np.sum(t.reward(e.columns())) for t, e in zip(scored, played, strict=True)]
    return np.array(returns).reshape(len(tasks), episodes)

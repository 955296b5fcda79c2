"""Evaluating a policy in the real environment under a task's reward.

The policy runs deterministically in ``n`` copies of the environment stepped in lockstep (one
batched action call per step); each episode's return is the task's reward of its transitions,
computed from the same columns relabelling uses, so evaluation and relabelling cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
    seeds = int_seeds(seed, "evaluation", episodes, *index)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    returns = np.zeros(episodes)
    active = np.ones(episodes, bool)
    while active.any():
        actions = np.asarray(policy(obs.astype(np.float32)))
        for i in np.flatnonzero(active):
            action = actions[i].astype(envs[i].action_space.dtype)
            next_obs, _, terminated, truncated, info = envs[i].step(action)
            columns = {
                "observations": obs[i][None],
                "actions": action[None],
                "next_observations": next_obs[None],
                **{k: np.array([v]) for k, v in info.items()},
            }
            returns[i] += float(task.reward(columns)[0])
            obs[i] = next_obs
            if terminated or truncated:
                active[i] = False
    for env in envs:
        env.close()
    return returns

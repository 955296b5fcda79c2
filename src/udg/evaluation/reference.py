"""Online reference returns of a task, and D4RL's normalised score built on them.

An offline return means little alone: on a world where doing nothing earns about zero, a
policy that learned nothing looks as good as one that did. This module gives the rows a report
sets beside it, each the task's return in the real environment: the zero-action policy, the
uniformly random policy (D4RL's 0), an expert (D4RL's 100), and the data's own mean return. All
three policies run through :func:`udg.evaluation.evaluate.evaluate`, the one rollout loop, so a
row's return is computed exactly as any evaluated policy's is, from the same reset states (the
run seed's ``evaluation`` stream) for a given seed and episode count. The random policy's
actions come from the seed's ``reference`` stream.

    score = 100 * (value - random_return) / (expert_return - random_return)   (Fu et al. 2020)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from udg.envs.registry import make_env
from udg.envs.tasks import TaskSpec
from udg.errors import UdgError
from udg.evaluation.evaluate import BatchPolicy, evaluate
from udg.seeds import numpy_rng


def _action_space(task: TaskSpec):
    env = make_env(task.env)
    try:
        return env.action_space
    finally:
        env.close()


def zero_action_returns(
    task: TaskSpec, episodes: int, seed: int, max_episode_steps: int | None = None
) -> np.ndarray:
    """Task returns of ``episodes`` episodes of the all-zero action (doing nothing); ``[n]``."""
    space = _action_space(task)

    def zero(obs: np.ndarray) -> np.ndarray:
        return np.zeros((len(obs), *space.shape), space.dtype)  # [n, a]

    return evaluate(task, zero, episodes, seed, max_episode_steps)


def random_policy_returns(
    task: TaskSpec, episodes: int, seed: int, max_episode_steps: int | None = None
) -> np.ndarray:
    """Task returns of ``episodes`` episodes of uniformly random actions in the action box,
    drawn from the seed's ``reference`` stream (one ``[n, a]`` draw per step); ``[n]``."""
    space = _action_space(task)
    rng = numpy_rng(seed, "reference")

    def uniform(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(space.low, space.high, (len(obs), *space.shape)).astype(space.dtype)

    return evaluate(task, uniform, episodes, seed, max_episode_steps)


def normalised_score(value, random_return: float, expert_return: float):
    """D4RL's normalised score of ``value`` (a float or an array): 0 is the random policy's
    return, 100 the expert's."""
    if not (np.isfinite(random_return) and np.isfinite(expert_return)):
        raise UdgError(
            f"normalised score needs finite references, got random {random_return} "
            f"and expert {expert_return}"
        )
    if expert_return == random_return:
        raise UdgError(
            f"normalised score is undefined: the expert's return equals the random policy's "
            f"({expert_return:g}), so the scale 100 / (expert - random) has no width"
        )
    score = (
        100.0
        * (np.asarray(value, dtype=np.float64) - random_return)
        / (expert_return - random_return)
    )
    return float(score) if score.ndim == 0 else score


def _row(returns: np.ndarray) -> dict:
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)  # [n]
    return {
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "episodes": len(returns),
    }


def reference_rows(
    task: TaskSpec,
    expert: BatchPolicy | Sequence[float] | np.ndarray,
    data_mean_return: float | Sequence[float] | np.ndarray | None,
    episodes: int,
    seed: int,
    max_episode_steps: int | None = None,
) -> dict:
    """The reference rows of ``task`` for a report table: ``zero``, ``random``, ``expert`` and
    ``data``, each ``{"mean", "std", "episodes", "normalised"}`` (std over episodes).

    ``expert`` is either a policy (``[n, o] -> [n, a]``, evaluated here like the others) or its
    online returns already measured. ``data_mean_return`` is the data's mean episode return
    under the task, or the episode returns themselves; a single number has no spread, so its
    ``std`` and ``episodes`` are None; None leaves the ``data`` row out. ``normalised`` is the row's mean as a D4RL score, None
    where the expert's mean equals the random policy's (the score is then undefined).
    """
    if episodes < 1:
        raise UdgError(f"reference rows need at least one episode, got {episodes}")
    if callable(expert):
        expert_returns = evaluate(task, expert, episodes, seed, max_episode_steps)
    else:
        expert_returns = np.asarray(expert, dtype=np.float64)
        if expert_returns.size == 0:
            raise UdgError(f"task {task.name}: the expert's returns are empty")
    rows = {
        "zero": _row(zero_action_returns(task, episodes, seed, max_episode_steps)),
        "random": _row(random_policy_returns(task, episodes, seed, max_episode_steps)),
        "expert": _row(expert_returns),
    }
    data = None if data_mean_return is None else np.asarray(data_mean_return, dtype=np.float64)
    if data is None:
        pass
    elif data.ndim == 0:
        rows["data"] = {"mean": float(data), "std": None, "episodes": None}
    else:
        if data.size == 0:
            raise UdgError(f"task {task.name}: the data's returns are empty")
        rows["data"] = _row(data)
    random_mean, expert_mean = rows["random"]["mean"], rows["expert"]["mean"]
    for row in rows.values():
        row["normalised"] = (
            None
            if expert_mean == random_mean
            else normalised_score(row["mean"], random_mean, expert_mean)
        )
    return rows

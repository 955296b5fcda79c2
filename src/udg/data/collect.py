"""Collecting episodes by running a policy in an environment; the random-data baseline.

The only imperative code of the data stage: it steps a Gymnasium environment with a policy for
a number of transitions and returns whole :class:`Episode` records (with UDG's info columns).
When the budget ends inside an episode, that episode is cut and its last step marked truncated,
so the dataset holds exactly the requested number of transitions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from udg.data.dataset import Episode
from udg.errors import UdgError

Policy = Callable[[np.ndarray], np.ndarray]


def collect_episodes(
    env, policy: Policy, num_steps: int, seed: int, on_step: Callable[[int], None] | None = None
) -> list[Episode]:
    """Run ``policy`` in ``env`` for exactly ``num_steps`` transitions."""
    if num_steps <= 0:
        raise UdgError(f"the number of steps must be positive, got {num_steps}")
    info_keys = None
    episodes: list[Episode] = []
    obs, info = env.reset(seed=seed)
    record = _new_record(obs, info)
    info_keys = sorted(info)
    for step in range(num_steps):
        action = np.asarray(policy(obs), dtype=env.action_space.dtype)
        obs, reward, terminated, truncated, info = env.step(action)
        truncated = truncated or step == num_steps - 1
        record["observations"].append(obs)
        record["actions"].append(action)
        record["rewards"].append(reward)
        record["terminations"].append(terminated)
        record["truncations"].append(truncated and not terminated)
        for key in info_keys:
            record["infos"][key].append(info[key])
        if on_step is not None:
            on_step(step + 1)
        if terminated or truncated:
            episodes.append(_to_episode(record))
            if step < num_steps - 1:
                obs, info = env.reset()
                record = _new_record(obs, info)
    return episodes


def _new_record(obs, info) -> dict:
    return {
        "observations": [obs],
        "actions": [],
        "rewards": [],
        "terminations": [],
        "truncations": [],
        "infos": {k: [v] for k, v in info.items()},
    }


def _to_episode(record: dict) -> Episode:
    return Episode(
        observations=np.asarray(record["observations"]),
        actions=np.asarray(record["actions"]),
        rewards=np.asarray(record["rewards"], dtype=np.float64),
        terminations=np.asarray(record["terminations"], dtype=bool),
        truncations=np.asarray(record["truncations"], dtype=bool),
        infos={k: np.asarray(v, dtype=np.float64) for k, v in record["infos"].items()},
    )


def uniform_random_policy(action_space, rng: np.random.Generator) -> Policy:
    """Uniformly random actions in the (bounded) action box, from a seeded generator."""
    low, high = action_space.low, action_space.high
    return lambda _obs: rng.uniform(low, high).astype(action_space.dtype)

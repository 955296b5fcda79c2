"""Running policies in environments: the one rollout loop of udg, and the random-data baseline.

:func:`run_episodes` steps K environments in lockstep, one episode each, asking the policy for
all K actions at once per step (one batched call, as a population or a jitted policy wants);
stage 1, evaluation and data collection all go through it. An environment whose episode has
ended waits for the others and its actions are ignored. Episodes come back as whole
:class:`Episode` records with the env's info columns. :func:`collect_episodes` collects an exact
number of transitions with one environment, cutting the last episode (its last step marked
truncated) when the budget ends inside it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import numpy as np

from udg.data.dataset import Episode
from udg.envs.registry import make_env
from udg.errors import UdgError
from udg.seeds import int_seed, numpy_rng

Policy = Callable[[np.ndarray], np.ndarray]
"""One observation ``[o]`` to one action ``[a]``."""
BatchPolicy = Callable[[np.ndarray, int], np.ndarray]
"""``(inputs [K, i], step t) -> actions [K, a]`` for K environments in lockstep."""
Observe = Callable[[np.ndarray, dict], np.ndarray]
"""``(observation [o], info) -> what the policy sees [i]`` (default: the observation)."""


@contextlib.contextmanager
def timed(timings: dict[str, float] | None, part: str):
    """Add the wall time of the ``with`` body to ``timings[part]`` (nothing when None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - start


def run_episodes(
    envs: Sequence,
    policy: BatchPolicy,
    reset_seeds: Sequence[int],
    observe: Observe | None = None,
    max_steps: int | None = None,
    timings: dict[str, float] | None = None,
) -> list[Episode]:
    """One episode in each of ``envs``, stepped in lockstep from ``reset(seed=reset_seeds[i])``.

    An episode ends when its env terminates or truncates it, or after ``max_steps`` steps (then
    its last step is marked truncated). ``timings`` accumulates "acting" and "env stepping".
    """
    observe = observe or (lambda obs, info: obs)
    records, inputs = [], []
    with timed(timings, "env stepping"):
        for env, seed in zip(envs, reset_seeds, strict=True):
            obs, info = env.reset(seed=int(seed))
            records.append(_new_record(obs, info))
            inputs.append(observe(obs, info))
    inputs = np.stack(inputs)  # [K, i]
    active = np.ones(len(envs), bool)
    t = 0
    while active.any():
        with timed(timings, "acting"):
            actions = np.asarray(policy(inputs, t))  # [K, a]
        with timed(timings, "env stepping"):
            for i in np.flatnonzero(active):
                env = envs[i]
                action = actions[i].astype(env.action_space.dtype)
                obs, reward, terminated, truncated, info = env.step(action)
                truncated = truncated or (max_steps is not None and t + 1 >= max_steps)
                _append(records[i], obs, action, reward, terminated, truncated, info)
                inputs[i] = observe(obs, info)
                if terminated or truncated:
                    active[i] = False
        t += 1
    return [_to_episode(r) for r in records]


def collect_episodes(
    env, policy: Policy, num_steps: int, seed: int, on_step: Callable[[int], None] | None = None
) -> list[Episode]:
    """Run ``policy`` in ``env`` for exactly ``num_steps`` transitions, episode after episode;
    episode ``e`` resets from the run seed's ``env_reset`` stream at ``e``. ``on_step(n)``
    follows each episode with the transitions collected so far."""
    if num_steps <= 0:
        raise UdgError(f"the number of steps must be positive, got {num_steps}")
    episodes: list[Episode] = []
    done = 0
    while done < num_steps:
        (episode,) = run_episodes(
            [env],
            lambda inputs, t: policy(inputs[0])[None],
            [int_seed(seed, "env_reset", len(episodes))],
            max_steps=num_steps - done,
        )
        episodes.append(episode)
        done += len(episode)
        if on_step is not None:
            on_step(done)
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


def _append(record, obs, action, reward, terminated, truncated, info) -> None:
    record["observations"].append(obs)
    record["actions"].append(action)
    record["rewards"].append(reward)
    record["terminations"].append(terminated)
    record["truncations"].append(truncated and not terminated)
    for key, values in record["infos"].items():
        values.append(info[key])


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


def random_episodes(
    env: str,
    num_steps: int,
    seed: int,
    max_episode_steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[Episode]:
    """The random-data baseline: ``num_steps`` transitions of uniformly random actions in env
    ``env``, actions from the seed's ``random_data`` stream, resets from its ``env_reset``."""
    gym_env = make_env(env, max_episode_steps=max_episode_steps)
    policy = uniform_random_policy(gym_env.action_space, numpy_rng(seed, "random_data"))
    try:
        return collect_episodes(gym_env, policy, num_steps, seed, on_step)
    finally:
        gym_env.close()

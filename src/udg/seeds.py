"""Every random stream of a run, derived from ``(seed, purpose, index...)`` in one place.

A run has one integer seed. Each use of randomness names its purpose (the networks'
initialisation, the environments' resets, the replay's batches, ...) and, where the use repeats,
its indices (round, epoch, call, episode). The stream is a function of those alone, so a resumed
run draws what an uninterrupted one would, two purposes never share a stream, and adding a
purpose leaves every other stream as it was (a purpose's number is a hash of its name, not its
position in a list).

    rng = seeds.numpy_rng(seed, "replay", round_index)      # np.random.Generator
    key = seeds.jax_key(seed, "updates", round_index)       # jax.random.key
    env.reset(seed=seeds.int_seed(seed, "env_reset", round_index, agent))
"""

from __future__ import annotations

import zlib

import jax
import numpy as np

PURPOSES: dict[str, str] = {
    "init": "parameters of networks and ensembles",
    "env_reset": "seeds passed to env.reset",
    "actions": "stochastic actions while collecting (policy samples and random actions)",
    "diversity": "projections of the Wasserstein reward",
    "replay": "indices of replay and dataset batches",
    "updates": "keys of gradient updates",
    "dynamics": "the dynamics ensemble's split, shuffles and initialisation",
    "rollouts": "start states and sampled transitions of model rollouts",
    "evaluation": "seeds of evaluation episodes",
    "random_data": "the uniformly random baseline's actions and resets",
    "reference": "the uniformly random reference policy's actions (online reference returns)",
}
"""The named purposes, each with what it seeds."""


def _words(seed: int, purpose: str, index: tuple[int, ...]) -> list[int]:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    if seed < 0 or any(i < 0 for i in index):
        raise ValueError(f"seeds and indices must be non-negative, got {seed}, {index}")
    return [int(seed), zlib.crc32(purpose.encode()), *(int(i) for i in index)]


def seed_sequence(seed: int, purpose: str, *index: int) -> np.random.SeedSequence:
    """The stream of ``purpose`` at ``index`` of the run seeded ``seed``."""
    return np.random.SeedSequence(_words(seed, purpose, index))


def numpy_rng(seed: int, purpose: str, *index: int) -> np.random.Generator:
    """A NumPy generator on that stream."""
    return np.random.default_rng(seed_sequence(seed, purpose, *index))


def int_seed(seed: int, purpose: str, *index: int) -> int:
    """A 32-bit integer from that stream (for ``env.reset(seed=...)``)."""
    return int(seed_sequence(seed, purpose, *index).generate_state(1)[0])


def int_seeds(seed: int, purpose: str, count: int, *index: int) -> np.ndarray:
    """``count`` 32-bit integers from that stream, ``[count]`` (one per episode or env)."""
    return seed_sequence(seed, purpose, *index).generate_state(count)


def jax_key(seed: int, purpose: str, *index: int) -> jax.Array:
    """A JAX key on that stream (fold in further indices inside jitted code)."""
    return jax.random.key(int_seed(seed, purpose, *index))

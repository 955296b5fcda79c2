"""What one machine can hold, checked before any work starts.

A size is estimated from shapes (members x steps x dims) and refused, with the estimate, when
it exceeds the machine's memory: a run asked for more is refused in a second, not after minutes
of work by an out-of-memory error. A count is refused above what JAX's default 32-bit integers
index: a step or epoch counter past ``2**31 - 1`` would wrap.
"""

from __future__ import annotations

import os

from udg.errors import UdgError

MAX_COUNT = 2**31 - 1
"""The largest step, episode or epoch count udg accepts (JAX counts in int32)."""

STEP_OVERHEAD_BYTES = 200
"""Memory a recorded env step holds beyond its floats: the NumPy arrays' and lists' headers of
its observation, action and info entries (a lower estimate; measured about 400)."""


def machine_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size_text(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(need: int, what: str, advice: str) -> None:
    """Refuse ``what`` when it needs more than this machine's memory (``advice``: how to ask
    for less)."""
    have = machine_memory()
    if need > have:
        raise UdgError(
            f"{what} needs about {size_text(need)} of memory, more than this machine's "
            f"{size_text(have)}; {advice}"
        )


def episodes_bytes(obs_dim: int, act_dim: int, info_columns: int, steps: int) -> int:
    """A lower estimate of the memory ``steps`` recorded env steps hold as episodes (float64
    observations, actions, rewards, flags and infos, and each step's array headers)."""
    return steps * ((obs_dim + act_dim + 3 + info_columns) * 8 + STEP_OVERHEAD_BYTES)


def check_episodes(env: str, episodes: int, length: int | None, what: str, advice: str) -> None:
    """Refuse ``episodes`` episodes of at most ``length`` steps of ``env`` (default its time
    limit) played at once, when their record exceeds the machine's memory."""
    from udg.envs.registry import get_env_spec, make_env

    spec = get_env_spec(env)
    gym_env = make_env(env)
    obs, act = gym_env.observation_space.shape[0], gym_env.action_space.shape[0]
    gym_env.close()
    steps = episodes * (length or spec.max_episode_steps)
    check_memory(episodes_bytes(obs, act, len(spec.info_columns), steps), what, advice)

"""How udg spreads independent members (the K agents of a population) over the local devices.

On a CPU, XLA runs one program on one device whose matmuls share the cores through Eigen's
thread pool; at the small shapes of an RL update (batch 256, 256-wide layers) a matmul split
over two threads reaches less of the machine's peak than two single-threaded matmuls side by
side. :func:`use_cpu_cores` therefore exposes one CPU device per core, and :func:`member_mesh`
lays a population's member axis over them, so that each core trains its own share of the agents
(``benchmarks/bench_sac.py`` measures the gain). A computation that is not sharded still runs
on the first device with every core, as before. On a GPU or TPU backend the same calls shard
over the accelerators, or do nothing when there is one.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh

from udg.errors import UdgError

MEMBER_AXIS = "members"
"""Name of the mesh axis that the leading member (agent) axis is sharded over."""


def use_cpu_cores(count: int | None = None) -> int:
    """Expose ``count`` CPU devices (default: one per usable core) to JAX.

    The environment variable ``UDG_CPU_DEVICES``, when set, overrides ``count`` (1 turns the
    sharding off). Must run before JAX's first computation, as a process's entry point does
    (``udg`` on the command line, the test suite, the benchmarks); called later it changes
    nothing. Returns the requested count; raises UdgError for a count below 1.
    """
    env = os.environ.get("UDG_CPU_DEVICES")
    if env is not None:
        if not env.strip().isdigit() or int(env) < 1:
            raise UdgError(f"UDG_CPU_DEVICES must be a positive integer, got {env!r}")
        count = int(env)
    elif count is None:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        count = len(cores) if cores else os.cpu_count() or 1
    if count < 1:
        raise UdgError(f"the number of CPU devices must be >= 1, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend already started: keep its devices
        pass
    return count


def member_mesh(num_members: int) -> Mesh | None:
    """A one-axis mesh over as many local devices as divide ``num_members`` evenly, so that
    every device holds the same number of members; None when that is a single device."""
    devices = jax.local_devices()
    size = max(n for n in range(1, len(devices) + 1) if num_members % n == 0)
    if size == 1:
        return None
    return Mesh(np.array(devices[:size]), (MEMBER_AXIS,))

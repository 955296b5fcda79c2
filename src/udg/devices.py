"""How udg spreads independent members (the K agents of a population) over the local devices.

On a CPU, XLA runs one program on one device whose matmuls share the cores through Eigen's
thread pool; at the small shapes of an RL update (batch 256, 256-wide layers) a matmul split
over two threads reaches less of the machine's peak than two single-threaded matmuls side by
side. :func:`use_cpu_cores` therefore exposes one CPU device per core, and :func:`member_mesh`
lays a population's member axis over them, so that each core trains its own share of the agents
(``benchmarks/bench_sac.py`` measures the gain). A computation that is not sharded still runs
on the first device with every core, as before. On a GPU or TPU backend the same calls shard
over the accelerators, or do nothing when there is one.

:func:`use_compilation_cache` is the other process-level setting an entry point makes: XLA's
compiled programs are kept on disk, so a rerun, a resumed run or a Ray worker on the same
machine loads a program the machine compiled before instead of compiling it again (on 2 cores a
small network's init alone takes seconds to compile).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from udg.errors import UdgError

MEMBER_AXIS = "members"
"""Name of the mesh axis that the leading member (agent) axis is sharded over."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(cores) if cores else os.cpu_count() or 1


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
        count = usable_cores()
    if count < 1:
        raise UdgError(f"the number of CPU devices must be >= 1, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend already started: keep its devices
        pass
    return count


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/udg/jax`` (default ``~/.cache/udg/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "udg" / "jax"


def use_compilation_cache(
    path: str | os.PathLike[str] | None = None, min_compile_seconds: float = 0.2
) -> Path | None:
    """Keep compiled XLA programs in ``path`` (default :func:`default_cache_dir`) and load them
    from there, for this process and the processes it starts (Ray's workers read the
    environment variable it sets). Programs that compiled in under ``min_compile_seconds`` are
    not stored.

    ``UDG_COMPILATION_CACHE`` overrides ``path``; ``off`` (or empty) turns the cache off. A
    folder that cannot be created leaves the cache off: it only saves time. JAX keys each entry
    by the program, its compile options and the JAX version, so a hit is the same program.
    Returns the folder in use, or None.
    """
    env = os.environ.get("UDG_COMPILATION_CACHE")
    if env is not None:
        if env.strip().lower() in ("", "off"):
            return None
        path = env
    folder = Path(path) if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(min_compile_seconds)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return folder


def member_mesh(num_members: int) -> Mesh | None:
    """A one-axis mesh over as many local devices as divide ``num_members`` evenly, so that
    every device holds the same number of members; None when that is a single device."""
    devices = jax.local_devices()
    size = max(n for n in range(1, len(devices) + 1) if num_members % n == 0)
    if size == 1:
        return None
    return Mesh(np.array(devices[:size]), (MEMBER_AXIS,))

"""Shared fixtures: small real datasets collected once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
# The suite's programs are tiny, so XLA's compile time is most of its time: compiling without
# the backend's optimisation passes is 2-3x faster to compile (a SAC update: 5 s -> 2-3 s on 2
# cores). Tests compare runs made under the same flags, never against numbers from an optimised
# build. Set before JAX starts; subprocesses and Ray workers inherit it.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
).strip()

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from udg.devices import use_compilation_cache, use_cpu_cores  # noqa: E402

# Two CPU devices whatever the machine, as `udg` sets one per core: the suite runs the sharded
# population path (agents split over the devices) that the command line runs.
use_cpu_cores(2)
# A compilation cache of this session only (nothing carried over from an earlier run): tests
# that build the same program anew, subprocesses and Ray workers load it instead of compiling.
# Set in the environment, so that `udg` run as a subprocess uses it too; removed at exit.
os.environ["UDG_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="udg-test-xla-")
atexit.register(shutil.rmtree, os.environ["UDG_COMPILATION_CACHE"], ignore_errors=True)
use_compilation_cache(min_compile_seconds=0)


@pytest.fixture(scope="session")
def point_episodes():
    from udg.data.collect import collect_episodes, uniform_random_policy
    from udg.envs import make_env

    env = make_env("point", max_episode_steps=50)
    policy = uniform_random_policy(env.action_space, np.random.default_rng(0))
    return collect_episodes(env, policy, 500, seed=0)


@pytest.fixture
def point_root(tmp_path, point_episodes):
    """A Minari root holding three point datasets with distinct drifts."""
    from udg.data.dataset import Episode
    from udg.data.minari_io import dataset_id_for, write_dataset

    for name, shift in [("a", 0.0), ("b", 1.0), ("c", -1.0)]:
        episodes = [
            Episode(
                observations=e.observations,
                actions=e.actions,
                rewards=e.rewards,
                terminations=e.terminations,
                truncations=e.truncations,
                infos={**e.infos, "x_velocity": e.infos["x_velocity"] + shift},
            )
            for e in point_episodes
        ]
        write_dataset(episodes, tmp_path, dataset_id_for("point", name), "point")
    return tmp_path

"""Tests of the member sharding over local devices (the suite runs with two CPU devices, see
conftest.py): the mesh, sharded population updates against unsharded ones, the settings."""

import functools

import jax
import numpy as np
import pytest
from test_sac import ACT_DIM, OBS_DIM, TINY, random_batch

from udg.agents import sac
from udg.cli.main import main
from udg.devices import MEMBER_AXIS, member_mesh, use_cpu_cores
from udg.errors import UdgError

STEPS = 3


def test_suite_runs_on_two_cpu_devices():
    assert len(jax.devices()) == 2  # else the sharded tests below test nothing


@pytest.mark.parametrize(("members", "size"), [(1, None), (2, 2), (3, None), (6, 2), (7, None)])
def test_member_mesh_splits_members_evenly(members, size):
    mesh = member_mesh(members)
    if size is None:
        assert mesh is None
    else:
        assert mesh.shape == {MEMBER_AXIS: size}


@pytest.mark.parametrize("vectorize", [False, True])
def test_sharded_population_update_equals_unsharded(vectorize):
    agents = sac.create_population(TINY, jax.random.key(0), 4, OBS_DIM, ACT_DIM)
    batches = random_batch(np.random.default_rng(0), 4, STEPS)
    update = functools.partial(sac.population_update_n, vectorize=vectorize)
    sharded, sharded_metrics = jax.jit(functools.partial(update, shard=True))(
        agents, batches, jax.random.key(1)
    )
    plain, plain_metrics = jax.jit(functools.partial(update, shard=False))(
        agents, batches, jax.random.key(1)
    )
    # With lax.map each device runs the same per-agent program: equal to the last bit. vmap
    # batches 2 agents instead of 4, so its matmuls may round differently.
    same = (
        np.testing.assert_array_equal
        if not vectorize
        else functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
    )
    jax.tree.map(same, sharded_metrics, plain_metrics)
    jax.tree.map(
        lambda a, b: same(np.asarray(a), np.asarray(b)),
        jax.tree.map(_plain, sharded),
        jax.tree.map(_plain, plain),
    )
    kernel = sharded.actor_params["params"]["Dense_0"]["kernel"]
    assert kernel.sharding.spec[0] == MEMBER_AXIS  # stays split for the next call
    assert len(kernel.sharding.device_set) == 2
    before = agents.actor_params["params"]["Dense_0"]["kernel"]
    assert not np.allclose(np.asarray(kernel), np.asarray(before))  # the update did something


def _plain(x: jax.Array) -> jax.Array:
    """Random keys as their raw data, so that NumPy can compare them."""
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def test_use_cpu_cores_after_start_keeps_the_devices(monkeypatch):
    monkeypatch.delenv("UDG_CPU_DEVICES", raising=False)
    assert use_cpu_cores(5) == 5
    assert len(jax.devices()) == 2
    monkeypatch.setenv("UDG_CPU_DEVICES", "3")
    assert use_cpu_cores() == 3


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bad_device_count_is_a_one_line_error(monkeypatch, capsys, value):
    monkeypatch.setenv("UDG_CPU_DEVICES", value)
    with pytest.raises(UdgError, match="UDG_CPU_DEVICES must be a positive integer"):
        use_cpu_cores()
    assert main(["tasks"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("udg: error: UDG_CPU_DEVICES") and "\n" not in err


def test_restored_population_keeps_the_template_placement():
    agents = sac.create_population(TINY, jax.random.key(0), 4, OBS_DIM, ACT_DIM)
    restored = sac.from_bytes(agents, sac.to_bytes(agents))
    same = jax.tree.map(
        lambda a, b: a.sharding.is_equivalent_to(b.sharding, a.ndim), restored, agents
    )
    assert all(jax.tree.leaves(same))
    kernel = restored.actor_params["params"]["Dense_0"]["kernel"]
    assert len(kernel.sharding.device_set) == 2
    as_numpy = jax.tree.map(np.asarray, agents)  # a NumPy template restores to one device
    single = sac.from_bytes(as_numpy, sac.to_bytes(agents))
    assert len(single.actor_params["params"]["Dense_0"]["kernel"].sharding.device_set) == 1


@pytest.mark.parametrize("value", ["off", ""])
def test_compilation_cache_turned_off(monkeypatch, value):
    from udg.devices import use_compilation_cache

    monkeypatch.setenv("UDG_COMPILATION_CACHE", value)
    assert use_compilation_cache() is None


def test_compilation_cache_in_a_folder_that_cannot_exist_is_left_off(monkeypatch, tmp_path):
    from udg.devices import use_compilation_cache

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("UDG_COMPILATION_CACHE", str(blocker / "cache"))
    assert use_compilation_cache() is None  # it only saves time: never an error


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    import os
    import subprocess
    import sys

    program = (
        "import time, jax, jax.numpy as jnp\n"
        "from udg.devices import use_compilation_cache\n"
        "use_compilation_cache(min_compile_seconds=0)\n"
        "from udg.agents import sac\n"
        "config = sac.SACConfig(hidden_dims=(8, 8), batch_size=4)\n"
        "agent = jax.jit(lambda k: sac.SAC.create(config, k, 3, 2))(jax.random.key(0))\n"
        "print(float(jax.tree.leaves(agent.actor_params)[0].sum()))\n"
    )
    env = dict(os.environ, UDG_COMPILATION_CACHE=str(tmp_path / "xla"))
    runs = [
        subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout  # the loaded program computes the same numbers
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert any(name.startswith("jit__lambda") for name in entries)

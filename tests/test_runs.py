"""Loading finished run folders: config, datasets, metrics, policy, model and bad folders."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import TINY, TINY_MOPO

from udg.agents import sac
from udg.envs import get_task
from udg.errors import UdgError
from udg.evaluation.evaluate import evaluate
from udg.experiments.generate import run_generate
from udg.experiments.offline import OfflineConfig, run_offline
from udg.experiments.runs import MANIFEST, config_dict, load_npz, load_run

OFFLINE = OfflineConfig(task="point-angle-0", select="top1", mopo=TINY_MOPO, eval_episode_length=20)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny generate run and a tiny offline run on its datasets."""
    root = tmp_path_factory.mktemp("runs")
    _, paths = run_generate(TINY, root / "generate")
    result = run_offline(OFFLINE, [root / "generate" / "datasets"], root / "offline")
    return root, paths, result


def test_generate_run_loads_its_config_datasets_and_metrics(runs):
    root, paths, _ = runs
    run = load_run(root / "generate")
    assert (run.kind, run.status, run.result) == ("generate", "complete", None)
    assert run.config == config_dict(TINY.validated())
    assert run.git_revision
    assert run.dataset_paths() == paths
    assert len(run.metrics()) == TINY.rounds
    agents = run.load_agents()
    assert sac.to_bytes(agents) == (root / "generate" / "agents.msgpack").read_bytes()
    assert agents.log_temperature.shape == (TINY.num_agents,)
    with pytest.raises(UdgError, match="not an offline run"):
        run.load_policy()


def test_offline_run_loads_a_policy_that_acts_as_the_saved_one(runs):
    root, _, result = runs
    run = load_run(root / "offline")
    assert (run.kind, run.status, run.result) == ("offline", "complete", result)
    # The manifest holds MOPO's settings under the learner's name, the data's folders and the
    # fingerprint of its files besides the config.
    expected = {k: v for k, v in config_dict(OFFLINE).items() if k != "learner"} | {"algo": "mopo"}
    stored = {k: v for k, v in run.config.items() if k not in ("data", "data_fingerprint")}
    assert stored == expected and len(run.config["data_fingerprint"]) == 16
    policy = run.load_policy()
    assert sac.to_bytes(policy) == (root / "offline" / "policy.msgpack").read_bytes()
    # The checkpoint holds the run's population of one.
    population = jax.tree.map(lambda leaf: leaf[None], policy)
    stored = load_npz(root / "offline" / "checkpoint.npz")["agents"].tobytes()
    saved = jax.tree.map(lambda leaf: leaf[0], sac.from_bytes(population, stored))
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(8, result["observation_dims"])))
    np.testing.assert_array_equal(
        sac.jit_greedy_actions_single(policy, obs), sac.jit_greedy_actions_single(saved, obs)
    )
    # Its evaluation replays the run's last one.
    dims = result["observation_dims"]
    returns = evaluate(
        get_task(OFFLINE.task),
        lambda o: np.asarray(sac.jit_greedy_actions_single(policy, jnp.asarray(o[:, :dims]))),
        TINY_MOPO.eval_episodes,
        seed=OFFLINE.seed,
        index=(TINY_MOPO.epochs,),
        max_episode_steps=OFFLINE.eval_episode_length,
    )
    assert returns.mean() == pytest.approx(result["last_return"], rel=1e-5, abs=1e-6)
    assert run.load_model().obs_dim == dims
    curve = run.learning_curve()
    assert [row["epoch"] for row in curve] == [2, 4]
    with pytest.raises(UdgError, match="not a generate run"):
        run.dataset_paths()


@pytest.mark.parametrize(
    "manifest, message",
    [
        (None, "no manifest.json"),
        ("{not json", "cannot read"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "offline", "status": "complete"}', "needs kind, status and config"),
        ('{"kind": "offline", "status": "complete", "config": {}, "result": 3}', "result"),
    ],
)
def test_bad_run_folders_are_refused(tmp_path, manifest, message):
    if manifest is not None:
        (tmp_path / MANIFEST).write_text(manifest)
    with pytest.raises(UdgError, match=message):
        load_run(tmp_path)


def test_missing_folder_and_files_are_refused(tmp_path):
    with pytest.raises(UdgError, match="no such run folder"):
        load_run(tmp_path / "absent")
    (tmp_path / MANIFEST).write_text(
        json.dumps({"kind": "offline", "status": "running", "config": {}})
    )
    with pytest.raises(UdgError, match="holds no policy.msgpack"):
        load_run(tmp_path).load_policy()

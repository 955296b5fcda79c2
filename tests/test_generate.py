"""Stage 1 runner: datasets, reward parts, resume equality, baselines and bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tiny_configs import TINY, tensorboard_scalars

from udg.data.minari_io import find_datasets, load_dataset
from udg.envs import get_task
from udg.errors import UdgError
from udg.experiments.generate import plot_run_coverage, run_generate


class Interrupt(Exception):
    pass


def _datasets(run):
    return [load_dataset(p) for p in find_datasets([run / "datasets"])]


def test_generate_writes_one_dataset_per_agent_with_reward_parts(tmp_path):
    config = dataclasses.replace(TINY, task="point-angle-0", w_task=0.5, w_div=2.0)
    _, paths = run_generate(config, tmp_path / "run")
    assert [p.name for p in paths] == ["agent-0-v0", "agent-1-v0", "agent-2-v0"]
    for data in _datasets(tmp_path / "run"):
        assert data.num_transitions == 500 and data.num_episodes == 10
        parts = data.infos["reward_task"], data.infos["reward_diversity"]
        np.testing.assert_allclose(data.rewards, 0.5 * parts[0] + 2.0 * parts[1], atol=1e-9)
        task = get_task("point-angle-0").reward(data.columns())
        np.testing.assert_allclose(parts[0], task, atol=1e-9)
        assert (parts[1][data.episode_starts[1] :] > 0).any()  # diversity paid after round 0
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert plot_run_coverage(tmp_path / "run").stat().st_size > 1000
    final = plot_run_coverage(tmp_path / "run", last=2, out=tmp_path / "final.png")
    assert final == tmp_path / "final.png" and final.stat().st_size > 1000
    with pytest.raises(UdgError, match="--last must be at least 1"):
        plot_run_coverage(tmp_path / "run", last=0, out=tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# K = 3 runs on one device; K = 4 splits the agents over the suite's two CPU devices, so that
# their placement survives the checkpoint (udg.devices).
@pytest.mark.parametrize("num_agents", [3, 4])
def test_interrupted_run_resumes_to_identical_datasets(tmp_path, num_agents):
    config = dataclasses.replace(TINY, num_agents=num_agents)
    _, _ = run_generate(config, tmp_path / "straight")

    def stop_at_round_7(round_done, _row):
        if round_done == 7:  # the last checkpoint was after round 6
            raise Interrupt

    with pytest.raises(Interrupt):
        run_generate(config, tmp_path / "resumed", stop_at_round_7)
    assert not (tmp_path / "resumed" / "datasets").exists()
    run_generate(config, tmp_path / "resumed")
    metrics = [(tmp_path / run / "metrics.csv").read_text() for run in ("straight", "resumed")]
    assert metrics[0] == metrics[1]  # rows read back on resume are rewritten as they were
    for a, b in zip(_datasets(tmp_path / "straight"), _datasets(tmp_path / "resumed"), strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        for column in a.infos:
            np.testing.assert_array_equal(a.infos[column], b.infos[column])


def test_event_files_of_attempts_within_one_second_sort_as_they_ran(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    import tensorboardX.event_file_writer as event_file_writer

    from udg.experiments import tensorboard

    monkeypatch.setattr(event_file_writer.time, "time", lambda: 1_700_000_000.0)
    for attempt in range(3):
        writer = tensorboard.open_log(tmp_path, resume_step=attempt or None)
        tensorboard.write_rows(writer, [{"env_steps": attempt, "attempt": attempt}], "env_steps")
        tensorboard.close(writer)
    scalars = tensorboard_scalars(tmp_path)  # reads the files in name order, as TensorBoard does
    assert scalars == {("attempt", a): [float(a)] for a in range(3)}


def test_tensorboard_curves_survive_a_resume_without_duplicates(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    import udg.experiments.generate as generate_module
    import udg.experiments.runs as runs_module

    savez, state_saves = runs_module.atomic_savez, []

    def killed_at_third_state_save(path, **arrays):
        if path.name == "state.npz":
            state_saves.append(path)
            if len(state_saves) == 3:  # round 9: its curves are written, its state is not
                raise Interrupt
        savez(path, **arrays)

    monkeypatch.setattr(runs_module, "atomic_savez", killed_at_third_state_save)
    monkeypatch.setattr(generate_module, "git_revision", lambda: "rev-a")
    with pytest.raises(Interrupt):
        run_generate(TINY, tmp_path / "run")
    monkeypatch.setattr(runs_module, "atomic_savez", savez)
    monkeypatch.setattr(generate_module, "git_revision", lambda: "rev-b")
    generator, _ = run_generate(TINY, tmp_path / "run")  # resumes after round 6
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["git_revision"] == "rev-a" and manifest["git_revisions"] == ["rev-a", "rev-b"]
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    assert all(len(v) == 1 for v in scalars.values())
    steps = sorted({step for tag, step in scalars if tag == "return/agent_0"})
    assert steps == [TINY.episode_length * (r + 1) for r in range(TINY.rounds)]
    for row in generator.metrics:
        step = int(row["env_steps"])
        assert scalars[("return/agent_1", step)][0] == pytest.approx(row["return_1"], rel=1e-6)


def test_rerun_of_finished_run_does_nothing(tmp_path):
    first, paths = run_generate(TINY, tmp_path / "run")
    before = paths[0].joinpath("data", "main_data.hdf5").stat().st_mtime_ns
    second, again = run_generate(TINY, tmp_path / "run")
    assert again == paths
    # The finished run's metrics come back too (the CLI's summary table reads them).
    assert len(second.metrics) == TINY.rounds
    assert second.metrics[-1]["return_0"] == pytest.approx(first.metrics[-1]["return_0"])
    assert paths[0].joinpath("data", "main_data.hdf5").stat().st_mtime_ns == before


def test_supervised_baseline_is_plain_sac_on_the_task(tmp_path):
    config = dataclasses.replace(TINY, num_agents=1, task="point-angle-90", w_task=1.0, w_div=0.0)
    _, paths = run_generate(config, tmp_path / "sup")
    (data,) = _datasets(tmp_path / "sup")
    np.testing.assert_allclose(
        data.rewards, get_task("point-angle-90").reward(data.columns()), atol=1e-9
    )
    assert np.all(data.infos["reward_diversity"] == 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_agents": 1}, "needs at least 2 agents"),
        ({"features": ("x_position", "height")}, "height not stored by env point"),
        ({"task": "ant-angle-0", "w_task": 1.0}, "is for env ant, not point"),
        ({"task": "bogus-task", "w_task": 1.0}, "unknown task"),
        ({"w_task": 1.0}, "needs a task"),
        ({"w_div": 0.0}, "nothing to learn"),
        ({"steps": 0}, "must be positive"),
        ({"env": "hopper"}, "unknown env"),
    ],
)
def test_bad_settings(tmp_path, changes, message):
    with pytest.raises(UdgError, match=message):
        run_generate(dataclasses.replace(TINY, **changes), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_other_config_in_existing_run_is_refused(tmp_path):
    run_generate(TINY, tmp_path / "run")
    manifest = (tmp_path / "run" / "manifest.json").read_text()
    with pytest.raises(UdgError, match=r"different config \(seed\)"):
        run_generate(dataclasses.replace(TINY, seed=1), tmp_path / "run")
    assert (tmp_path / "run" / "manifest.json").read_text() == manifest


def test_extended_run_equals_a_run_made_with_more_steps(tmp_path):
    run_generate(TINY, tmp_path / "straight")
    short = dataclasses.replace(TINY, steps=300)
    run_generate(short, tmp_path / "extended")
    with pytest.raises(UdgError, match=r"different config \(steps\)"):
        run_generate(dataclasses.replace(TINY, steps=200), tmp_path / "extended")
    generator, _ = run_generate(TINY, tmp_path / "extended")
    assert generator.round == TINY.rounds
    for a, b in zip(
        _datasets(tmp_path / "straight"), _datasets(tmp_path / "extended"), strict=True
    ):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.rewards, b.rewards)
    manifest = json.loads((tmp_path / "extended" / "manifest.json").read_text())
    assert manifest["config"]["steps"] == TINY.steps and manifest["status"] == "complete"
    with_rollouts = dataclasses.replace(short, final_rollouts=1)
    run_generate(with_rollouts, tmp_path / "rollouts")
    with pytest.raises(UdgError, match="cannot be extended"):
        run_generate(dataclasses.replace(with_rollouts, steps=500), tmp_path / "rollouts")


def test_run_made_before_a_config_field_existed_resumes_with_its_default(tmp_path):
    run_generate(TINY, tmp_path / "run")
    path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["observe_features"]  # as written by an older udg
    path.write_text(json.dumps(manifest))
    run_generate(TINY, tmp_path / "run")  # same settings: accepted, nothing to do
    with pytest.raises(UdgError, match=r"different config \(observe_features\)"):
        run_generate(dataclasses.replace(TINY, observe_features=True), tmp_path / "run")


def test_observed_features_reach_the_agents_but_not_the_datasets(tmp_path):
    config = dataclasses.replace(TINY, observe_features=True, features=("x_position",))
    generator, _ = run_generate(config, tmp_path / "run")  # acts on them after the warm-up
    datasets = _datasets(tmp_path / "run")
    env_obs_dim = datasets[0].observations.shape[-1]
    assert generator.obs_dim == env_obs_dim + 1
    replay = generator.replay.state_dict()
    for i, data in enumerate(datasets):
        n = data.num_transitions  # infos are reported after the step: next-state features
        seen = np.concatenate([data.next_observations, data.infos["x_position"][:, None]], -1)
        np.testing.assert_array_equal(replay["next_observations"][i, :n], seen.astype(np.float32))
        inside = np.setdiff1d(np.arange(1, n), data.episode_starts)  # not the reset states
        np.testing.assert_array_equal(
            replay["observations"][i, inside], seen[inside - 1].astype(np.float32)
        )


@given(total=st.integers(0, 500), per_call=st.integers(1, 64))
def test_update_chunks_sum_to_total_in_few_distinct_lengths(total, per_call):
    from udg.experiments.generate import update_chunks

    chunks = update_chunks(total, per_call)
    assert sum(chunks) == total and all(1 <= n <= per_call for n in chunks)
    rest = chunks[total // per_call :]
    assert len(rest) == len(set(rest)) <= max(1, per_call.bit_length())  # distinct powers of two
    assert all(n & (n - 1) == 0 for n in rest) and rest == sorted(rest, reverse=True)


def test_learning_compiles_few_update_shapes_whatever_the_episode_lengths(tmp_path):
    from udg.agents import sac
    from udg.data.dataset import Episode
    from udg.experiments import generate

    config = dataclasses.replace(TINY, updates_per_step=1.0, updates_per_call=7).validated()
    run = generate.create_run(config, tmp_path / "g")
    columns = ("x_position", "y_position", "x_velocity", "y_velocity")
    episode = Episode(
        observations=np.zeros((2, 4)),
        actions=np.zeros((1, 2), np.float32),
        rewards=np.zeros(1),
        terminations=np.zeros(1, bool),
        truncations=np.ones(1, bool),
        infos={c: np.zeros(2) for c in columns},
    )
    episodes = generate.score_episodes(
        config, None, [episode] * config.num_agents, np.zeros((config.num_agents, 1))
    )
    for agent, scored in enumerate(episodes):
        generate._add_to_replay(run, agent, scored)
    before = sac.jit_population_update_n._cache_size()
    for length in (3, 11, 13, 7, 5, 20):  # remainders 3, 4, 6, 0, 5, 6 of chunks of 7
        generate.learn(run, length)
    # Scan lengths 7, 4, 2, 1 at most, whatever the remainders.
    assert sac.jit_population_update_n._cache_size() - before <= 4
    assert int(run.agents.step[0]) == 3 + 11 + 13 + 7 + 5 + 20


def test_a_run_larger_than_the_memory_is_refused_before_any_work(tmp_path):
    from udg.experiments.generate import memory_estimate

    huge = dataclasses.replace(TINY, steps=10**12)
    assert memory_estimate(huge.validated()) > 2**40  # a TiB and more, from the shapes alone
    with pytest.raises(
        UdgError, match=r"needs about [\d,.]+ [GT]iB of memory, more than this machine's"
    ):
        run_generate(huge, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    many = dataclasses.replace(TINY, num_agents=10_000).validated()
    assert memory_estimate(many) > 600e9  # the pairwise diversity term: XLA asked for 720 GB
    with pytest.raises(UdgError, match="use fewer agents or steps"):
        run_generate(many, tmp_path / "run")
    assert not (tmp_path / "run").exists()

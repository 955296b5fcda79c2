"""udg export: a task's selection as a Minari dataset with the task's rewards, complete
metadata, and d3rlpy's layout of the same transitions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from udg.cli.main import main
from udg.data.dataset import Episode
from udg.data.export import (
    COLLECTED_REWARD,
    D3RLPY_FILE,
    d3rlpy_arrays,
    default_name,
    export_selection,
)
from udg.data.minari_io import find_datasets, load_dataset, load_episodes, minari_provenance
from udg.data.relabel import relabel
from udg.envs import get_task


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def test_export_holds_the_ranked_selection_with_the_tasks_rewards(point_root, tmp_path):
    import minari

    task = get_task("point-angle-90")
    out = tmp_path / "exports"
    done = export_selection([point_root], task, "top2", out, ref_scores=(-1.0, 3.0))
    assert done.dataset_id == "udg/point/point-angle-90-top2-v0"
    # The export's rewards are udg rank's relabelled rewards of the top two, best first.
    sources = {str(p): load_dataset(p) for p in find_datasets([point_root])}
    expected = np.concatenate(
        [relabel(sources[p], task).task_rewards[task.name] for p in done.selected]
    )
    exported = load_dataset(done.path)
    np.testing.assert_array_equal(exported.rewards, expected)
    assert done.selected == [str(sources[p].metadata["path"]) for p in done.selected]
    assert [r.rank for r in done.ranking] == [1, 2, 3]
    assert done.mean_return == pytest.approx(np.mean(exported.episode_returns()))
    # Everything else is the source's; the collected reward is kept as an info column.
    first = load_dataset(done.selected[0])
    n = first.num_transitions
    np.testing.assert_array_equal(exported.observations[:n], first.observations)
    np.testing.assert_array_equal(exported.actions[:n], first.actions)
    np.testing.assert_array_equal(exported.infos[COLLECTED_REWARD][:n], first.rewards)
    # Minari reads it, with every metadata field filled.
    os.environ["MINARI_DATASETS_PATH"] = str(out)
    try:
        loaded = minari.load_dataset(done.dataset_id)
        assert loaded.total_steps == exported.num_transitions
        metadata = loaded.storage.metadata
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    for field in ("author", "code_permalink", "requirements", "eval_env_spec", "description"):
        assert metadata.get(field), field
    assert metadata["ref_min_score"] == -1.0 and metadata["ref_max_score"] == 3.0
    assert any(r.startswith("udg-rl>=") for r in metadata["requirements"])
    udg = metadata["udg"]
    assert udg["task"] == task.name and udg["formula"] == task.formula
    assert udg["selection"] == "top2" and udg["sources"] == done.selected
    assert udg["udg_version"] and udg["git_revision"]


def test_an_export_refuses_to_replace_a_dataset(point_root, tmp_path):
    from udg.errors import UdgError

    task = get_task("point-angle-0")
    export_selection([point_root], task, "all", tmp_path / "x", d3rlpy=False)
    with pytest.raises(UdgError, match="exists already"):
        export_selection([point_root], task, "all", tmp_path / "x")


def test_default_names_are_minari_ids():
    assert default_name(get_task("rooms-goal-1,-2.5"), "top:3") == "rooms-goal-1_-2.5-top3"


def test_the_eval_env_of_mujoco_data_is_plain_gymnasium():
    assert json.loads(minari_provenance("halfcheetah", None)["eval_env"].to_json())["id"] == (
        "HalfCheetah-v5"
    )
    assert minari_provenance("ant", 50)["eval_env"].id == "Ant-v5"
    assert minari_provenance("ant", 50)["eval_env"].max_episode_steps == 50
    assert minari_provenance("point", None)["eval_env"].id == "udg/Point-v0"


def _d3rlpy_transitions(arrays: dict[str, np.ndarray]) -> list[tuple]:
    """Transitions as d3rlpy's MDPDataset and BasicTransitionPicker make them: episodes end at
    a terminal or timeout; a terminated one has as many transitions as rows (the last with a
    zero next observation), any other one row fewer (the next observation is the next row)."""
    ends = np.flatnonzero(np.maximum(arrays["terminals"], arrays["timeouts"]))
    out, start = [], 0
    for end in ends:
        obs, act = arrays["observations"][start : end + 1], arrays["actions"][start : end + 1]
        rew, terminal = arrays["rewards"][start : end + 1, 0], bool(arrays["terminals"][end])
        for i in range(len(obs) if terminal else len(obs) - 1):
            last = terminal and i == len(obs) - 1
            nxt = np.zeros_like(obs[i]) if last else obs[i + 1]
            out.append((obs[i], act[i], rew[i], nxt, last))
        start = end + 1
    return out


def test_d3rlpy_layout_gives_exactly_the_episodes_transitions(point_episodes):
    truncated = point_episodes[0]
    t = len(truncated)
    terminated = Episode(
        observations=truncated.observations,
        actions=truncated.actions,
        rewards=truncated.rewards + 1.0,
        terminations=np.arange(t) == t - 1,
        truncations=np.zeros(t, bool),
    )
    episodes = [truncated, terminated, point_episodes[1]]
    transitions = _d3rlpy_transitions(d3rlpy_arrays(episodes))
    expected = [
        (e.observations[i], e.actions[i], e.rewards[i], e.observations[i + 1], e.terminations[i])
        for e in episodes
        for i in range(len(e))
    ]
    assert len(transitions) == len(expected) == sum(len(e) for e in episodes)
    for got, want in zip(transitions, expected, strict=True):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        assert got[2] == pytest.approx(want[2], rel=1e-6)
        assert got[4] == want[4]
        if not want[4]:  # a terminal transition's next observation is not used
            np.testing.assert_allclose(got[3], want[3], rtol=1e-6)


def test_cli_export_writes_d3rlpy_arrays_of_the_export(capsys, point_root, tmp_path):
    out = tmp_path / "exports"
    code = main(
        ["export", str(point_root), "--task", "point-angle-45", "--out", str(out),
         "--select", "top:2", "--json"]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["dataset_id"] == "udg/point/point-angle-45-top2-v0"
    path = Path(printed["path"])
    with np.load(path / D3RLPY_FILE) as arrays:
        _, _, episodes = load_episodes(path)
        np.testing.assert_array_equal(
            {k: arrays[k] for k in arrays.files}["rewards"][:, 0],
            d3rlpy_arrays(episodes)["rewards"][:, 0],
        )
        assert len(arrays["observations"]) == printed["transitions"] + len(episodes)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "ant-angle-0"], "is for env point, not ant"),
        (["--select", "top:0"], "unknown selection 'top:0'"),
        (["--select", "top:9"], "needs 9 datasets but only 3"),
        (["--name", "a/b"], "a dataset name is"),
        (["--name", ".."], "a dataset name is"),
        (["--ref-max-score", "nan"], "--ref-max-score must be a finite number"),
        (["--ref-min-score", "1"], "needs --ref-max-score"),
        (["--reference", "/no/such.json"], "cannot read --reference"),
        (["--out", "FILE"], "is a file, not a folder"),
        (["--out", "/proc/udg-export"], "cannot be written"),
        (["--out", "x" * 300], "file systems allow 255"),
    ],
)
def test_cli_export_bad_input_is_one_line_and_leaves_nothing(
    capsys, point_root, tmp_path, flags, message
):
    (tmp_path / "FILE").write_text("x")
    flags = [str(tmp_path / "FILE") if f == "FILE" else f for f in flags]
    if flags[0] == "--out" and flags[1].startswith("x"):
        flags[1] = str(tmp_path / flags[1])
    argv = ["export", str(point_root), "--task", "point-angle-0", "--out", str(tmp_path / "o")]
    before = _files(tmp_path)
    code = main(argv + flags)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("udg: error: ") and err.count("\n") == 1, err
    assert message in err
    assert _files(tmp_path) == before


def test_reference_rows_of_an_experiment_become_minaris_scores(capsys, point_root, tmp_path):
    results = tmp_path / "results.json"
    reference = {"random": {"mean": -0.5}, "expert": {"mean": 2.5}}
    results.write_text(json.dumps({"reference": {"point-angle-0": reference}}))
    argv = ["export", str(point_root), "--task", "point-angle-0", "--out", str(tmp_path / "o")]
    assert main([*argv, "--reference", str(results), "--json"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    metadata = json.loads((path / "data" / "metadata.json").read_text())
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (-0.5, 2.5)
    code = main([*argv, "--name", "other", "--reference", str(point_root)])  # not a file
    assert code == 2 and "cannot read --reference" in capsys.readouterr().err


def test_udg_datasets_leave_minari_nothing_to_warn_about(tmp_path, point_episodes):
    import warnings

    from udg.data.minari_io import write_dataset
    from udg.provenance import Authorship

    who = Authorship(author="A. Researcher", author_email="a@example.org", code_permalink="x")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module="minari")
        path = write_dataset(
            point_episodes[:2], tmp_path, "udg/point/w-v0", "point", authorship=who
        )
    metadata = json.loads((path / "data" / "metadata.json").read_text())
    assert metadata["author"] == ["A. Researcher"] and metadata["author_email"] == ["a@example.org"]

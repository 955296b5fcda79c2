"""The verbs over finished runs (`udg plot`, `udg evaluate`, `udg diversity`) on tiny runs:
what they print, and the one-line refusals of bad input before any work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_configs import TINY, TINY_MOPO

from udg.cli.main import main
from udg.data.collect import random_episodes
from udg.data.minari_io import dataset_id_for, write_dataset
from udg.experiments.offline import OfflineConfig, run_offline
from udg.experiments.runs import config_dict, write_manifest
from udg.offline import iql, td3bc
from udg.offline.learners import ModelFreeConfig

OFFLINE = OfflineConfig(task="point-angle-0", select="top1", mopo=TINY_MOPO, eval_episode_length=20)
# TINY_MOPO's schedule (4 epochs of 20 updates, evaluated at epochs 2 and 4 on 2 episodes) with
# a model-free learner of 16-wide networks.
SCHEDULE = {"epochs": 4, "steps_per_epoch": 20, "eval_every": 2, "eval_episodes": 2}
MODEL_FREE = {
    name: OfflineConfig(
        task="point-angle-0",
        select="top1",
        eval_episode_length=20,
        learner=ModelFreeConfig(
            learner=config(hidden_dims=(16, 16), batch_size=32), checkpoint_every=2, **SCHEDULE
        ),
    )
    for name, config in (("td3bc", td3bc.TD3BCConfig), ("iql", iql.IQLConfig))
}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny finished offline run, a copy of it whose folder has the same name, and a generate
    run folder holding three agents' datasets (random episodes stand in for the agents')."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    for i in range(2):
        write_dataset(
            random_episodes("point", 400, i, 50), data, dataset_id_for("point", f"d{i}"), "point"
        )
    offline = root / "udg-top1" / "seed0"
    run_offline(OFFLINE, [data], offline)
    shutil.copytree(offline, root / "other" / "seed0")
    generate = root / "generate"
    for i in range(TINY.num_agents):
        episodes = random_episodes("point", 500, 10 + i, TINY.episode_length)
        write_dataset(
            episodes, generate / "datasets", dataset_id_for("point", f"agent-{i}"), "point"
        )
    write_manifest(generate, "generate", "complete", config_dict(TINY.validated()))
    return {
        "offline": offline,
        "other": root / "other" / "seed0",
        "generate": generate,
        "root": root,
    }


def test_plot_draws_runs_labelled_apart_on_sac_updates(runs, capsys, monkeypatch):
    from udg.experiments import plots

    drawn = {}
    real = plots.plot_learning_curves
    monkeypatch.setattr(
        plots,
        "plot_learning_curves",
        lambda steps, curves, *a, **k: drawn.update(steps=steps) or real(steps, curves, *a, **k),
    )
    out = runs["root"] / "figs" / "curves.png"
    status, stdout, _ = run(
        capsys, "plot", str(runs["offline"]), str(runs["other"]), "--out", str(out), "--json"
    )
    assert status == 0 and out.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(stdout)
    assert [r["run"] for r in summary["runs"]] == ["udg-top1/seed0", "other/seed0"]
    # Evaluated at epochs 2 and 4 of TINY_MOPO's 20 updates each.
    np.testing.assert_array_equal(drawn["steps"], [40, 80])
    result = json.loads((runs["offline"] / "result.json").read_text())
    assert summary["runs"][0]["last"] == pytest.approx(result["last_return"])
    status, stdout, _ = run(capsys, "plot", str(runs["offline"]), "--out", str(out))
    assert status == 0 and "seed0" in stdout


def test_evaluate_replays_the_runs_last_evaluation_episode_by_episode(runs, capsys):
    status, stdout, _ = run(capsys, "evaluate", str(runs["offline"]), "--episodes", "2", "--json")
    assert status == 0
    summary = json.loads(stdout)
    result = json.loads((runs["offline"] / "result.json").read_text())
    assert summary["task"] == "point-angle-0"
    assert summary["mean_return"] == pytest.approx(result["last_return"], rel=1e-5, abs=1e-6)
    episode = summary["episodes"][0]
    assert episode["steps"] == 20 and len(episode["final_position"]) == 2
    status, stdout, _ = run(
        capsys,
        "evaluate",
        str(runs["offline"]),
        "--task",
        "point-angle-90",
        "--episodes",
        "1",
        "--seed",
        "3",
    )
    assert status == 0 and "point-angle-90" in stdout and "mean return" in stdout


@pytest.fixture(scope="module")
def model_free_runs(runs):
    """A tiny finished TD3+BC run and IQL run on the offline run's data."""
    root = runs["root"]
    for algo, config in MODEL_FREE.items():
        run_offline(config, [root / "data"], root / algo / "seed0")
    return {algo: root / algo / "seed0" for algo in MODEL_FREE}


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_evaluate_replays_a_model_free_runs_last_evaluation(model_free_runs, capsys, algo):
    path = model_free_runs[algo]
    result = json.loads((path / "result.json").read_text())
    assert result["algo"] == algo
    status, stdout, _ = run(capsys, "evaluate", str(path), "--episodes", "2", "--json")
    assert status == 0
    summary = json.loads(stdout)
    assert summary["task"] == "point-angle-0" and len(summary["episodes"]) == 2
    assert summary["mean_return"] == pytest.approx(result["last_return"], rel=1e-5, abs=1e-6)


def test_plot_draws_model_free_runs_beside_mopos(runs, model_free_runs, capsys, monkeypatch):
    from udg.experiments import plots

    drawn = {}
    real = plots.plot_learning_curves
    monkeypatch.setattr(
        plots,
        "plot_learning_curves",
        lambda steps, curves, *a, **k: (
            drawn.update(steps=steps, curves=curves) or real(steps, curves, *a, **k)
        ),
    )
    out = runs["root"] / "figs" / "learners.png"
    paths = [runs["offline"], model_free_runs["td3bc"], model_free_runs["iql"]]
    status, stdout, _ = run(capsys, "plot", *map(str, paths), "--out", str(out), "--json")
    assert status == 0 and out.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(stdout)
    assert [r["run"] for r in summary["runs"]] == ["udg-top1/seed0", "td3bc/seed0", "iql/seed0"]
    np.testing.assert_array_equal(drawn["steps"], [40, 80])  # the same 20 updates an epoch
    for path, row in zip(paths, summary["runs"], strict=True):
        result = json.loads((path / "result.json").read_text())
        assert row["last"] == pytest.approx(result["last_return"])
        curve = drawn["curves"][row["run"]]
        assert len(curve) == 2 and curve[-1] == pytest.approx(result["last_return"])


def test_diversity_tables_the_agents_against_random_policies(runs, capsys):
    status, stdout, _ = run(capsys, "diversity", str(runs["generate"]), "--episodes", "3", "--json")
    assert status == 0
    summary = json.loads(stdout)
    assert summary["num_agents"] == TINY.num_agents
    for group in ("agents", "random"):
        w = np.array(summary[group]["w1"])  # [K, K]
        assert w.shape == (3, 3) and np.allclose(np.diag(w), 0) and np.allclose(w, w.T)
        assert summary[group]["min_w1"] == pytest.approx(w[~np.eye(3, dtype=bool)].min())
        assert len(summary[group]["policies"]) == 3
    assert summary["min_ratio"] > 0
    status, stdout, _ = run(capsys, "diversity", str(runs["generate"]), "--episodes", "2")
    assert status == 0 and "ratio of minima" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "{root}/missing", "--out", "{root}/f.png"], "no such run folder"),
        (["plot", "{generate}", "--out", "{root}/f.png"], "not an offline run"),
        (["plot", "{offline}", "{offline}", "--out", "{root}/f.png"], "given twice"),
        (["plot", "{offline}", "--out", "{root}/f.txt"], "name it"),
        (["plot", "{offline}", "--out", "{root}"], "is a folder"),
        (["plot", "{offline}", "--out", "{offline}/result.json/f.png"], "is a file, not a folder"),
        (["evaluate", "{generate}"], "not an offline run"),
        (["evaluate", "{offline}", "--task", "no-such-task"], "unknown task"),
        (["evaluate", "{offline}", "--task", "ant-angle-0"], "is for ant"),
        (["evaluate", "{offline}", "--episodes", "0"], "--episodes must be at least 1"),
        (["evaluate", "{offline}", "--seed", "-1"], "--seed must be in 0 .. 4294967295"),
        (["diversity", "{offline}"], "not a generate run"),
        (["diversity", "{generate}", "--episodes", "0"], "--episodes must be at least 1"),
        (["diversity", "{generate}", "--columns", "x", "y"], "no info columns"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, capsys, argv, message):
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in argv]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("udg: error:") and message in err


def test_unfinished_or_other_length_runs_are_refused(runs, capsys, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(runs["offline"], running)
    manifest = json.loads((running / "manifest.json").read_text())
    (running / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    status, _, err = run(capsys, "evaluate", str(running))
    assert status == 2 and "not a finished one" in err
    manifest["config"]["mopo"]["steps_per_epoch"] = 1000
    (running / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = run(
        capsys, "plot", str(runs["offline"]), str(running), "--out", str(tmp_path / "f.png")
    )
    assert status == 2 and r"differ in length: [20, 1000]" in err

"""The helper scripts under scripts/ on real (tiny) udg offline runs: what they read and refuse."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_configs import TINY_MOPO

from udg.experiments.generate_config import GenerateConfig
from udg.experiments.offline import OfflineConfig, run_offline
from udg.experiments.runs import config_dict
from udg.files import atomic_write_json

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def offline_runs(tmp_path, point_root):
    """Two tiny finished offline runs whose folders share the name seed0."""
    config = OfflineConfig(
        task="point-angle-0", select="top1", seed=0, mopo=TINY_MOPO, eval_episode_length=20
    )
    runs = [tmp_path / "udg-top1" / "seed0", tmp_path / "other" / "seed0"]
    for run in runs:
        run_offline(config, [point_root], run)
    return runs


def test_plot_offline_curves_labels_runs_apart_and_counts_their_updates(
    offline_runs, tmp_path, monkeypatch, capsys
):
    script = load_script("plot_offline_curves")
    drawn = {}
    monkeypatch.setattr(
        script,
        "plot_learning_curves",
        lambda steps, curves, *a, **k: drawn.update(steps=steps, curves=curves),
    )
    monkeypatch.setattr(
        sys, "argv", ["plot", *map(str, offline_runs), "--out", str(tmp_path / "f.png")]
    )
    script.main()
    assert sorted(drawn["curves"]) == ["other/seed0", "udg-top1/seed0"]
    # Evaluated at epochs 2 and 4 of TINY_MOPO's 20 updates each.
    np.testing.assert_array_equal(drawn["steps"], [40, 80])
    assert "| udg-top1/seed0 |" in capsys.readouterr().out


def test_plot_offline_curves_refuses_a_folder_without_manifest(offline_runs, tmp_path, monkeypatch):
    script = load_script("plot_offline_curves")
    (offline_runs[0] / "manifest.json").unlink()
    monkeypatch.setattr(
        sys, "argv", ["plot", str(offline_runs[0]), "--out", str(tmp_path / "f.png")]
    )
    with pytest.raises(SystemExit, match="manifest.json is missing"):
        script.main()
    drawn = {}
    monkeypatch.setattr(
        script, "plot_learning_curves", lambda steps, *a, **k: drawn.update(steps=steps)
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "plot",
            str(offline_runs[0]),
            "--out",
            str(tmp_path / "f.png"),
            "--updates-per-epoch",
            "7",
        ],
    )
    script.main()  # the flag stands in for the manifest
    np.testing.assert_array_equal(drawn["steps"], [14, 28])


def test_plot_offline_curves_refuses_a_run_twice_and_epochs_of_other_lengths(
    offline_runs, tmp_path, monkeypatch
):
    script = load_script("plot_offline_curves")
    out = ["--out", str(tmp_path / "f.png")]
    monkeypatch.setattr(sys, "argv", ["plot", str(offline_runs[0]), str(offline_runs[0]), *out])
    with pytest.raises(SystemExit, match="given twice"):
        script.main()
    manifest = offline_runs[1] / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["config"]["mopo"]["steps_per_epoch"] = 1000
    manifest.write_text(json.dumps(raw))
    monkeypatch.setattr(sys, "argv", ["plot", *map(str, offline_runs), *out])
    with pytest.raises(SystemExit, match=r"differ in length: \[20, 1000\]"):
        script.main()


def test_policy_episodes_loads_a_policy_of_any_network_size(offline_runs):
    # TINY_MOPO's SAC is 16 x 16; the script used to assume the small preset's 256 x 256.
    env, policy = load_script("policy_episodes").policy_of(offline_runs[0])
    action = policy(np.zeros(4, np.float32))
    assert env == "point" and action.shape == (2,) and np.all(np.abs(action) <= 1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "point-angle-0"], "No such file"),
        (["--task", "no-such-task"], "unknown task"),
    ],
)
def test_measure_offline_refuses_bad_input_in_one_line(tmp_path, monkeypatch, args, message):
    script = load_script("measure_offline")
    monkeypatch.setattr(sys, "argv", ["measure", str(tmp_path / "missing"), *args])
    with pytest.raises(SystemExit, match=message):
        script.main()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "2"], r"--agent 2: the run has agents 0\.\.1"),
        (["--scale", "huge"], "unknown scale 'huge'"),
    ],
)
def test_measure_offline_refuses_an_agent_or_scale_the_run_lacks(
    tmp_path, monkeypatch, args, message
):
    run = tmp_path / "run"
    config = config_dict(GenerateConfig(env="point", num_agents=2))
    atomic_write_json(run / "manifest.json", {"config": config})
    script = load_script("measure_offline")
    monkeypatch.setattr(sys, "argv", ["measure", str(run), "--task", "point-angle-0", *args])
    with pytest.raises(SystemExit, match=message):
        script.main()

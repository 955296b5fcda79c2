"""The one-off analyses under scripts/: what they read and refuse."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from udg.experiments.generate_config import GenerateConfig
from udg.experiments.runs import config_dict
from udg.files import atomic_write_json

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

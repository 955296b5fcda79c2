"""The command line: every subcommand in-process, and bad input as one line with exit 2."""

from __future__ import annotations

import json
import shutil
import typing

import pytest

from udg.cli.main import main
from udg.errors import UdgError


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_lists_envs_and_formulas(capsys):
    code, out, _ = run(capsys, "tasks", "--json")
    assert code == 0
    listing = json.loads(out)
    assert set(listing["envs"]) == {"point", "rooms", "ant", "halfcheetah"}
    names = {t["name"] for t in listing["tasks"]}
    assert {"ant-angle-0", "ant-angle-300", "cheetah-jump", "cheetah-crawl", "cheetah-run"} <= names
    code, out, _ = run(capsys, "tasks")
    assert code == 0 and "cheetah-jump" in out and "min(v_x, 3)" in out


def test_collect_list_show_rank(capsys, tmp_path):
    root = tmp_path / "ds"
    for seed in ("1", "2"):
        code, out, err = run(
            capsys,
            "collect-random",
            "--env",
            "point",
            "--steps",
            "300",
            "--seed",
            seed,
            "--out",
            str(root),
            "--max-episode-steps",
            "50",
        )
        assert code == 0, err
        assert "6 episodes, 300 transitions" in out
    code, out, _ = run(capsys, "datasets", "list", str(root), "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ["udg/point/random-s1-v0", "udg/point/random-s2-v0"]
    assert all(r["transitions"] == 300 and r["env"] == "point" for r in rows)
    code, out, _ = run(capsys, "datasets", "show", str(root / "udg/point/random-s1-v0"), "--json")
    shown = json.loads(out)
    assert shown["episodes"] == 6 and shown["udg"]["kind"] == "random"
    code, out, _ = run(capsys, "rank", "--task", "point-angle-90", str(root), "--json")
    ranking = json.loads(out)["ranking"]
    assert [r["rank"] for r in ranking] == [1, 2]
    assert ranking[0]["score"] >= ranking[1]["score"]
    code, out, _ = run(capsys, "rank", "--task", "point-angle-90", str(root))
    assert code == 0 and "random-s1-v0" in out and "reward/step" in out
    # Each dataset holds 6 episodes of 50 steps, so a step's mean reward is the score / 50.
    for r in ranking:
        assert r["reward_per_step"] == pytest.approx(r["score"] / 50, rel=1e-5)
    # The same ids under two roots: the table adds each dataset's folder.
    shutil.copytree(root, tmp_path / "copy")
    code, out, _ = run(
        capsys, "rank", "--task", "point-angle-90", str(root), str(tmp_path / "copy")
    )
    assert code == 0 and "folder" in out and "copy" in out
    assert "folders below" in out  # each folder below the part they share: short, unfolded
    code, out, _ = run(capsys, "rank", "--task", "point-angle-90", str(root))
    assert code == 0 and "folder" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect-random", "--env", "hopper"], "unknown env 'hopper'; known: ant, halfcheetah"),
        (["collect-random", "--steps", "0"], "--steps must be positive"),
        (["collect-random", "--steps", "-5"], "--steps must be positive"),
        (["rank", "--task", "nope", "."], "unknown task 'nope'"),
        (["rank", "--task", "point-angle-0", "/no/such/dir"], "no such file or folder"),
        (["datasets", "show", "/no/such/dir"], "not a Minari dataset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("udg: error: ") and message in err
    assert "Traceback" not in err


def test_rank_with_task_of_other_env(capsys, point_root):
    code, _, err = run(capsys, "rank", "--task", "ant-angle-0", str(point_root))
    assert code == 2 and "is for env ant" in err


def test_collect_refuses_to_overwrite(capsys, point_root):
    code, _, err = run(capsys, "collect-random", "--name", "a", "--out", str(point_root))
    assert code == 2 and "exists already" in err


def test_debug_shows_the_traceback():
    from udg.errors import UdgError

    with pytest.raises(UdgError):
        main(["--debug", "collect-random", "--env", "hopper"])


def test_generate_flags_override_the_preset_field_by_field():
    import tyro

    from udg.cli.commands import generate_config
    from udg.cli.main import Generate

    def config(*argv):
        return generate_config(tyro.cli(Generate, args=["--out", "x", *argv]))

    preset = config("--env", "halfcheetah", "--scale", "small")
    assert preset.diversity.episode_scaling is True and preset.num_agents == 10
    tuned = config(
        "--env", "halfcheetah", "--scale", "small", "--agents", "4", "--reward-scale", "7.5",
        "--episode-scaling", "False", "--observe-features", "True",
    )  # fmt: skip
    assert tuned.num_agents == 4 and tuned.steps == preset.steps
    assert tuned.diversity.reward_scale == 7.5 and tuned.diversity.episode_scaling is False
    assert tuned.diversity.cache_size == tuned.episode_length
    assert tuned.observe_features is True and preset.observe_features is False
    supervised = config("--env", "ant", "--agents", "1", "--task", "ant-angle-0", "--w-div", "0")
    assert supervised.w_task == 1.0 and supervised.task == "ant-angle-0"
    assert supervised.sac.autotune_temperature is False  # WURL's fixed 0.2 unless asked
    assert config("--env", "ant", "--temperature", "auto").sac.autotune_temperature is True
    fixed = config("--env", "ant", "--temperature", "0.05").sac
    assert fixed.init_temperature == 0.05 and fixed.autotune_temperature is False
    experts = config("--env", "ant", "--agent-tasks", "ant-angle-0", "ant-angle-90", "--w-div", "0")
    assert experts.num_agents == 2 and experts.task_names == ("ant-angle-0", "ant-angle-90")
    assert experts.w_task == 1.0
    for bad in ("hot", "0", "-1", "nan", "inf"):
        with pytest.raises(UdgError, match="--temperature must be 'auto' or a positive number"):
            config("--env", "ant", "--temperature", bad)


def test_ant_small_mixes_in_the_locomotion_prior_and_flags_still_win():
    import tyro

    from udg.cli.commands import generate_config
    from udg.cli.main import Generate

    def config(*argv):
        return generate_config(tyro.cli(Generate, args=["--out", "x", "--env", "ant", *argv]))

    ant = config("--scale", "small")
    assert (ant.num_agents, ant.steps, ant.task, ant.w_task, ant.w_div) == (
        6, 240_000, "ant-outward", 1.0, 1.0
    )  # fmt: skip
    assert ant.observe_features and ant.sac.autotune_temperature
    assert not ant.diversity.episode_scaling
    assert config("--scale", "paper").task is None  # the paper's unsupervised setting
    pure = config("--scale", "small", "--w-task", "0")
    assert pure.w_task == 0.0 and pure.w_div == 1.0
    supervised = config(
        "--scale", "small", "--agents", "1", "--task", "ant-angle-0", "--w-div", "0"
    )
    assert supervised.task_names == ("ant-angle-0",) and supervised.w_task == 1.0
    experts = config(
        "--scale", "small", "--agent-tasks", "ant-angle-0", "ant-angle-60", "--w-div", "0"
    )  # fmt: skip
    assert experts.task is None and experts.task_names == ("ant-angle-0", "ant-angle-60")
    with pytest.raises(UdgError, match="either one task for all agents or one task per agent"):
        config("--scale", "small", "--task", "ant-outward", "--agent-tasks", "ant-angle-0")


def test_plain_progress_lines_show_rate_and_eta(capsys, monkeypatch):
    from udg.cli.progress import progress_bar

    monkeypatch.setenv("UDG_PROGRESS_INTERVAL", "0")  # a line per update
    with progress_bar("stage", total=3, unit="epochs") as bar:
        for done in (1, 2, 3):
            bar.update(done, loss=0.5)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("nan" not in line for line in lines)
    assert lines[0].startswith("stage: 1/3 epochs, - epochs/s") and "eta -" in lines[0]
    assert "eta 0 s  loss=0.5" in lines[2] and "- epochs/s" not in lines[2]


def test_version_names_the_package_version_and_revision(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"udg {version('udg-rl')} (git ") and out.endswith(")")


COMMANDS = [
    ["tasks"], ["collect-random"], ["datasets", "list"], ["datasets", "show"], ["rank"],
    ["export"], ["generate"], ["plot-coverage"], ["offline"], ["demo"], ["experiment"],
    ["plot"], ["evaluate"], ["diversity"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_choices_each_default_once_and_an_example(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "Example: udg " + command[0] in out
    assert "(default: None)" not in out and "{None" not in out
    assert out.count("(default:") == len(
        set(line for line in out.splitlines() if "(default:" in line)
    )


def test_help_choices_are_the_registries():
    from udg.cli import main as cli
    from udg.experiments.grid import EXECUTORS
    from udg.experiments.pipeline import DEMO_ENVS, EXPERIMENTS
    from udg.experiments.presets import SCALES
    from udg.offline import ALGOS

    def metavar(alias) -> str:
        return next(m.metavar for m in alias.__metadata__ if getattr(m, "metavar", None))

    assert metavar(cli.SCALE) == "{" + ",".join(SCALES) + "}"
    assert metavar(cli.EXECUTOR) == "{" + ",".join(EXECUTORS) + "}"
    assert metavar(cli.ALGO) == "{" + ",".join(ALGOS) + "}"
    hints = typing.get_type_hints(cli.Demo, include_extras=True)
    assert metavar(hints["env"]) == "{" + ",".join(DEMO_ENVS) + "}"
    hints = typing.get_type_hints(cli.Experiment, include_extras=True)
    named = {n for n in EXPERIMENTS if not n.startswith("demo")}
    assert set(metavar(hints["name"])[1:-1].split(",")) == named

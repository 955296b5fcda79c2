"""Bad input to every command, by class: each is refused with exit status 2 and one
``udg: error:`` line, no traceback, before any work, and leaves no new file or folder behind
(in the folder it names or in the runs it reads).

The classes follow the hostile-input battery (``scripts/hostile_inputs.py``, which runs the
whole of it as subprocesses): output locations, numbers checked too late, damaged inputs,
refused commands that would poison their folder, and silent wrong results. Read-only and full
disks are tmpfs mounts where the test may make them (root), and skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_configs import TINY, TINY_MOPO

from udg.cli.main import main
from udg.data.collect import random_episodes
from udg.data.minari_io import dataset_id_for, write_dataset
from udg.experiments.offline import OfflineConfig, run_offline
from udg.experiments.runs import config_dict, write_manifest

NINES = "9" * 400
LONG = "a" * 300  # one path component over 255 bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Valid inputs the cases point at: a Minari root with two random point datasets, a
    finished generate run (random episodes stand in for its agents') and a tiny finished
    offline run."""
    root = tmp_path_factory.mktemp("world")
    for i in range(2):
        episodes = random_episodes("point", 300, i, 50)
        write_dataset(episodes, root / "ds", f"udg/point/r{i}-v0", "point")
    gen = root / "gen"
    for i in range(TINY.num_agents):
        episodes = random_episodes("point", 300, 10 + i, TINY.episode_length)
        write_dataset(episodes, gen / "datasets", dataset_id_for("point", f"agent-{i}"), "point")
    write_manifest(gen, "generate", "complete", config_dict(TINY.validated()))
    off = root / "off"
    config = OfflineConfig(
        task="point-angle-0", select="top1", mopo=TINY_MOPO, eval_episode_length=20
    )
    run_offline(config, [gen], off)
    return {"root": root, "ds": root / "ds", "gen": gen, "off": off}


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folders`` with its size and modification time."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            info = path.lstat()  # a folder's time changes with the preflight's probe
            seen[str(path)] = (info.st_size, info.st_mtime_ns) if path.is_file() else (0, 0)
    return seen


def refuse(capsys, world, t: Path, argv: list[str], message: str) -> str:
    """Run ``udg argv`` (``{t}``, ``{ds}``, ``{gen}``, ``{off}`` filled in) and assert the
    refusal: exit 2, one ``udg: error:`` line holding ``message``, no traceback, nothing new
    or changed on disk. Returns the line."""
    names = {"t": t, **{k: v for k, v in world.items() if k != "root"}}
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    before = snapshot(t, world["root"])
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (argv, out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("udg: error: "), err
    assert message in err, err
    assert snapshot(t, world["root"]) == before, "the refused command left files behind"
    return err


# --- output locations --------------------------------------------------------------------------

FOLDER_COMMANDS = {  # a valid, cheap command with --out given last
    "collect-random": ["collect-random", "--env", "point", "--steps", "200", "--out"],
    "generate": [
        "generate",
        "--env",
        "point",
        "--agents",
        "2",
        "--steps",
        "400",
        "--warmup-steps",
        "100",
        "--out",
    ],  # fmt: skip
    "offline": [
        "offline",
        "--data",
        "{gen}",
        "--task",
        "point-angle-60",
        "--epochs",
        "1",
        "--out",
    ],  # fmt: skip
    "export": ["export", "{ds}", "--task", "point-angle-0", "--out"],
    "demo": ["demo", "--env", "point", "--seeds", "1", "--out"],
    "experiment": ["experiment", "cheetah", "--scale", "demo", "--seeds", "1", "--out"],
}
FILE_COMMANDS = {
    "plot": ["plot", "{off}", "--out"],
    "plot-coverage": ["plot-coverage", "{gen}", "--out"],
}


def _file(t: Path) -> None:
    (t / "file.txt").write_text("not a folder\n")


def _foreign(t: Path) -> None:
    (t / "stuff").mkdir()
    (t / "stuff" / "notes.txt").write_text("somebody's files\n")


FOLDER_PLACES: list[tuple[str, str, Callable | None, str]] = [
    ("under-proc", "/proc/udg-bad/x", None, "cannot be written"),
    ("a-file", "{t}/file.txt", _file, "is a file, not a folder"),
    ("below-a-file", "{t}/file.txt/x", _file, "is a file"),
    ("name-over-255-bytes", "{t}/" + LONG + "/x", None, "255"),
]
FILE_PLACES: list[tuple[str, str, Callable | None, str]] = [
    ("under-proc", "/proc/udg-bad/f.png", None, "cannot be written"),
    ("a-folder", "{t}", None, "is a folder"),
    ("below-a-file", "{t}/file.txt/f.png", _file, "is a file"),
    ("name-over-255-bytes", "{t}/" + LONG + ".png", None, "255"),
]


@pytest.mark.parametrize("place, out, setup, message", FOLDER_PLACES, ids=lambda v: v)
@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_an_output_folder_that_cannot_be_written(
    capsys, world, tmp_path, command, place, out, setup, message
):
    if setup:
        setup(tmp_path)
    refuse(capsys, world, tmp_path, [*FOLDER_COMMANDS[command], out], message)


@pytest.mark.parametrize("place, out, setup, message", FILE_PLACES, ids=lambda v: v)
@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_output_file_that_cannot_be_written(
    capsys, world, tmp_path, command, place, out, setup, message
):
    if setup:
        setup(tmp_path)
    refuse(capsys, world, tmp_path, [*FILE_COMMANDS[command], out], message)


@pytest.mark.parametrize(
    "command, message",
    [
        ("generate", "not a udg generate run"),
        ("offline", "not a udg offline run"),
        ("demo", "not a udg experiment run"),
        ("experiment", "not a udg experiment run"),
    ],
)
def test_a_folder_of_other_files_is_not_taken_for_a_run(capsys, world, tmp_path, command, message):
    _foreign(tmp_path)
    refuse(capsys, world, tmp_path, [*FOLDER_COMMANDS[command], "{t}/stuff"], message)


@pytest.mark.parametrize(
    "argv, message",
    [
        # formerly: demo wrote its datasets into the generate run (rank then found 9, not 3)
        (["demo", "--env", "point", "--seeds", "1", "--out", "{gen}"], "holds a generate run"),
        (["generate", "--env", "point", "--out", "{off}"], "holds a offline run"),
        (
            ["offline", "--data", "{gen}", "--task", "point-angle-0", "--out", "{gen}"],
            "holds a generate run",
        ),  # fmt: skip
        # the same run folder with another config
        (
            ["offline", "--data", "{gen}", "--task", "point-angle-90", "--out", "{off}"],
            "different config",
        ),  # fmt: skip
    ],
)
def test_a_run_of_another_kind_or_config_is_never_written_into(
    capsys, world, tmp_path, argv, message
):
    refuse(capsys, world, tmp_path, argv, message)


def test_a_run_folder_given_through_a_symbolic_link_is_refused(capsys, world, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    refuse(capsys, world, tmp_path, [*FOLDER_COMMANDS["generate"], "{t}/link"], "symbolic link")


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def mounts(tmp_path):
    """Mount tmpfs folders below ``tmp_path`` (``mounts(name, options)``); unmounted after."""
    made = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, options)
        made.append(where)
        return where

    yield mount
    for where in reversed(made):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize("command", [*FOLDER_COMMANDS, *FILE_COMMANDS])
def test_a_read_only_disk_is_refused_before_any_work(capsys, world, tmp_path, mounts, command):
    mounts("ro", "ro,size=1m")
    out = "{t}/ro/x.png" if command in FILE_COMMANDS else "{t}/ro/x"
    argv = {**FOLDER_COMMANDS, **FILE_COMMANDS}[command]
    refuse(capsys, world, tmp_path, [*argv, out], "cannot be written")


@pytest.mark.parametrize(
    "argv",
    [
        ["collect-random", "--env", "point", "--steps", "20000", "--out", "{t}/disk/x"],
        ["generate", "--env", "point", "--out", "{t}/disk/x"],
        ["demo", "--env", "point", "--seeds", "1", "--out", "{t}/disk/x"],
        [*FOLDER_COMMANDS["offline"], "{t}/disk/x"],  # formerly: failed after the model fit
    ],
    ids=["collect-random", "generate", "demo", "offline"],
)
def test_a_disk_too_small_for_the_datasets_is_refused_with_the_estimate(
    capsys, world, tmp_path, mounts, argv
):
    mounts("disk", "size=400k")
    refuse(capsys, world, tmp_path, argv, "of disk, and")


def test_a_disk_that_filled_after_the_preflight_is_refused_before_the_write(
    capsys, world, tmp_path, mounts, monkeypatch
):
    """The preflight's estimate passed (here: skipped) but the disk has too little room when
    the dataset is written: one line, exit 2, no staging folder keeping the disk full. (HDF5
    met with a full disk halfway through a file crashed the process, exit 139.)"""
    from udg.cli import preflight

    disk = mounts("disk", "size=400k")
    monkeypatch.setattr(preflight, "check_free_space", lambda *a, **k: None)
    argv = ["collect-random", "--env", "point", "--steps", "20000", "--out", str(disk / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the collection's progress
    assert err[-1].startswith("udg: error: ") and "of disk and" in err[-1], err
    assert not any("udg: error" in line or "Traceback" in line for line in err[:-1])
    assert not list(disk.iterdir())


# --- numbers and names checked before any work ---------------------------------------------------

GEN = [*FOLDER_COMMANDS["generate"], "{t}/g"]
OFF = ["offline", "--data", "{gen}", "--task", "point-angle-60", "--epochs", "1", "--out", "{t}/o"]
CR = ["collect-random", "--env", "point", "--steps", "200", "--out", "{t}/root"]
DEMO = ["demo", "--env", "point", "--seeds", "1", "--out", "{t}/d"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*CR, "--seed", "-1"], "--seed must be in 0 .. 4294967295"),
        ([*CR, "--seed", str(2**64)], "--seed must be in 0 .. 4294967295"),
        ([*CR, "--steps", "0"], "--steps must be positive"),
        ([*CR, "--steps", str(10**12)], "more than udg counts"),
        ([*CR, "--max-episode-steps", "0"], "at least 1"),
        ([*CR, "--name", "a/b/c"], "name"),
        ([*CR, "--env", "POINT"], "POINT"),
        ([*CR, "--out", ""], "--out is empty"),
        ([*GEN, "--seed", "-1"], "--seed must be in 0 .. 4294967295"),
        ([*GEN, "--agents", "0"], "num_agents must be at least 1"),
        ([*GEN, "--agents", "10000"], "of memory"),
        ([*GEN, "--steps", str(10**12)], "more than udg counts"),
        ([*GEN, "--episode-length", str(10**8)], "of memory"),
        ([*GEN, "--w-div", "nan"], "--w-div must be a finite number"),
        ([*GEN, "--w-div", "inf"], "--w-div must be a finite number"),
        ([*GEN, "--reward-scale", "nan"], "--reward-scale must be a finite number"),
        ([*GEN, "--temperature", "hot"], "temperature"),
        ([*GEN, "--warmup-steps", "400"], "warmup_steps 400 >= steps 400"),
        ([*GEN, "--task", "point-angle-" + NINES], "angle"),
        ([*GEN, "--task", "point-angle-nan"], "angle"),
        ([*GEN, "--task", "ant-angle-0"], "is for env ant"),
        ([*GEN, "--features", "x_position", "x_position"], "given twice"),
        ([*GEN, "--features", "no_such_column"], "no_such_column"),
        ([*GEN, "--task", "point-angle-6e"], "such as 60, -1.5 or 1e5"),
        ([*OFF, "--seed", "-1"], "--seed must be in 0 .. 4294967295"),
        ([*OFF, "--epochs", "0"], "epochs"),
        ([*OFF, "--penalty-coef", "nan"], "--penalty-coef must be a finite number"),
        ([*OFF, "--eval-episodes", "0"], "--eval-episodes must be at least 1"),
        ([*OFF, "--eval-episodes", str(10**9)], "of memory"),
        ([*OFF, "--eval-episode-length", "0"], "--eval-episode-length must be at least 1"),
        ([*OFF, "--select", "top:0"], "top:0"),
        ([*OFF, "--select", "top:999"], "999"),
        ([*OFF, "--observation-dims", "999"], "999"),
        ([*OFF, "--model", "{t}/no-model.msgpack"], "no such file"),
        ([*OFF, "--model", "{t}"], "a folder"),
        ([*OFF, "--data", "{t}/nothing-here"], "nothing-here"),
        ([*OFF, "--task", "rooms-angle-0"], "is for env rooms"),
        ([*DEMO, "--seeds", "0"], "seeds"),
        ([*DEMO, "--seed", "-1"], "--seed must be in 0 .. 4294967295"),
        ([*DEMO, "--expert-steps", "-1"], "expert"),
        ([*DEMO, "--population-cells", "0"], "--population-cells must be at least 1"),
        ([*DEMO, "--data-workers", "0"], "--data-workers must be at least 1"),
        ([*DEMO, "--address", "127.0.0.1:6379"], "needs --executor ray"),
        (["rank", "{ds}", "--task", "nope"], "unknown task"),
        (["rank", "{ds}", "--task", "point-angle-inf"], "angle"),
        (["evaluate", "{off}", "--episodes", "0"], "--episodes must be at least 1"),
        (["evaluate", "{off}", "--episodes", str(10**9)], "of memory"),
        (["evaluate", "{off}", "--episode-length", str(10**8), "--episodes", "100"], "of memory"),
        (["diversity", "{gen}", "--episodes", str(10**9)], "give at most that many"),
        (["plot-coverage", "{gen}", "--last", "0"], "--last"),
    ],
    ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None,
)
def test_a_bad_setting_is_refused_before_any_work(capsys, world, tmp_path, argv, message):
    refuse(capsys, world, tmp_path, argv, message)


# --- damaged inputs ----------------------------------------------------------------------------


def _copy_ds(world, t: Path) -> Path:
    """A writable copy of the world's dataset root at ``t/root``; its dataset's data folder."""
    shutil.copytree(world["ds"], t / "root")
    return t / "root" / "udg" / "point" / "r1-v0" / "data"


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "metadata.json").unlink(),
        lambda d: (d / "metadata.json").write_text("{not json"),
        lambda d: os.truncate(d / "main_data.hdf5", 1000),
        lambda d: (d / "main_data.hdf5").write_bytes(b""),
    ],
    ids=["missing-metadata", "garbage-metadata", "truncated-hdf5", "empty-hdf5"],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["rank", "{t}/root", "--task", "point-angle-0"],  # formerly: ranked the others silently
        ["datasets", "list", "{t}/root"],  # formerly: listed a truncated one as healthy
        ["export", "{t}/root", "--task", "point-angle-0", "--out", "{t}/exports"],
        [*OFF[:2], "{t}/root", *OFF[3:]],
    ],
    ids=["rank", "datasets-list", "export", "offline"],
)
def test_a_damaged_dataset_is_named_not_skipped(capsys, world, tmp_path, damage, argv):
    """One of the root's two datasets is damaged: the command names it, never passes over it
    (``--select all`` would silently drop its data) nor shows it as whole."""
    damage(_copy_ds(world, tmp_path))
    refuse(capsys, world, tmp_path, argv, "r1-v0")


@pytest.mark.parametrize(
    "argv",
    [
        ["plot-coverage", "{t}/g"],
        ["diversity", "{t}/g"],
        GEN[:-1] + ["{t}/g"],
    ],
    ids=["plot-coverage", "diversity", "generate-resume"],
)
@pytest.mark.parametrize("manifest", ["{garbage", "", "[1, 2]"], ids=["garbage", "empty", "list"])
def test_a_damaged_manifest_is_one_line(capsys, world, tmp_path, argv, manifest):
    shutil.copytree(world["gen"], tmp_path / "g")
    (tmp_path / "g" / "manifest.json").write_text(manifest)
    refuse(capsys, world, tmp_path, argv, "manifest.json")


def test_a_finished_runs_damaged_metrics_are_one_line(world, tmp_path):
    shutil.copytree(world["gen"], tmp_path / "g")  # formerly: a KeyError traceback on rerun
    (tmp_path / "g" / "metrics.csv").write_text("\x00\x01garbage,,\n1,2\n")
    from udg.errors import UdgError
    from udg.experiments.generate import run_generate

    with pytest.raises(UdgError, match="metrics.csv is damaged"):
        run_generate(TINY, tmp_path / "g")  # the rerun of the finished run


def test_a_garbage_model_file_is_refused_before_any_folder(capsys, world, tmp_path):
    (tmp_path / "m.msgpack").write_bytes(os.urandom(2048))
    refuse(capsys, world, tmp_path, [*OFF, "--model", "{t}/m.msgpack"], "m.msgpack")


def test_a_dangling_namespace_link_is_not_followed(capsys, world, tmp_path):
    _copy_ds(world, tmp_path)
    link = tmp_path / "root" / "udg" / "namespace_metadata.json"
    link.unlink()
    link.symlink_to(tmp_path / "outside" / "ns.json")
    refuse(capsys, world, tmp_path, [*CR[:-1], "{t}/root", "--name", "new"], "symbolic link")
    assert not (tmp_path / "outside").exists()


# --- a refused command does not poison its folder ----------------------------------------------


def test_a_refused_command_leaves_its_folder_free_for_the_corrected_one(capsys, world, tmp_path):
    refuse(capsys, world, tmp_path, [*CR, "--max-episode-steps", "0"], "at least 1")
    assert not (tmp_path / "root").exists()
    assert main([a.format(t=tmp_path) for a in CR]) == 0
    assert len(list((tmp_path / "root").rglob("*.hdf5"))) == 1

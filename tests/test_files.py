"""Atomic file writing (all or nothing, ordinary permissions) and folder locks (one writer)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from udg import files
from udg.errors import UdgError


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    files.atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert mode & stat.S_IRGRP  # not the owner-only mode of a temporary file


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.atomic_write_json(path, {"old": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_json(path, {"new": 2})
    assert path.read_text() == '{\n  "old": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_csv_rows_read_back_rewrite_identically(tmp_path):
    rows = [{"round": 0, "loss": float("nan")}, {"round": 1, "loss": 0.25, "q": -3.5}]
    files.atomic_write_csv(tmp_path / "a.csv", rows)
    files.atomic_write_csv(tmp_path / "b.csv", files.read_csv_rows(tmp_path / "a.csv"))
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert files.read_csv_rows(tmp_path / "a.csv")[1] == {"round": 1, "loss": 0.25, "q": -3.5}


def test_malformed_csv_is_one_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("round,loss\n0,abc\n")
    with pytest.raises(UdgError, match="malformed CSV"):
        files.read_csv_rows(tmp_path / "bad.csv")


# --- folder locks --------------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from udg import files
files.hold_folder(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def _held_elsewhere(folder):
    """A child process holding ``folder``'s lock (kill it when done)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"held"
    return child


def test_a_folder_held_by_another_process_is_refused_with_one_line(tmp_path):
    from udg.experiments.runs import open_run

    child = _held_elsewhere(tmp_path / "run")
    try:
        with pytest.raises(UdgError, match="another udg process is writing a generate run into"):
            open_run(tmp_path / "run", "generate", {})
        with pytest.raises(UdgError, match="another udg process is writing into"):
            with files.locked_folder(tmp_path / "run", wait=False):
                pass
    finally:
        child.kill()
        child.wait()
    open_run(tmp_path / "run", "generate", {})  # released with the process
    open_run(tmp_path / "run", "generate", {})  # and this process may open it again
    import subprocess
    import sys

    take = [sys.executable, "-c", _HOLD.replace("time.sleep(60)", ""), str(tmp_path / "run")]
    assert subprocess.run(take, capture_output=True).returncode != 0  # held here until released
    files.release_folder(tmp_path / "run")
    assert subprocess.run(take, capture_output=True).returncode == 0


def test_unwritable_or_file_out_is_one_line(tmp_path):
    from udg.experiments.runs import open_run

    (tmp_path / "file").write_text("x")
    with pytest.raises(UdgError, match="is a file, not a folder"):
        open_run(tmp_path / "file", "offline", {})
    with pytest.raises(UdgError, match="cannot write .* /proc/udg-test"):
        open_run(Path("/proc/udg-test/run"), "offline", {})


def test_two_writers_of_one_dataset_one_wins_the_other_is_told(tmp_path, point_episodes):
    """Writers race for the same new dataset id in one root: exactly one writes it, the other
    waits for it and is told the dataset exists (writers of other ids would just wait)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        outcomes = list(pool.map(_write_race, [tmp_path] * 2, [point_episodes[:3]] * 2))
    assert sorted(o.split(":")[0] for o in outcomes) == ["error", "wrote"]
    assert "exists already" in next(o for o in outcomes if o.startswith("error"))


def _write_race(root, episodes) -> str:
    import time

    from udg.data.minari_io import write_dataset

    time.sleep(0.2)  # both processes started: start together
    try:
        return f"wrote: {write_dataset(episodes, root, 'udg/point/race-v0', 'point')}"
    except UdgError as err:
        return f"error: {err}"


def test_stale_staging_folders_go_and_symlinks_are_refused(tmp_path, point_episodes):
    from udg.data.minari_io import write_dataset

    root = tmp_path / "root"
    (root / ".tmp-0123").mkdir(parents=True)  # what a killed writer leaves
    write_dataset(point_episodes[:2], root, "udg/point/a-v0", "point")
    assert not list(root.glob(".tmp-*"))
    elsewhere = tmp_path / "elsewhere.json"
    other = tmp_path / "other"
    (other / "udg").mkdir(parents=True)
    (other / "udg" / "namespace_metadata.json").symlink_to(elsewhere)  # dangling
    with pytest.raises(UdgError, match="is a symbolic link"):
        write_dataset(point_episodes[:2], other, "udg/point/a-v0", "point")
    assert not elsewhere.exists()

"""Atomic file writing: all or nothing, and ordinary permissions."""

from __future__ import annotations

import os
import stat

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

"""Atomic file writing: all or nothing, and ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from udg import files


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

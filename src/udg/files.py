"""Writing files atomically, and reading back what was written that way.

A file is written to a temporary name in its folder and moved into place, so a killed process
leaves either the old or the new version, never half of one. Used by every layer that writes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from udg.errors import UdgError


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the
    umask), not the owner-only mode of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=json_default) + "\n")


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts as CSV; the header is every key in first-seen order, gaps left empty."""
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv_rows(path: Path) -> list[dict[str, int | float]]:
    """Rows written by :func:`atomic_write_csv`, as they were: integer cells read back as
    ``int``, other numbers as ``float``, empty cells left out (so a rewrite is identical)."""

    def number(text: str) -> int | float:
        try:
            return int(text)
        except ValueError:
            return float(text)

    try:
        with path.open(newline="") as file:
            return [{k: number(v) for k, v in row.items() if v} for row in csv.DictReader(file)]
    except (ValueError, TypeError, csv.Error) as err:
        raise UdgError(f"cannot read {path}: malformed CSV ({err})") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; a damaged file is a :class:`UdgError`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # zipfile and numpy raise several types on damaged files
        raise UdgError(f"cannot read {path}: truncated or corrupt ({type(err).__name__})") from None


def json_default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")

"""Writing files atomically, locking the folders written to, and reading back what was written.

A file is written to a temporary name in its folder and moved into place, so a killed process
leaves either the old or the new version, never half of one. A folder that a process writes a
run or a dataset into is locked (an exclusive ``flock`` on the folder itself, which leaves no
file behind and ends with the process, however it ends): a second process writing a run there
at the same time gets a clear error, and a second writer of a dataset root waits its turn, so
neither interleaves its files with the first's. Used by every layer that writes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from udg.errors import UdgError

_HELD: dict[str, int] = {}  # folders this process holds for the rest of its life -> lock fd


def _lock(folder: Path, what: str, wait: bool = False) -> int:
    """An exclusive lock on ``folder`` (created); its file descriptor. Another process holding
    it is a :class:`UdgError` naming ``what`` it is writing, or, with ``wait``, waited for."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise UdgError(f"cannot write {what} {folder}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UdgError(
            f"another udg process is writing {what} {folder}; wait for it or choose another folder"
        ) from None
    return fd


def hold_folder(folder: Path, what: str = "into") -> None:
    """Lock ``folder`` until :func:`release_folder` or the end of this process (a run folder,
    while its run may write); holding it already is fine."""
    key = str(Path(folder).resolve())
    if key not in _HELD:
        _HELD[key] = _lock(Path(folder), what)


def release_folder(folder: Path) -> None:
    """Give up the lock :func:`hold_folder` took (a finished run), if this process holds it."""
    fd = _HELD.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def locked_folder(folder: Path, what: str = "into", wait: bool = True):
    """Lock ``folder`` for the ``with`` body (a dataset root while a dataset is written),
    waiting for another process's write to end unless ``wait`` is False."""
    if str(Path(folder).resolve()) in _HELD:  # this process holds it for longer already
        yield
        return
    fd = _lock(Path(folder), what, wait)
    try:
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a name a file
    system cannot hold, a file in the way, or a place not writable (read-only, ``/proc``).
    Nothing is left behind: the check makes and removes one empty folder."""
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise UdgError(
                f"{flag} {path}: a name of {len(os.fsencode(part))} bytes; file systems allow 255"
            )
    if path.exists() and not path.is_dir():
        raise UdgError(f"{flag} {path} is a file, not a folder; choose a new or empty folder")
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UdgError(f"{flag} {path} cannot be made: {ancestor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".udg-probe-"))
    except OSError as err:
        raise UdgError(f"{flag} {path} cannot be written: {err.strerror or err}") from None


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

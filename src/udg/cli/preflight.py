"""Checks every command's arguments get before any work starts, whatever the command.

Each command validates its own settings where they mean something (a config's
``validated()``); what is checked here holds for every flag of every command, so that no
command can forget it:

- a float flag is a finite number (NaN or an infinity would train a whole run, then fail, and a
  NaN config never equals itself, so the rerun would be refused as "a different config");
- a seed is one NumPy and JAX can take, 0 .. 2**32 - 1, and any other count at most
  2**31 - 1 (JAX's 32-bit integers);
- an output folder can be made and written (a name of at most 255 bytes, no file in the way,
  not read-only), an output file's folder too, and the disk holds what the command will write,
  where the command can say how much that is.

Failures a check cannot foresee (the disk filling up during a run) are turned into one line by
:func:`os_error_line`.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import shutil
from pathlib import Path

from udg.errors import UdgError
from udg.files import check_output_folder
from udg.limits import MAX_COUNT, size_text

MAX_SEED = 2**32 - 1
WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "a file name is too long",
    errno.EFBIG: "a file is too large for the file system",
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_numbers(command) -> None:
    """Every float field finite, every seed field within 0 .. 2**32 - 1, every other int at
    most :data:`udg.limits.MAX_COUNT` (nested commands included)."""
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        if dataclasses.is_dataclass(value):
            check_numbers(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise UdgError(f"{flag(field.name)} must be a finite number, got {value}")
        elif field.name == "seed" and isinstance(value, int) and not 0 <= value <= MAX_SEED:
            raise UdgError(f"{flag(field.name)} must be in 0 .. {MAX_SEED}, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and value > MAX_COUNT:
            raise UdgError(
                f"{flag(field.name)} {value} is more than udg counts ({MAX_COUNT:,}, JAX's "
                "32-bit integers)"
            )


EMPTY_ALLOWED = ("--title",)
"""The flags whose value may be empty (an empty title: none)."""


def check_empty_values(argv: list[str]) -> None:
    """Refuse an empty argument (``--out ""`` would name the current folder, ``--name ""``
    nothing), except as the value of a flag in :data:`EMPTY_ALLOWED`."""
    for i, arg in enumerate(argv):
        name = argv[i - 1] if arg == "" and i > 0 and argv[i - 1].startswith("--") else None
        if arg.startswith("--") and arg.endswith("=") and "=" not in arg[:-1]:
            name, arg = arg[:-1], ""
        if arg == "" and name not in EMPTY_ALLOWED:
            raise UdgError(f"{name or 'an argument'} is empty; give a value")


def check_output_file(path: Path, name: str = "--out") -> None:
    """Refuse an output file that cannot be written: a folder in its place, a name over 255
    bytes, a folder that cannot be made or written."""
    path = Path(path)
    for part in path.parts:  # first: a stat of such a name fails with ENAMETOOLONG
        if len(os.fsencode(part)) > 255:
            raise UdgError(f"{name} {path}: a name of {len(os.fsencode(part))} bytes; 255 at most")
    if path.is_dir():
        raise UdgError(f"{name} {path} is a folder; give a file name, e.g. {path / 'figure.png'}")
    check_output_folder(path.parent if str(path.parent) else Path("."), name)


def check_free_space(folder: Path, need: int, what: str, name: str = "--out") -> None:
    """Refuse when the file system that will hold ``folder`` has less than ``need`` bytes
    free (the estimate of what the command writes there)."""
    ancestor = Path(folder).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    free = shutil.disk_usage(ancestor).free
    if free < need:
        raise UdgError(
            f"{name} {folder}: {what} needs about {size_text(need)} of disk, and {ancestor} has "
            f"{size_text(free)} free"
        )


def preflight(command) -> None:
    """The checks of this module on a parsed command: its numbers, then each output it names
    (``command.OUTPUTS``: ``(field, "folder" | "file")`` pairs, default none), then its disk
    estimate (``command.disk_bytes()``, where it has one)."""
    check_numbers(command)
    for field, kind in getattr(command, "OUTPUTS", ()):
        path = getattr(command, field)
        if path is None:
            continue
        if kind == "file":
            check_output_file(path, flag(field))
        else:
            check_output_folder(path, flag(field))
    disk = getattr(command, "disk_bytes", None)
    if disk is not None:
        estimate = disk()
        if estimate:
            folder, need, what = estimate
            check_free_space(folder, need, what)


def os_error_line(err: OSError) -> str | None:
    """One line for an :class:`OSError` of writing (a full disk, a read-only mount) that a run
    met after it started; ``None`` for any other error, which stays a bug to report."""
    reason = WRITE_ERRNOS.get(err.errno)
    if reason is None:
        return None
    where = f" writing {err.filename}" if err.filename else ""
    return f"{reason}{where}; free space or choose another --out, then rerun the same command"

"""Training metrics as TensorBoard event files, when tensorboardX is installed.

``pip install -e ".[tensorboard]"`` enables it; without the package every call is a no-op and
``metrics.csv`` stays the record. Rows are written at checkpoints (stage 1's metrics, each MOPO
cell's evaluations). A resumed run opens its writer with ``purge_step=0``, so that TensorBoard
drops every event of the killed run, and writes the rows up to its checkpoint again: a killed
writer may have lost events still queued (tensorboardX's ``flush`` does not drain its queue), and
a killed and resumed run shows each step once either way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

_PER_AGENT = re.compile(r"^(.*)_(\d+)$")


def tensorboard_available() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def scalar_tag(key: str) -> str:
    """``return_3`` -> ``return/agent_3``, so TensorBoard groups a metric's agents together."""
    match = _PER_AGENT.match(key)
    return f"{match[1]}/agent_{match[2]}" if match else key


def open_log(folder: Path, resume_step: int | None = None):
    """A writer of event files in ``folder`` (None without tensorboardX); ``resume_step`` drops
    the events a killed run wrote past its checkpoint."""
    if not tensorboard_available():
        return None
    from tensorboardX import SummaryWriter

    # Event files are named by the second and the host, and TensorBoard reads a folder's files in
    # name order. Two attempts within one second would share a name, and a random suffix could
    # sort the resumed attempt (with its purge) before the killed one: the suffix is the attempt's
    # number, so names sort as the attempts ran.
    attempt = len(list(Path(folder).glob("events.out.tfevents.*")))
    return SummaryWriter(str(folder), purge_step=resume_step, filename_suffix=f".{attempt:04d}")


def write_rows(writer, rows: Sequence[dict], step_key: str) -> None:
    """Each row's numbers as scalars at step ``row[step_key]`` (NaNs left out)."""
    if writer is None:
        return
    for row in rows:
        step = int(row[step_key])
        for key, value in row.items():
            if key != step_key and isinstance(value, int | float) and not math.isnan(value):
                writer.add_scalar(scalar_tag(key), value, global_step=step)
    writer.flush()


def close(writer) -> None:
    if writer is not None:
        writer.close()

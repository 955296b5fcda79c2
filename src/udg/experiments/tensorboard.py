"""Training metrics as TensorBoard event files, when tensorboardX is installed.

``pip install -e ".[tensorboard]"`` enables it; without the package every call is a no-op and
``metrics.csv`` stays the record. Rows are written when their CSV is (at checkpoints), and a
resumed run opens its writer with ``purge_step`` so that TensorBoard drops any event past the
checkpoint it resumed from: a killed and resumed run shows each step once.
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


class TensorBoardLog:
    """Appends metric rows to the event files in ``folder`` (a no-op without tensorboardX)."""

    def __init__(self, folder: Path, step_key: str, resume_step: int | None = None):
        self._step_key = step_key
        self._writer = None
        if tensorboard_available():
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(folder), purge_step=resume_step)

    def write(self, rows: Sequence[dict]) -> None:
        if self._writer is None:
            return
        for row in rows:
            step = int(row[self._step_key])
            for key, value in row.items():
                if key != self._step_key and isinstance(value, int | float):
                    if not math.isnan(value):
                        self._writer.add_scalar(scalar_tag(key), value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

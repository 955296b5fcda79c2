"""Jobs for the tests of the data workers (``udg.experiments.data_stage.run_jobs``): picklable
by name, so that a spawned worker can run them. Each writes its process id to ``pid_file``
when it starts, so that a test can see whether its worker is still alive."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    pid_file: Path
    action: str
    """``sleep`` (a minute), ``fail`` (a ValueError), ``die`` (the process exits at once) or
    ``echo`` (returns its name)."""
    after: Path | None = None
    """A pid file to wait for before acting: another job has started."""

    def __call__(self, send):
        send(("start", self.name))
        self.pid_file.write_text(str(os.getpid()))
        if self.after is not None:
            wait_for(self.after)
        if self.action == "sleep":
            time.sleep(60)
        elif self.action == "fail":
            raise ValueError(f"{self.name} went wrong")
        elif self.action == "die":
            os._exit(9)
        return self.name


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def wait_for(path: Path, seconds: float = 60.0) -> str:
    """``path``'s text once it is there."""
    end = time.monotonic() + seconds
    while not path.exists() or not path.read_text():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)
    return path.read_text()

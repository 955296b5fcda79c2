"""The data workers (``udg.experiments.data_stage``): jobs side by side in processes, errors and
dead workers surfacing as errors, no worker outliving the run. The pipeline's own data jobs
are tested in ``test_pipeline.py``."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny_configs import TINY
from worker_jobs import Job, alive, wait_for

from udg.errors import UdgError
from udg.experiments.data_stage import run_jobs, seed_jobs, worker_count


def test_jobs_and_the_jobs_they_make_possible_all_run(tmp_path):
    jobs = [Job(f"job {i}", tmp_path / f"{i}.pid", "echo") for i in range(3)]
    seen, results = [], []

    def on_done(job, result):
        results.append(result)
        return [Job("late", tmp_path / "late.pid", "echo")] if job.name == "job 0" else []

    run_jobs(jobs, 2, seen.append, on_done)
    assert sorted(results) == ["job 0", "job 1", "job 2", "late"]
    assert sorted(m[1] for m in seen) == sorted(results)  # every job's report came through
    pids = {wait_for(tmp_path / f"{n}.pid") for n in ("0", "1", "2", "late")}
    assert os.getpid() not in {int(p) for p in pids} and 1 <= len(pids) <= 2


def test_a_jobs_error_is_raised_and_the_other_workers_stop(tmp_path):
    sleeper = Job("sleeper", tmp_path / "sleeper.pid", "sleep")
    failing = Job("failing", tmp_path / "failing.pid", "fail", after=sleeper.pid_file)
    with pytest.raises(ValueError, match="failing went wrong") as raised:
        run_jobs([sleeper, failing], 2, lambda m: None, lambda job, result: [])
    assert any("in a data worker" in note for note in raised.value.__notes__)
    assert not alive(int(sleeper.pid_file.read_text()))  # stopped, not left to sleep on


def test_a_worker_that_dies_is_an_error_naming_its_job(tmp_path):
    sleeper = Job("sleeper", tmp_path / "sleeper.pid", "sleep")
    dying = Job("dying job", tmp_path / "dying.pid", "die", after=sleeper.pid_file)
    with pytest.raises(UdgError, match=r"stopped \(exit code 9\) while running dying job"):
        run_jobs([sleeper, dying], 2, lambda m: None, lambda job, result: [])
    assert not alive(int(sleeper.pid_file.read_text()))


def test_the_workers_end_when_their_parent_is_killed(tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    script = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from worker_jobs import Job
        from udg.experiments.data_stage import run_jobs
        if __name__ == "__main__":
            job = Job("sleeper", Path({str(pid_file)!r}), "sleep")
            run_jobs([job], 2, lambda m: None, lambda job, result: [])
    """
    (tmp_path / "parent.py").write_text(textwrap.dedent(script))
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")])
    try:
        worker = int(wait_for(pid_file))
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        end = time.monotonic() + 30
        while alive(worker) and time.monotonic() < end:
            time.sleep(0.1)
        assert not alive(worker)
    finally:
        parent.kill()


def test_worker_counts_are_checked_before_any_work(tmp_path, monkeypatch):
    jobs = seed_jobs(0, dataclasses.replace(TINY, env="rooms"), ["rooms-angle-0"], None,
                     "rooms-angle-0", tmp_path)  # fmt: skip
    assert worker_count(jobs, 3) == 3
    with pytest.raises(UdgError, match="--data-workers must be at least 1, got 0"):
        worker_count(jobs, 0)
    with pytest.raises(UdgError, match="this machine's memory holds"):
        worker_count(jobs, 10**9)
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert worker_count(jobs) == 1 == worker_count(jobs, 1)
    with pytest.raises(UdgError, match="--data-workers 2 needs a CPU backend"):
        worker_count(jobs, 2)
    assert not any(tmp_path.iterdir())

"""Each seed's data for the pipeline: stage 1's diverse agents, the baselines' SAC agents and
the uniformly random data, as jobs that run side by side, one process per CPU core.

A seed's three jobs are independent of each other and of the other seeds'. On a CPU, one job's
small networks (a SAC population at batch 256) run about as fast on one core as on all of
them, so the jobs run in worker processes, each pinned to its own core with one JAX device:
on the developers' 2 cores the demo's 3 seeds take about half the time they take one after
another. A job's numbers do not depend on where it ran (a stage-1 run on one device equals the
same run over one device per core), and each is a resumable run in its own folder, so a killed
pool resumes like a killed run. With one core, or on a GPU or TPU (one accelerator, shared),
the jobs run one after another in this process. Each job hands back its datasets as loaded, so
that stage 2 and the report read no dataset again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from udg.data.collect import random_episodes
from udg.data.dataset import Dataset
from udg.data.minari_io import dataset_id_for, load_datasets, write_dataset
from udg.devices import usable_cores
from udg.errors import UdgError
from udg.experiments.generate import (
    memory_estimate,
    plot_run_coverage,
    round_summary,
    run_generate,
)
from udg.experiments.generate_config import GenerateConfig
from udg.experiments.runs import MANIFEST
from udg.limits import machine_memory, size_text

JOB_KINDS = ("udg", "experts", "random")
"""A seed's jobs: stage 1 (the UDG data), the baselines' SAC agents (one per task: the
supervised data and the experts) and the uniformly random data."""


@dataclasses.dataclass(frozen=True)
class SeedData:
    """What one seed's stage 1 and baselines wrote: the dataset folders of each data kind (UDG:
    one per agent) and each task's expert dataset."""

    seed: int
    sources: dict[str, tuple[str, ...]]
    experts: dict[str, Path]


@dataclasses.dataclass(frozen=True)
class DataJob:
    """One job of a seed: ``kind`` (one of :data:`JOB_KINDS`) written under ``out``."""

    seed: int
    kind: str
    out: Path
    config: GenerateConfig
    """The stage-1 run's config (``udg``, ``experts``); for ``random``, the seed's stage 1,
    whose env, episode length and total transitions the random data takes."""
    log_line: str
    """What the pipeline's log says when the job starts."""

    @property
    def name(self) -> str:
        return f"seed {self.seed} {self.kind}"

    @property
    def steps(self) -> int:
        """Env steps per agent (``udg``, ``experts``), or the random data's transitions."""
        c = self.config
        per_agent = c.rounds * c.episode_length
        return c.num_agents * per_agent if self.kind == "random" else per_agent

    @property
    def bar_steps(self) -> int:
        """The job's share of the data bar: its agents' env steps (the random data takes a
        few seconds: none)."""
        return 0 if self.kind == "random" else self.steps

    def __call__(self, send: Send) -> tuple[str, list[str], dict[Path, Dataset]]:
        return run_job(self, send)


def experts_config(
    gen: GenerateConfig, expert_tasks: list[str], expert_steps: int | None
) -> GenerateConfig:
    """The baselines' stage-1 config of a seed: one SAC agent per task, trained at once."""
    return dataclasses.replace(
        gen,
        num_agents=len(expert_tasks),
        agent_tasks=tuple(expert_tasks),
        task=None,
        w_task=1.0,
        w_div=0.0,
        steps=expert_steps or gen.steps,
    ).validated()


def seed_jobs(
    seed: int,
    gen: GenerateConfig,
    expert_tasks: list[str],
    expert_steps: int | None,
    supervised_task: str,
    out: Path,
) -> list[DataJob]:
    """A seed's three jobs under ``out`` (its ``seed-<s>`` folder)."""
    experts = experts_config(gen, expert_tasks, expert_steps)
    total = gen.num_agents * gen.rounds * gen.episode_length
    return [
        DataJob(
            seed,
            "udg",
            out / "udg",
            gen,
            f"seed {seed}, stage 1: {gen.num_agents} diverse agents, {gen.steps} steps each",
        ),
        DataJob(
            seed,
            "experts",
            out / "experts",
            experts,
            f"seed {seed}, baselines: {len(expert_tasks)} SAC agents, one per task, trained at "
            f"once, {experts.steps} steps each (supervised data: {supervised_task}; the others "
            "are the experts)",
        ),
        DataJob(
            seed,
            "random",
            out / "random",
            gen,
            f"seed {seed}, baseline: {total} uniformly random transitions",
        ),  # fmt: skip
    ]


def random_dataset(env: str, steps: int, episode_length: int, seed: int, root: Path) -> Path:
    """The seed's uniformly random dataset of ``steps`` transitions under ``root`` (kept when
    it is there)."""
    dataset_id = dataset_id_for(env, "random")
    path = root / dataset_id
    if path.exists():
        return path
    episodes = random_episodes(env, steps, seed, max_episode_steps=episode_length)
    return write_dataset(
        episodes,
        root,
        dataset_id,
        env,
        max_episode_steps=episode_length,
        algorithm="uniform-random",
        udg_metadata={"kind": "random"},
    )


Send = Callable[[tuple], None]
"""Where a job reports: ``("start", name)`` and ``("steps", name, completed, metrics)``."""


def run_job(job: DataJob, send: Send) -> tuple[str, list[str], dict[Path, Dataset]]:
    """Run (or resume, or find finished) ``job``; its name, its datasets' folders (a stage-1
    run's in agent order) and those datasets loaded, by folder."""
    send(("start", job.name))
    config = job.config
    if job.kind == "random":
        path = random_dataset(config.env, job.steps, config.episode_length, job.seed, job.out)
        paths = [path]
    else:

        def on_round(round_done: int, row: dict) -> None:
            completed = min(round_done * config.episode_length, job.steps)
            send(("steps", job.name, completed, round_summary(config, row)))

        _, paths = run_generate(config, job.out, on_round)
    loaded: dict[Path, Dataset] = {}
    load_datasets(paths, loaded)
    if job.kind == "udg" and not _figure_is_current(job.out):
        plot_run_coverage(job.out, loaded=loaded)
    send(("steps", job.name, job.steps, {}))
    return job.name, [str(p) for p in paths], loaded


def _figure_is_current(run: Path) -> bool:
    """Whether the run's coverage figure was drawn after the run last finished."""
    figure, manifest = run / "coverage.png", run / MANIFEST
    return figure.exists() and figure.stat().st_mtime >= manifest.stat().st_mtime


def worker_count(jobs: list[DataJob], requested: int | None = None) -> int:
    """How many jobs run side by side: ``requested`` (``--data-workers``), checked, or by
    default one per usable core on a CPU backend (each job's population then has a core to
    itself), as many as the memory holds with each worker at its largest job; one on a GPU or
    TPU, whose one device the jobs share."""
    import jax

    if requested is not None and requested < 1:
        raise UdgError(f"--data-workers must be at least 1, got {requested}")
    backend = jax.default_backend()
    if backend != "cpu":
        if requested not in (None, 1):
            raise UdgError(
                f"--data-workers {requested} needs a CPU backend: on {backend} the data jobs "
                "share one device and run one after another (--data-workers 1)"
            )
        return 1
    largest = max((memory_estimate(j.config) for j in jobs if j.kind != "random"), default=0)
    fit = max(1, machine_memory() // max(largest, 1))
    if requested is not None:
        if requested > fit:
            raise UdgError(
                f"--data-workers {requested}: each worker's largest job needs about "
                f"{size_text(largest)}, so this machine's memory holds {fit} side by side"
            )
        return requested
    return 1 if len(jobs) < 2 else max(1, min(usable_cores(), len(jobs), fit))


class FitJob:
    """A dynamics model's fit (:class:`udg.experiments.offline.ModelFit`) as a job: stage 2's
    models are fitted in the same workers, as soon as a seed's data is there."""

    def __init__(self, fit) -> None:
        self.fit = fit

    @property
    def name(self) -> str:
        return self.fit.name

    def __call__(self, send: Send) -> Path:
        send(("start", self.name))
        self.fit.run()
        return self.fit.path


Job = DataJob | FitJob


def run_jobs(
    jobs: list[Job],
    workers: int,
    on_message: Send,
    on_done: Callable[[Job, Any], list[Job]],
) -> None:
    """Run ``jobs`` one after another in this process (``workers`` 1), or on ``workers``
    processes, each pinned to one core. ``on_message`` gets every job's reports in this
    process, as they come; ``on_done(job, result)`` each job's result as it finishes, and
    returns the jobs it makes possible, which join the queue.

    A job's error is raised here, and a worker that dies (killed for memory, say) is an error
    naming its job; either way the other workers are stopped (each job is a resumable run or
    a file written whole, so rerunning resumes). The workers ignore Ctrl-C, which this process
    handles by stopping them, and end themselves if this process dies."""
    if workers <= 1:
        queued = list(jobs)
        while queued:
            job = queued.pop(0)
            queued += on_done(job, job(on_message))
        return
    context = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
    messages = context.Queue()
    inboxes = [context.Queue() for _ in range(workers)]  # each worker's next job
    cores = sorted(_cores()) or [None]
    processes = [
        context.Process(
            target=_worker,
            args=(w, os.getpid(), cores[w % len(cores)], inboxes[w], messages),
            name=f"udg-data-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    queued, running, idle = list(jobs), {}, list(range(workers))

    def dispatch() -> None:
        while queued and idle:
            w = idle.pop(0)
            running[w] = queued.pop(0)
            inboxes[w].put(running[w])

    finished = False
    try:
        for process in processes:
            process.start()
        dispatch()
        while running:
            _check_alive(processes, running)
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if message[0] == "failed":
                raise message[2]
            if message[0] == "done":
                _, w, result = message
                job = running.pop(w)
                idle.append(w)
                queued += on_done(job, result)
                dispatch()
            else:
                on_message(message)
        finished = True
    finally:
        _stop(processes, inboxes, gently=finished)


def _check_alive(processes: list, running: dict[int, Job]) -> None:
    for w, process in enumerate(processes):
        if process.exitcode is not None:
            doing = f"while running {running[w].name}" if w in running else "between jobs"
            raise UdgError(
                f"a data worker stopped (exit code {process.exitcode}) {doing}: killed for "
                "memory? rerun the command to resume"
            )


def _stop(processes: list, inboxes: list, gently: bool) -> None:
    """End the workers: asked to finish (``gently``, all jobs done) or stopped at once."""
    for process, inbox in zip(processes, inboxes, strict=True):
        if process.pid is None:  # never started
            continue
        if gently:
            inbox.put(None)
            process.join(timeout=10)
        if process.is_alive():
            process.terminate()  # the job unwinds (its run folder released) and the worker exits
            process.join(timeout=10)
        if process.is_alive():
            process.kill()
        process.join()
        inbox.cancel_join_thread()  # a job no worker took is dropped


def _cores() -> list[int]:
    return list(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _worker(w: int, parent: int, core: int | None, inbox, messages) -> None:
    """Worker ``w``: one core and one JAX device on it; runs the jobs ``inbox`` gives it until
    it gives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Stopped by the parent, a worker exits as Python does (its job's cleanups and the
    # semaphores a library made are undone), not at once.
    signal.signal(signal.SIGTERM, _exit_on_term)
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    os.environ["UDG_CPU_DEVICES"] = "1"  # the worker's core is its one device
    from udg.devices import use_cpu_cores

    use_cpu_cores(1)  # the compilation cache comes with the parent's environment
    for job in iter(inbox.get, None):
        try:
            result = job(messages.put)
        except Exception as err:  # the parent raises it
            messages.put(("failed", w, _portable(err)))
        else:
            messages.put(("done", w, result))


def _exit_on_term(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # once: a second stop ends the process outright
    raise SystemExit(128 + signum)


def _end_with(parent: int) -> None:
    """End this worker when its parent process is gone (killed, say)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _portable(err: Exception) -> Exception:
    """``err`` with this process's traceback as a note, or, if it cannot be pickled, a
    RuntimeError that says it."""
    text = traceback.format_exc()
    if isinstance(err, UdgError):
        return err
    try:
        err.add_note(f"in a data worker:\n{text}")
        pickle.dumps(err)
        return err
    except Exception:
        return RuntimeError(f"a data job failed in its worker:\n{text}")


def make_data(
    jobs: list[DataJob],
    workers: int,
    supervised_task: str,
    log: Callable[[str], None],
    progress: Callable[..., contextlib.AbstractContextManager[Any]],
    on_seed: Callable[[SeedData, dict[Path, Dataset]], list[Job]] | None = None,
) -> tuple[dict[int, SeedData], dict[Path, Dataset]]:
    """Run every seed's jobs (:func:`run_jobs`) under one progress bar; each seed's
    :class:`SeedData` and every dataset the jobs loaded, by folder. ``on_seed(seed_data,
    loaded)`` follows the last job of each seed and returns jobs that need its data (stage 2's
    model fits), which run in the same workers, after the jobs queued before them; those still
    running when the data is done get a bar of their own."""
    by_name = {job.name: job for job in jobs}
    done = dict.fromkeys(by_name, 0)
    seeds = sorted({job.seed for job in jobs})
    loaded: dict[Path, Dataset] = {}
    paths: dict[tuple[int, str], list[str]] = {}
    data: dict[int, SeedData] = {}
    fits = {"joined": 0, "done": 0}
    bars = contextlib.ExitStack()  # the data's bar, then the fits' (when any are left)
    fits_bar: list[Any] = []

    def on_done(job: Job, result: Any) -> list[Job]:
        if not isinstance(job, DataJob):
            fits["done"] += 1
            if fits_bar:
                fits_bar[0].update(fits["done"], model=job.fit.path.stem)
            return []
        _, job_paths, job_loaded = result
        paths[job.seed, job.kind] = job_paths
        loaded.update(job_loaded)
        if not all((job.seed, kind) in paths for kind in JOB_KINDS):
            return []
        data[job.seed] = _seed_data(job.seed, paths, by_name, supervised_task)
        more = [] if on_seed is None else on_seed(data[job.seed], loaded)
        if more:
            log(f"seed {job.seed}: {len(more)} dynamics model fit(s) join the data jobs")
            fits["joined"] += len(more)
        if len(paths) == len(jobs):  # the data is done: the fits left get their own bar
            bars.close()
            if fits["done"] < fits["joined"]:
                fits_bar.append(bars.enter_context(progress(FITS_BAR, fits["joined"], "fits")))
                fits_bar[0].update(fits["done"])
        return more

    description = f"data of {len(seeds)} seed(s), {workers} at a time"
    with bars:
        bar = bars.enter_context(progress(description, sum(j.bar_steps for j in jobs), "steps"))

        def on_message(message: tuple) -> None:
            if message[0] == "start":
                if message[1] in by_name:
                    log(by_name[message[1]].log_line)
                return
            _, name, completed, metrics = message  # a job's reports all come before its result
            done[name] = min(completed, by_name[name].bar_steps)
            bar.update(sum(done.values()), job=name, **metrics)

        run_jobs(list(jobs), workers, on_message, on_done)
    return {seed: data[seed] for seed in seeds}, loaded


FITS_BAR = "stage 2's dynamics models"
"""The bar of the model fits still running when the data is done."""


def _seed_data(
    seed: int, paths: dict[tuple[int, str], list[str]], by_name: dict, supervised_task: str
) -> SeedData:
    expert_tasks = by_name[f"seed {seed} experts"].config.agent_tasks
    experts = dict(zip(expert_tasks, map(Path, paths[seed, "experts"]), strict=True))
    sources = {
        "udg": tuple(paths[seed, "udg"]),
        "random": tuple(paths[seed, "random"]),
        "supervised": (str(experts[supervised_task]),),  # agent i learnt task i
    }
    return SeedData(seed, sources, experts)

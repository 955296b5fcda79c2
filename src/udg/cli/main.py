"""The ``udg`` command line: one subcommand per user-facing job.

Parsing is tyro's (one frozen dataclass per subcommand, its fields the flags and its docstrings
the help). This module only turns arguments into calls of the library and results into tables
or JSON; every :class:`~udg.errors.UdgError` becomes one ``udg: error: ...`` line on stderr and
exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from udg.errors import UdgError


@dataclass(frozen=True)
class Tasks:
    """List the environments and tasks, with their reward formulas."""

    json: bool = False
    """Print JSON instead of tables."""

    def run(self) -> None:
        from udg.cli import commands

        commands.list_tasks(as_json=self.json)


@dataclass(frozen=True)
class CollectRandom:
    """Collect the random-data baseline: uniformly random actions, written as a Minari dataset."""

    env: str = "point"
    """Environment (see `udg tasks`)."""
    steps: int = 10_000
    """Number of transitions to collect."""
    seed: int = 0
    """Seed of the environment and of the action sampler."""
    out: Path = Path("runs/datasets")
    """Root folder of the Minari datasets."""
    name: str | None = None
    """Dataset name (default random-s<seed>); the Minari id is udg/<env>/<name>-v0."""
    max_episode_steps: int | None = None
    """Episode time limit (default: the env's)."""

    def run(self) -> None:
        from udg.cli import commands

        commands.collect_random(
            env=self.env,
            steps=self.steps,
            seed=self.seed,
            out=self.out,
            name=self.name,
            max_episode_steps=self.max_episode_steps,
        )


@dataclass(frozen=True)
class DatasetsList:
    """List the Minari datasets at or below folders (env, episodes, transitions, id)."""

    paths: tyro.conf.Positional[tuple[Path, ...]] = (Path("runs"),)
    """Dataset folders, Minari roots or run folders."""
    json: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from udg.cli import commands

        commands.list_datasets(self.paths, as_json=self.json)


@dataclass(frozen=True)
class DatasetsShow:
    """Show one dataset: metadata, columns, episode returns."""

    path: tyro.conf.Positional[Path]
    """The dataset folder."""
    json: bool = False
    """Print JSON instead of text."""

    def run(self) -> None:
        from udg.cli import commands

        commands.show_dataset(self.path, as_json=self.json)


@dataclass(frozen=True)
class Datasets:
    """Inspect datasets."""

    command: (
        Annotated[DatasetsList, tyro.conf.subcommand("list")]
        | Annotated[DatasetsShow, tyro.conf.subcommand("show")]
    )

    def run(self) -> None:
        self.command.run()


@dataclass(frozen=True)
class Rank:
    """Relabel datasets for a task and rank them by mean episode return (best first)."""

    datasets: tyro.conf.Positional[tuple[Path, ...]]
    """Dataset folders, Minari roots or run folders."""
    task: str
    """Task to relabel for (see `udg tasks`)."""
    json: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from udg.cli import commands

        commands.rank_datasets(self.datasets, self.task, as_json=self.json)


@dataclass(frozen=True)
class Export:
    """Write a task's selection of datasets as one new Minari dataset whose rewards are the
    task's: the datasets are relabelled and ranked as `udg rank` does, the rule selects, and the
    selected episodes are written unchanged but for their rewards (the collected reward stays as
    the info column collected_reward). Beside Minari's data/ it writes d3rlpy.npz, loaded by
    `d3rlpy.dataset.MDPDataset(**numpy.load(".../d3rlpy.npz"))`.

    Example: udg export runs/demo/seed-0/generate --task rooms-angle-0 --out runs/exports"""

    datasets: tyro.conf.Positional[tuple[Path, ...]]
    """Dataset folders, Minari roots or run folders."""
    task: str
    """Task whose reward the export holds (see `udg tasks`)."""
    out: Path
    """Root folder of the exported Minari dataset (udg/<env>/<name>-v0 under it)."""
    select: str = "top1"
    """Selection rule: top1, top2, top:K or all."""
    name: str | None = None
    """Dataset name (default <task>-<select>)."""
    reference: Path | None = None
    """An experiment's results.json whose reference rows (random policy and expert under the
    task, mean over seeds) become Minari's ref_min_score / ref_max_score."""
    ref_min_score: float | None = None
    """Random policy's return under the task (overrides --reference; with --ref-max-score only,
    measured here over 10 episodes)."""
    ref_max_score: float | None = None
    """Expert's return under the task (overrides --reference)."""
    author: str | None = None
    """Author in the metadata (default: $UDG_AUTHOR, else git's user.name)."""
    author_email: str | None = None
    """Contact in the metadata (default: $UDG_AUTHOR_EMAIL, else git's user.email)."""
    code_permalink: str | None = None
    """Link to the code in the metadata (default: $UDG_CODE_PERMALINK, else the git remote at
    this revision, else udg's version and revision)."""
    d3rlpy: bool = True
    """Also write d3rlpy.npz (the episodes laid out for d3rlpy's MDPDataset)."""
    json: bool = False
    """Print JSON instead of text."""

    def run(self) -> None:
        from udg.cli import commands

        commands.export_datasets(self)


@dataclass(frozen=True)
class Generate:
    """Stage 1: train K diverse SAC agents at once and write one Minari dataset per agent.

    Rerun the same command after an interruption to resume; the datasets then equal those of an
    uninterrupted run. Rerun it with a larger --steps to train the same agents on.
    --agents 1 --task T --w-div 0 --w-task 1 gives the supervised baseline.
    """

    out: Path
    """Run folder (created; an existing run with the same config is resumed)."""
    env: str = "point"
    """Environment (see `udg tasks`)."""
    scale: str = "demo"
    """Preset: demo (point in minutes), small (MuJoCo in hours on 2 cores) or paper."""
    agents: int | None = None
    """K, the number of agents (default: the preset's)."""
    steps: int | None = None
    """Environment steps per agent (default: the preset's); raise it on an existing run to
    extend it."""
    task: str | None = None
    """A known task whose reward is mixed in with weight --w-task (default: the preset's: none,
    except ant at small, which mixes in the ant-outward locomotion prior)."""
    agent_tasks: tuple[str, ...] | None = None
    """One task per agent instead of --task (K specialists at once, e.g. experts for the theory
    check: --agent-tasks ant-angle-0 ant-angle-90 --w-div 0)."""
    w_task: float | None = None
    """Weight of the task reward (default: the preset's, 0 except ant at small's 1; and 1 when a
    task is given with --w-div 0)."""
    w_div: float | None = None
    """Weight of the diversity reward (default 1)."""
    seed: int = 0
    """Seed of everything."""
    episode_length: int | None = None
    """Episode time limit T (default: the preset's)."""
    warmup_steps: int | None = None
    """Random-action steps per agent before learning (default: the preset's)."""
    reward_scale: float | None = None
    """Scale of the diversity reward (default: the preset's)."""
    temperature: str | None = None
    """SAC temperature: a fixed value (WURL's 0.2) or `auto` (tuned towards an entropy of
    -|A|); default: the preset's."""
    episode_scaling: bool | None = None
    """Multiply an early-ended episode's diversity reward by T / D (default: the preset's)."""
    features: tuple[str, ...] | None = None
    """Info columns forming the diversity features (default: the env's)."""
    observe_features: bool | None = None
    """Give the agents the diversity features too (Ant's and HalfCheetah's observations omit
    the torso position; default: the preset's)."""
    final_rollouts: int | None = None
    """Extra episodes of each final policy per dataset (default 0)."""

    def run(self) -> None:
        from udg.cli import commands

        commands.generate(self)


@dataclass(frozen=True)
class PlotCoverage:
    """Draw the coverage figure (the agents' trajectories in feature space) of a generate run."""

    run_dir: tyro.conf.Positional[Path]
    """The generate run folder."""
    last: int | None = None
    """Draw each agent's last N episodes bold (default: its last 20 %, as at the end of a run);
    e.g. --last 10 shows only the final policies."""
    out: Path | None = None
    """PNG to write (default: RUN/coverage.png)."""

    def run(self) -> None:
        from udg.experiments.generate import plot_run_coverage

        print(plot_run_coverage(self.run_dir, last=self.last, out=self.out))


@dataclass(frozen=True)
class Offline:
    """Stage 2: relabel datasets for a task, rank and select them, train MOPO, evaluate.

    Rerun the same command after an interruption to resume. Works on any Minari dataset of a
    known env, e.g. `udg offline --data RUN/datasets --task point-angle-60 --out OUT`.
    """

    data: tuple[Path, ...]
    """Dataset folders, Minari roots or run folders."""
    task: str
    """Downstream task (see `udg tasks`)."""
    out: Path
    """Output folder (model, policy, learning curve, result.json)."""
    select: str = "top1"
    """Selection: top1 (UDG's rule), top2, top:K or all."""
    scale: str = "demo"
    """MOPO preset: demo, small or paper."""
    seed: int = 0
    """Seed of the model, policy and evaluation."""
    epochs: int | None = None
    """Policy epochs (default: the preset's)."""
    rollout_length: int | None = None
    """Model rollout horizon h (default: the env's preset)."""
    penalty_coef: float | None = None
    """Uncertainty penalty lambda (default: the env's preset)."""
    penalty: str | None = None
    """max_sigma (MOPO's) or disagreement."""
    reward: str | None = None
    """Reward of model steps: computed (default; the task's function of the predicted columns,
    one model per dataset) or learned (MOPO's original: the model predicts the reward)."""
    eval_episodes: int | None = None
    """Episodes per evaluation (default: the preset's)."""
    observation_dims: int | None = None
    """Leading observation entries the model and policy see (default: the env's; ant: 27)."""
    eval_episode_length: int | None = None
    """Time limit of evaluation episodes (default: the env's)."""
    model: Path | None = None
    """Reuse this saved dynamics model (model.msgpack of an earlier run) instead of fitting."""
    model_epochs: int | None = None
    """Cap on the model's epochs, early stopping still on (default: the preset's)."""
    model_batches: int | None = None
    """Model minibatches per epoch, 0 for full passes (default: the preset's)."""
    json: bool = False
    """Print result.json instead of a summary."""

    def run(self) -> None:
        from udg.cli import commands

        commands.offline(self)


@dataclass(frozen=True)
class Demo:
    """The whole UDG pipeline on the rooms world, over seeds: diverse data, baselines, MOPO on
    six tasks, reference returns, coverage, the W1 theory check, and a report (results.json,
    report.md, report.html). `--env point` runs the open plane, the control where data
    coverage cannot matter."""

    out: Path = Path("runs/demo")
    """Run folder (rerun to resume; finished steps are skipped)."""
    env: str = "rooms"
    """World: rooms (nine rooms joined by doorways) or point (the open plane)."""
    scale: str = "demo"
    """Preset scale (demo runs in minutes on 2 cores)."""
    seed: int = 0
    """First seed; the pipeline runs seeds seed .. seed + seeds - 1."""
    seeds: int = 3
    """Seeds of the whole pipeline (each with its own stage 1, baselines and MOPO cells)."""
    expert_steps: int | None = None
    """Steps of each baseline SAC agent (supervised and expert data; default: stage 1's)."""
    executor: str = "local"
    """Where MOPO populations run: local (in-process) or ray (one task per population)."""
    address: str | None = None
    """Address of an existing Ray cluster (default: start a local one)."""
    population_cells: int | None = None
    """Most MOPO cells trained as one computation (default: every cell with the same settings;
    1 trains the cells one by one)."""

    def run(self) -> None:
        from udg.cli import commands
        from udg.experiments.pipeline import demo_experiment

        commands.pipeline(demo_experiment(self.env), self)


@dataclass(frozen=True)
class Experiment:
    """Reproduce a paper experiment: ant-angle (six directions; top-1/top-2/all, random,
    supervised ant-angle-0) or cheetah (jump and crawl; random, UDG top-1, supervised
    cheetah-run). Resumable cell by cell; writes a table beside the paper's numbers."""

    name: tyro.conf.Positional[str]
    """ant-angle or cheetah."""
    out: Path | None = None
    """Run folder (default runs/<name>-<scale>)."""
    scale: str = "small"
    """demo, small (hours on 2 cores) or paper."""
    seed: int = 0
    """First seed; the pipeline runs seeds seed .. seed + seeds - 1."""
    seeds: int = 3
    """Seeds of the whole pipeline (each with its own stage 1, baselines and MOPO cells)."""
    expert_steps: int | None = None
    """Steps of each baseline SAC agent (supervised and expert data; default: stage 1's)."""
    executor: str = "local"
    """Where MOPO populations run: local (in-process) or ray (one task per population)."""
    address: str | None = None
    """Address of an existing Ray cluster (default: start a local one)."""
    population_cells: int | None = None
    """Most MOPO cells trained as one computation (default: every cell with the same settings;
    1 trains the cells one by one)."""

    def run(self) -> None:
        import dataclasses

        from udg.cli import commands
        from udg.experiments.pipeline import get_experiment

        if self.name.startswith("demo"):
            raise UdgError("use `udg demo` for the demo (`udg demo --env point` for demo-point)")
        get_experiment(self.name)
        out = self.out or Path("runs") / f"{self.name}-{self.scale}"
        commands.pipeline(self.name, dataclasses.replace(self, out=out))


@dataclass(frozen=True)
class Plot:
    """Draw the learning curves of `udg offline` runs (an interrupted one's so far) in one figure
    (x: SAC updates) and print each run's last, best and mean-of-the-last-quarter evaluation
    return."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Offline run folders (named in the legend by their shortest distinct trailing path)."""
    out: Path
    """PNG to write."""
    title: str = ""
    """Figure title."""
    json: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from udg.cli import verbs

        verbs.plot_runs(self.runs, self.out, title=self.title, as_json=self.json)


@dataclass(frozen=True)
class Evaluate:
    """Run a finished offline run's saved policy deterministically in the real env and print each
    episode's steps, termination, final position, displacement and task return."""

    run_dir: tyro.conf.Positional[Path]
    """The offline run folder."""
    task: str | None = None
    """Task to score the episodes under (default: the run's own; any task of its env)."""
    episodes: int = 5
    """Number of episodes."""
    seed: int | None = None
    """Seed of the episodes' resets (default: the run's, at its last evaluation: with the run's
    --episodes and episode length these are the episodes its last_return averaged)."""
    episode_length: int | None = None
    """Episode time limit (default: the run's evaluation limit, else the env's)."""
    json: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from udg.cli import verbs

        verbs.evaluate_run(
            self.run_dir,
            self.task,
            self.episodes,
            seed=self.seed,
            episode_length=self.episode_length,
            as_json=self.json,
        )


@dataclass(frozen=True)
class Diversity:
    """The pairwise exact W1 table of a finished generate run's agents (the feature states of
    each agent's last episodes) against as many uniformly random policies, with each policy's
    median reach, mean heading and its consistency."""

    run_dir: tyro.conf.Positional[Path]
    """The generate run folder."""
    episodes: int = 10
    """Last episodes per agent (and random episodes per random policy)."""
    columns: tuple[str, ...] | None = None
    """Info columns to measure (default: the run's features; the first two give reach and
    heading), e.g. --columns x_position y_position for a run whose features were velocities."""
    json: bool = False
    """Print JSON instead of tables."""

    def run(self) -> None:
        from udg.cli import verbs

        verbs.diversity_run(self.run_dir, self.episodes, self.columns, as_json=self.json)


Command = (
    Annotated[Tasks, tyro.conf.subcommand("tasks")]
    | Annotated[CollectRandom, tyro.conf.subcommand("collect-random")]
    | Annotated[Datasets, tyro.conf.subcommand("datasets")]
    | Annotated[Rank, tyro.conf.subcommand("rank")]
    | Annotated[Export, tyro.conf.subcommand("export")]
    | Annotated[Generate, tyro.conf.subcommand("generate")]
    | Annotated[PlotCoverage, tyro.conf.subcommand("plot-coverage")]
    | Annotated[Offline, tyro.conf.subcommand("offline")]
    | Annotated[Demo, tyro.conf.subcommand("demo")]
    | Annotated[Experiment, tyro.conf.subcommand("experiment")]
    | Annotated[Plot, tyro.conf.subcommand("plot")]
    | Annotated[Evaluate, tyro.conf.subcommand("evaluate")]
    | Annotated[Diversity, tyro.conf.subcommand("diversity")]
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``udg`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv in (["--version"], ["-V"]):
        from udg import __version__
        from udg.experiments.runs import git_revision

        print(f"udg {__version__} (git {git_revision()})")
        return 0
    try:
        command = tyro.cli(
            Command,
            args=argv,
            prog="udg",
            description="Unsupervised data generation for offline RL. Add --debug for "
            "tracebacks; udg --version prints the version.",
            config=(tyro.conf.OmitArgPrefixes,),
        )
        from udg.devices import use_compilation_cache, use_cpu_cores

        use_cpu_cores()  # before the first JAX computation: one CPU device per core
        use_compilation_cache()  # reruns, resumes and Ray workers load what was compiled
        command.run()
    except UdgError as err:
        if debug:
            raise
        print(f"udg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("udg: interrupted; rerun the same command to resume where supported", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `udg ... | head` closed the pipe: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())

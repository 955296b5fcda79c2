"""The ``udg`` command line: one subcommand per user-facing job.

Parsing is tyro's (one frozen dataclass per subcommand, its fields the flags and its docstrings
the help). This module only turns arguments into calls of the library and results into tables
or JSON; every :class:`~udg.errors.UdgError` becomes one ``udg: error: ...`` line on stderr and
exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import tyro
from tyro import _strings as _tyro_strings

from udg.cli.preflight import check_empty_values, os_error_line, preflight
from udg.envs.registry import ENVS
from udg.errors import UdgError
from udg.offline import ALGOS

# tyro joins a docstring's wrapped lines only where the next line starts with a letter, and a
# field docstring's continuation lines start with its indentation: dedent them first, so that
# every wrapped help text reads as one paragraph (a line starting with "-" still breaks).
_remove_single_line_breaks = _tyro_strings.remove_single_line_breaks
_tyro_strings.remove_single_line_breaks = lambda text: _remove_single_line_breaks(
    inspect.cleandoc(text)
)

_METAVARS = {int: "INT", float: "FLOAT", str: "STR", bool: "{True,False}", Path: "PATH"}


def later(kind: type, default: str = "the preset's", metavar: str | None = None):
    """A flag that may be left out, its value then decided by udg (a preset, the env, the
    run): the type tyro parses, its metavar, and the default said once, in words."""
    hint = tyro.conf.arg(
        metavar=metavar or _METAVARS.get(kind), help_behavior_hint=f"(default: {default})"
    )
    return Annotated[kind | None, hint]


def choice(*names: str):
    """A string flag shown with its choices (checked by udg, with the one-line error)."""
    return Annotated[str, tyro.conf.arg(metavar="{" + ",".join(names) + "}")]


ENV = choice(*ENVS)
SCALE = choice("demo", "small", "paper")  # udg.experiments.presets.SCALES (tested)
EXECUTOR = choice("local", "ray")  # udg.experiments.grid.EXECUTORS (tested)
ALGO = choice(*ALGOS)
TASK = Annotated[str, tyro.conf.arg(metavar="TASK")]
SELECTION = Annotated[str, tyro.conf.arg(metavar="{top1,top2,top:K,all}")]


@dataclass(frozen=True)
class Tasks:
    """List the environments and tasks, with their reward formulas.

    Example: udg tasks --json"""

    json: bool = False
    """Print JSON instead of tables."""

    def run(self) -> None:
        from udg.cli import commands

        commands.list_tasks(as_json=self.json)


@dataclass(frozen=True)
class CollectRandom:
    """Collect the random-data baseline: uniformly random actions, written as a Minari dataset.

    Example: udg collect-random --env rooms --steps 20000 --seed 0 --out runs/datasets"""

    env: ENV = "point"
    """Environment (see `udg tasks`)."""
    steps: int = 10_000
    """Number of transitions to collect."""
    seed: int = 0
    """Seed of the environment and of the action sampler."""
    out: Path = Path("runs/datasets")
    """Root folder of the Minari datasets."""
    name: later(str, "random-s<seed>", "NAME") = None
    """Dataset name; the Minari id is udg/<env>/<name>-v0."""
    max_episode_steps: later(int, "the env's") = None
    """Episode time limit."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def disk_bytes(self):
        """The disk the dataset will take (udg.cli.preflight refuses a disk without it)."""
        from udg.data.minari_io import dataset_bytes
        from udg.envs import get_env_spec

        get_env_spec(self.env)  # an unknown env: its own error, not a disk estimate
        if self.steps <= 0 or (self.max_episode_steps or 1) <= 0:
            return None  # refused by the command with its own message
        return self.out, dataset_bytes(self.env, self.steps, self.max_episode_steps), "the dataset"

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
    """List the Minari datasets at or below folders (env, episodes, transitions, id).

    Example: udg datasets list runs/demo"""

    paths: tyro.conf.Positional[tuple[Path, ...]] = (Path("runs"),)
    """Dataset folders, Minari roots or run folders."""
    json: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from udg.cli import commands

        commands.list_datasets(self.paths, as_json=self.json)


@dataclass(frozen=True)
class DatasetsShow:
    """Show one dataset: metadata, columns, episode returns.

    Example: udg datasets show runs/datasets/udg/rooms/random-s0-v0"""

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
    """Relabel datasets for a task and rank them by mean episode return (best first).

    Example: udg rank runs/demo/seed-0/generate --task rooms-angle-0"""

    datasets: tyro.conf.Positional[tuple[Path, ...]]
    """Dataset folders, Minari roots or run folders."""
    task: TASK
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
    task: TASK
    """Task whose reward the export holds (see `udg tasks`)."""
    out: Path
    """Root folder of the exported Minari dataset (udg/<env>/<name>-v0 under it)."""
    select: SELECTION = "top1"
    """Selection rule: the best dataset, the union of the best K, or all."""
    name: later(str, "<task>-<select>", "NAME") = None
    """Dataset name."""
    reference: later(Path, "none") = None
    """An experiment's results.json whose reference rows (random policy and expert under the
    task, mean over seeds) become Minari's ref_min_score / ref_max_score."""
    ref_min_score: later(float, "--reference's, else measured over 10 episodes") = None
    """Random policy's return under the task (needs --ref-max-score or --reference)."""
    ref_max_score: later(float, "--reference's, else none") = None
    """Expert's return under the task."""
    author: later(str, "$UDG_AUTHOR, else git's user.name") = None
    """Author in the metadata."""
    author_email: later(str, "$UDG_AUTHOR_EMAIL, else git's user.email") = None
    """Contact in the metadata."""
    code_permalink: later(
        str, "$UDG_CODE_PERMALINK, else the git remote at this revision, else udg's version"
    ) = None
    """Link to the code in the metadata."""
    d3rlpy: bool = True
    """Also write d3rlpy.npz (the episodes laid out for d3rlpy's MDPDataset)."""
    json: bool = False
    """Print JSON instead of text."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def run(self) -> None:
        from udg.cli import commands

        commands.export_datasets(self)


@dataclass(frozen=True)
class Generate:
    """Stage 1: train K diverse SAC agents at once and write one Minari dataset per agent.

    Rerun the same command after an interruption to resume; the datasets then equal those of an
    uninterrupted run. Rerun it with a larger --steps to train the same agents on.
    --agents 1 --task T --w-div 0 --w-task 1 gives the supervised baseline.

    Example: udg generate --env rooms --out runs/rooms-k8 --agents 8
    """

    out: Path
    """Run folder (created; an existing run with the same config is resumed)."""
    env: ENV = "point"
    """Environment (see `udg tasks`)."""
    scale: SCALE = "demo"
    """Preset: demo (point in minutes), small (MuJoCo in hours on 2 cores) or paper."""
    agents: later(int) = None
    """K, the number of agents."""
    steps: later(int) = None
    """Environment steps per agent; raise it on an existing run to extend it."""
    task: later(str, "the preset's: none, but ant-outward for ant at small", "TASK") = None
    """A known task whose reward is mixed in with weight --w-task."""
    agent_tasks: later(tuple[str, ...], "none", "TASK [TASK ...]") = None
    """One task per agent instead of --task (K specialists at once, e.g. experts for the theory
    check: --agent-tasks ant-angle-0 ant-angle-90 --w-div 0)."""
    w_task: later(float, "the preset's: 0, but 1 for ant at small and with --w-div 0") = None
    """Weight of the task reward."""
    w_div: later(float, "1") = None
    """Weight of the diversity reward."""
    seed: int = 0
    """Seed of everything."""
    episode_length: later(int) = None
    """Episode time limit T."""
    warmup_steps: later(int) = None
    """Random-action steps per agent before learning."""
    reward_scale: later(float) = None
    """Scale of the diversity reward."""
    temperature: later(str, "the preset's", "{auto,FLOAT}") = None
    """SAC temperature: a fixed value (WURL's 0.2) or auto (tuned towards an entropy of minus
    the action dimension)."""
    episode_scaling: later(bool) = None
    """Multiply an early-ended episode's diversity reward by T / D."""
    features: later(tuple[str, ...], "the env's", "COLUMN [COLUMN ...]") = None
    """Info columns forming the diversity features."""
    observe_features: later(bool) = None
    """Give the agents the diversity features too (Ant's and HalfCheetah's observations omit
    the torso position)."""
    final_rollouts: later(int, "0") = None
    """Extra episodes of each final policy per dataset."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def disk_bytes(self):
        """The disk the run's datasets will take (udg.cli.preflight refuses a disk without
        it); validates the settings as the run would, before any work."""
        from udg.cli import commands

        return commands.generate_disk_bytes(self)

    def run(self) -> None:
        from udg.cli import commands

        commands.generate(self)


@dataclass(frozen=True)
class PlotCoverage:
    """Draw the coverage figure (the agents' trajectories in feature space) of a generate run.

    Example: udg plot-coverage runs/rooms-k8 --last 10 --out final.png"""

    run_dir: tyro.conf.Positional[Path]
    """The generate run folder."""
    last: later(int, "each agent's last 20 %, as at the end of a run") = None
    """Draw each agent's last N episodes bold; e.g. --last 10 shows only the final policies."""
    out: later(Path, "RUN/coverage.png") = None
    """PNG to write."""

    OUTPUTS: ClassVar = (("out", "file"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def run(self) -> None:
        from udg.experiments.generate import plot_run_coverage

        print(plot_run_coverage(self.run_dir, last=self.last, out=self.out))


@dataclass(frozen=True)
class Offline:
    """Stage 2: relabel datasets for a task, rank and select them, train an offline learner,
    evaluate.

    The learner is MOPO, the paper's, unless --algo names a model-free one (td3bc, iql), which
    trains on the data alone: no dynamics model, no rollouts. Rerun the same command after an interruption to resume. Works on any Minari dataset of a
    known env.

    Example: udg offline --data runs/rooms-k8 --task rooms-angle-60 --out runs/offline-60
    """

    data: tuple[Path, ...]
    """Dataset folders, Minari roots or run folders."""
    task: TASK
    """Downstream task (see `udg tasks`)."""
    out: Path
    """Output folder (model, policy, learning curve, result.json)."""
    algo: ALGO = "mopo"
    """Offline learner: mopo (the paper's: a dynamics model and penalised model rollouts),
    td3bc or iql (model-free; the flags marked MOPO's are refused with them)."""
    select: SELECTION = "top1"
    """Selection: the best dataset (UDG's rule), the union of the best K, or all."""
    scale: SCALE = "demo"
    """Preset of the learner (python -m udg.experiments.presets)."""
    seed: int = 0
    """Seed of the model, policy and evaluation."""
    epochs: later(int) = None
    """Policy epochs."""
    rollout_length: later(int, "the env's preset") = None
    """MOPO's model rollout horizon h."""
    penalty_coef: later(float, "the env's preset") = None
    """MOPO's uncertainty penalty lambda."""
    penalty: later(str, "the preset's: max_sigma", "{max_sigma,disagreement}") = None
    """MOPO's uncertainty of the penalty: max_sigma (MOPO's) or disagreement."""
    reward: later(str, "computed", "{computed,learned}") = None
    """MOPO's reward of model steps: computed (the task's function of the predicted columns,
    one model per dataset) or learned (MOPO's original: the model predicts the reward)."""
    eval_episodes: later(int) = None
    """Episodes per evaluation."""
    observation_dims: later(int, "the env's; ant: 27") = None
    """Leading observation entries the model and policy see."""
    eval_episode_length: later(int, "the env's") = None
    """Time limit of evaluation episodes."""
    model: later(Path, "fit one") = None
    """MOPO's: reuse this saved dynamics model (model.msgpack of an earlier run) instead of
    fitting."""
    model_epochs: later(int) = None
    """MOPO's cap on the model's epochs, early stopping still on."""
    model_batches: later(int) = None
    """MOPO's model minibatches per epoch, 0 for full passes."""
    json: bool = False
    """Print result.json instead of a summary."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def run(self) -> None:
        from udg.cli import commands

        commands.offline(self)


@dataclass(frozen=True)
class Demo:
    """The whole UDG pipeline on the rooms world, over seeds: diverse data, baselines, MOPO (or
    --algo td3bc, iql) on six tasks, reference returns, coverage, the W1 theory check, and a report (results.json,
    report.md, report.html). `--env point` runs the open plane, the control where data
    coverage cannot matter.

    Example: udg demo --out runs/demo --seeds 3"""

    out: Path = Path("runs/demo")
    """Run folder (rerun to resume; finished steps are skipped)."""
    env: choice("rooms", "point") = "rooms"
    """World: rooms (nine rooms joined by doorways) or point (the open plane)."""
    scale: SCALE = "demo"
    """Preset scale (demo runs in minutes on 2 cores)."""
    seed: int = 0
    """First seed; the pipeline runs seeds seed .. seed + seeds - 1."""
    seeds: int = 3
    """Seeds of the whole pipeline (each with its own stage 1, baselines and MOPO cells)."""
    expert_steps: later(int, "stage 1's") = None
    """Steps of each baseline SAC agent (supervised and expert data)."""
    algo: ALGO = "mopo"
    """Offline learner of every stage-2 cell: mopo (the paper's), td3bc or iql."""
    executor: EXECUTOR = "local"
    """Where stage-2 populations run: local (in-process) or ray (one task per population)."""
    address: later(str, "start a local Ray") = None
    """Address of an existing Ray cluster."""
    population_cells: later(int, "every cell with the same settings") = None
    """Most stage-2 cells trained as one computation (1 trains the cells one by one)."""
    data_workers: later(int, "one per CPU core; 1 on a GPU") = None
    """The seeds' data jobs (stage 1, baselines, random data) run side by side in this many
    processes, one core each (1 runs them in this process, one after another)."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def disk_bytes(self):
        """The disk the pipeline's datasets will take (udg.cli.preflight refuses a disk
        without it)."""
        from udg.cli import commands
        from udg.experiments.pipeline import demo_experiment

        return commands.pipeline_disk_bytes(demo_experiment(self.env), self)

    def run(self) -> None:
        from udg.cli import commands
        from udg.experiments.pipeline import demo_experiment

        commands.pipeline(demo_experiment(self.env), self)


@dataclass(frozen=True)
class Experiment:
    """Reproduce a paper experiment: ant-angle (six directions; top-1/top-2/all, random,
    supervised ant-angle-0) or cheetah (jump and crawl; random, UDG top-1, supervised
    cheetah-run). Resumable cell by cell; writes a table beside the paper's numbers.

    Example: udg experiment cheetah --scale small --seeds 3"""

    name: tyro.conf.Positional[choice("ant-angle", "cheetah")]
    """The experiment."""
    out: later(Path, "runs/<name>-<scale>") = None
    """Run folder."""
    scale: SCALE = "small"
    """demo, small (hours on 2 cores) or paper."""
    seed: int = 0
    """First seed; the pipeline runs seeds seed .. seed + seeds - 1."""
    seeds: int = 3
    """Seeds of the whole pipeline (each with its own stage 1, baselines and MOPO cells)."""
    expert_steps: later(int, "stage 1's") = None
    """Steps of each baseline SAC agent (supervised and expert data)."""
    algo: ALGO = "mopo"
    """Offline learner of every stage-2 cell: mopo (the paper's), td3bc or iql."""
    executor: EXECUTOR = "local"
    """Where stage-2 populations run: local (in-process) or ray (one task per population)."""
    address: later(str, "start a local Ray") = None
    """Address of an existing Ray cluster."""
    population_cells: later(int, "every cell with the same settings") = None
    """Most stage-2 cells trained as one computation (1 trains the cells one by one)."""
    data_workers: later(int, "one per CPU core; 1 on a GPU") = None
    """The seeds' data jobs (stage 1, baselines, random data) run side by side in this many
    processes, one core each (1 runs them in this process, one after another)."""

    OUTPUTS: ClassVar = (("out", "folder"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def folder(self) -> Path:
        return self.out or Path("runs") / f"{self.name}-{self.scale}"

    def disk_bytes(self):
        """The disk the pipeline's datasets will take (udg.cli.preflight refuses a disk
        without it)."""
        import dataclasses

        from udg.cli import commands
        from udg.experiments.pipeline import get_experiment

        get_experiment(self.name)
        return commands.pipeline_disk_bytes(self.name, dataclasses.replace(self, out=self.folder()))

    def run(self) -> None:
        import dataclasses

        from udg.cli import commands
        from udg.experiments.pipeline import get_experiment

        if self.name.startswith("demo"):
            raise UdgError("use `udg demo` for the demo (`udg demo --env point` for demo-point)")
        get_experiment(self.name)
        commands.pipeline(self.name, dataclasses.replace(self, out=self.folder()))


@dataclass(frozen=True)
class Plot:
    """Draw the learning curves of `udg offline` runs (an interrupted one's so far) in one figure
    (x: the learner's updates) and print each run's last, best and mean-of-the-last-quarter
    evaluation return.

    Example: udg plot runs/offline-60 runs/offline-120 --out curves.png"""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Offline run folders (named in the legend by their shortest distinct trailing path)."""
    out: Path
    """PNG to write."""
    title: str = ""
    """Figure title."""
    json: bool = False
    """Print JSON instead of a table."""

    OUTPUTS: ClassVar = (("out", "file"),)
    """The output locations the preflight checks before any work (udg.cli.preflight)."""

    def run(self) -> None:
        from udg.cli import verbs

        verbs.plot_runs(self.runs, self.out, title=self.title, as_json=self.json)


@dataclass(frozen=True)
class Evaluate:
    """Run a finished offline run's saved policy deterministically in the real env and print each
    episode's steps, termination, final position, displacement and task return.

    Example: udg evaluate runs/offline-60 --task rooms-angle-90 --episodes 10"""

    run_dir: tyro.conf.Positional[Path]
    """The offline run folder."""
    task: later(str, "the run's own", "TASK") = None
    """Task to score the episodes under (any task of the run's env)."""
    episodes: int = 5
    """Number of episodes."""
    seed: later(int, "the run's, at its last evaluation") = None
    """Seed of the episodes' resets (with the run's --episodes and episode length, the run's
    seed gives the episodes its last_return averaged)."""
    episode_length: later(int, "the run's evaluation limit, else the env's") = None
    """Episode time limit."""
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
    median reach, mean heading and its consistency.

    Example: udg diversity runs/rooms-k8 --episodes 10"""

    run_dir: tyro.conf.Positional[Path]
    """The generate run folder."""
    episodes: int = 10
    """Last episodes per agent (and random episodes per random policy)."""
    columns: later(tuple[str, ...], "the run's features", "COLUMN [COLUMN ...]") = None
    """Info columns to measure (the first two give reach and heading), e.g. --columns x_position
    y_position for a run whose features were velocities."""
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
        check_empty_values(argv)  # tyro reads --out "" as the current folder
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
        preflight(command)  # numbers, output locations and disk, before any work
        command.run()
    except UdgError as err:
        if debug:
            raise
        print(f"udg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a write the preflight could not foresee: the disk filled up
        line = os_error_line(err)
        if debug or line is None:
            raise
        print(f"udg: error: {line}", file=sys.stderr)
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

"""The ``udg`` command line: one subcommand per user-facing job.

Parsing is tyro's (one frozen dataclass per subcommand, its fields the flags and its docstrings
the help). This module only turns arguments into calls of the library and results into tables
or JSON; every :class:`~udg.errors.UdgError` becomes one ``udg: error: ...`` line on stderr and
exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import json
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


Command = (
    Annotated[Tasks, tyro.conf.subcommand("tasks")]
    | Annotated[CollectRandom, tyro.conf.subcommand("collect-random")]
    | Annotated[Datasets, tyro.conf.subcommand("datasets")]
    | Annotated[Rank, tyro.conf.subcommand("rank")]
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``udg`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        command = tyro.cli(
            Command,
            args=argv,
            prog="udg",
            description="Unsupervised data generation for offline RL. Add --debug for tracebacks.",
            config=(tyro.conf.OmitArgPrefixes,),
        )
        command.run()
    except UdgError as err:
        if debug:
            raise
        print(f"udg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("udg: interrupted; rerun the same command to resume where supported", file=sys.stderr)
        return 130
    return 0


def json_dump(value) -> None:
    """Print ``value`` as indented JSON on stdout."""
    print(json.dumps(value, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())

"""What each ``udg`` subcommand does, between the parsed flags and the library.

Thin imperative glue: validate settings, call the data and env packages, print a rich table or
JSON on stdout. Kept apart from :mod:`udg.cli.main` so that parsing stays declarative.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from udg.errors import UdgError

stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def list_tasks(as_json: bool = False) -> None:
    from udg.envs import ENVS
    from udg.envs.tasks import TASK_FAMILIES, TASKS, example_tasks

    tasks = example_tasks()
    if as_json:
        _print_json(
            {
                "envs": {
                    n: {
                        "gym_id": s.gym_id,
                        "max_episode_steps": s.max_episode_steps,
                        "features": list(s.feature_columns),
                        "info_columns": list(s.info_columns),
                        "description": s.description,
                    }
                    for n, s in ENVS.items()
                },
                "families": list(TASK_FAMILIES),
                "named": list(TASKS),
                "tasks": [
                    {"name": t.name, "env": t.env, "formula": t.formula, "columns": list(t.columns)}
                    for t in tasks
                ],
            }
        )
        return
    envs = Table(title="environments")
    for col in ("env", "gym id", "episode", "diversity features", "description"):
        envs.add_column(col)
    for name, spec in ENVS.items():
        envs.add_row(
            name,
            spec.gym_id,
            str(spec.max_episode_steps),
            ", ".join(spec.feature_columns),
            spec.description,
        )
    stdout.print(envs)
    table = Table(title="tasks (families accept any value: " + ", ".join(TASK_FAMILIES) + ")")
    for col in ("task", "env", "reward"):
        table.add_column(col)
    for task in tasks:
        table.add_row(task.name, task.env, task.formula)
    stdout.print(table)


def collect_random(
    env: str, steps: int, seed: int, out: Path, name: str | None, max_episode_steps: int | None
) -> Path:
    from udg.cli.progress import progress_bar
    from udg.data.collect import collect_episodes, uniform_random_policy
    from udg.data.minari_io import (
        check_dataset_name,
        check_dataset_target,
        dataset_id_for,
        write_dataset,
    )
    from udg.envs import get_env_spec, make_env

    get_env_spec(env)
    if steps <= 0:
        raise UdgError(f"--steps must be positive, got {steps}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise UdgError(f"--max-episode-steps must be at least 1, got {max_episode_steps}")
    name = check_dataset_name(name or f"random-s{seed}")
    dataset_id = dataset_id_for(env, name)
    check_dataset_target(out, dataset_id)
    gym_env = make_env(env, max_episode_steps=max_episode_steps)
    policy = uniform_random_policy(gym_env.action_space, np.random.default_rng(seed))
    with progress_bar(f"collect-random {env}", total=steps) as bar:
        episodes = collect_episodes(
            gym_env, policy, steps, seed=seed, on_step=lambda n: n % 1000 == 0 and bar.update(n)
        )
        bar.update(steps, episodes=len(episodes))
    gym_env.close()
    path = write_dataset(
        episodes,
        out,
        dataset_id,
        env,
        max_episode_steps=max_episode_steps,
        algorithm="uniform-random",
        description=f"uniformly random actions on {env}, {steps} transitions, seed {seed}",
        udg_metadata={"kind": "random", "seed": seed, "steps": steps},
    )
    returns = [float(np.sum(e.rewards)) for e in episodes]
    stdout.print(
        f"wrote {path}  ({len(episodes)} episodes, {steps} transitions, "
        f"mean collected return {np.mean(returns):.2f})"
    )
    return path


def list_datasets(paths: Sequence[Path], as_json: bool = False) -> None:
    """List every dataset with its health; any damaged one is named, and the exit is 2 (a
    listing never passes over a dataset, nor shows a damaged one as whole)."""
    from udg.data.minari_io import dataset_env, dataset_health, find_datasets, read_metadata

    rows = []
    for path in find_datasets(paths, incomplete=True):
        problem = dataset_health(path)
        meta = {} if problem else read_metadata(path)
        rows.append(
            {
                "id": meta.get("dataset_id", path.name),
                "env": None if problem else dataset_env(meta, path),
                "episodes": meta.get("total_episodes"),
                "transitions": meta.get("total_steps"),
                "algorithm": meta.get("algorithm_name"),
                "status": f"damaged: {problem}" if problem else "ok",
                "path": str(path),
            }
        )
    columns = ("id", "env", "episodes", "transitions", "algorithm", "status", "path")
    if as_json:
        _print_json(rows)
    else:
        table = Table()
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
        stdout.print(table)
    damaged = [r["path"] for r in rows if r["status"] != "ok"]
    if damaged:
        raise UdgError(f"{len(damaged)} of {len(rows)} datasets are damaged: {', '.join(damaged)}")


def show_dataset(path: Path, as_json: bool = False) -> None:
    from udg.data.minari_io import load_dataset, read_metadata

    meta = read_metadata(path)
    dataset = load_dataset(path)
    returns = dataset.episode_returns()
    summary = {
        "id": dataset.name,
        "env": dataset.env,
        "path": str(path),
        "episodes": dataset.num_episodes,
        "transitions": dataset.num_transitions,
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "info_columns": sorted(dataset.infos),
        "terminations": int(dataset.terminations.sum()),
        "collected_return_mean": float(returns.mean()),
        "collected_return_std": float(returns.std()),
        "algorithm": meta.get("algorithm_name"),
        "description": meta.get("description"),
        "udg": meta.get("udg", {}),
    }
    if as_json:
        _print_json(summary)
        return
    for key, value in summary.items():
        stdout.print(f"[bold]{key:>22}[/bold]  {value}")


def rank_datasets(paths: Sequence[Path], task_name: str, as_json: bool = False) -> None:
    from udg.data.minari_io import load_datasets
    from udg.data.relabel import rank
    from udg.envs import get_task

    task = get_task(task_name)
    if not paths:
        raise UdgError("give at least one dataset folder to rank")
    datasets = load_datasets(paths)
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the datasets are of env {datasets[0].env}"
        )
    ranking = rank(datasets, task)
    if as_json:
        _print_json({"task": task.name, "ranking": [r.__dict__ for r in ranking]})
        return
    print_ranking(ranking, task)


def _finite(flag: str, value: float | None) -> float | None:
    if value is not None and not np.isfinite(value):
        raise UdgError(f"{flag} must be a finite number, got {value}")
    return value


def _reference_scores(path: Path, task: str) -> tuple[float, float]:
    """(random, expert) mean returns of ``task`` in an experiment's results.json."""
    try:
        reference = json.loads(Path(path).read_text())["reference"][task]
        scores = float(reference["random"]["mean"]), float(reference["expert"]["mean"])
    except OSError as err:
        raise UdgError(f"cannot read --reference {path}: {err.strerror or err}") from None
    except json.JSONDecodeError:
        raise UdgError(f"--reference {path} is not JSON (an experiment's results.json)") from None
    except (KeyError, TypeError, ValueError):
        raise UdgError(
            f"--reference {path} has no random and expert rows for task {task} "
            "(an experiment's results.json of that task)"
        ) from None
    if not all(np.isfinite(scores)):
        raise UdgError(f"--reference {path} holds no finite reference scores for task {task}")
    return scores


def export_datasets(args) -> None:
    """``udg export``: validate everything, then relabel, select and write."""
    import dataclasses

    from udg.data.export import export_selection
    from udg.data.minari_io import check_dataset_name
    from udg.data.relabel import parse_selection
    from udg.envs import get_task
    from udg.evaluation.reference import random_policy_returns
    from udg.files import check_output_folder
    from udg.provenance import default_authorship

    task = get_task(args.task)
    parse_selection(args.select)
    if not args.datasets:
        raise UdgError("give at least one dataset folder to export")
    if args.name is not None:
        check_dataset_name(args.name, "--name")
    check_output_folder(args.out, "--out")
    ref_min = _finite("--ref-min-score", args.ref_min_score)
    ref_max = _finite("--ref-max-score", args.ref_max_score)
    if args.reference is not None:
        measured_min, measured_max = _reference_scores(args.reference, task.name)
        ref_min = measured_min if ref_min is None else ref_min
        ref_max = measured_max if ref_max is None else ref_max
    if ref_min is not None and ref_max is None:
        raise UdgError("--ref-min-score needs --ref-max-score (Minari records both or neither)")
    if ref_max is not None and ref_min is None:
        ref_min = float(random_policy_returns(task, episodes=10, seed=0).mean())
    authorship = dataclasses.replace(
        default_authorship(),
        **{
            k: v
            for k, v in (
                ("author", args.author),
                ("author_email", args.author_email),
                ("code_permalink", args.code_permalink),
            )
            if v is not None
        },
    )
    done = export_selection(
        args.datasets,
        task,
        args.select,
        args.out,
        name=args.name,
        authorship=authorship,
        ref_scores=None if ref_max is None else (ref_min, ref_max),
        d3rlpy=args.d3rlpy,
    )
    if args.json:
        _print_json(
            {
                "path": str(done.path),
                "dataset_id": done.dataset_id,
                "task": task.name,
                "selection": args.select,
                "selected": done.selected,
                "episodes": done.num_episodes,
                "transitions": done.num_transitions,
                "mean_return": done.mean_return,
                "ref_scores": None if ref_max is None else [ref_min, ref_max],
            }
        )
        return
    stdout.print(
        f"wrote {done.path}  ({args.select} of {len(done.ranking)} datasets: "
        f"{len(done.selected)} selected, {done.num_episodes} episodes, "
        f"{done.num_transitions} transitions, mean {task.name} return {done.mean_return:.2f})"
    )
    stdout.print(
        f"load it with MINARI_DATASETS_PATH={Path(args.out).resolve()} and "
        f"minari.load_dataset({done.dataset_id!r})"
    )


def temperature_settings(sac_config, text: str | None):
    """``sac_config`` with ``--temperature`` applied: ``auto`` or a positive number."""
    import dataclasses

    if text is None:
        return None
    if text.strip().lower() == "auto":
        return dataclasses.replace(sac_config, autotune_temperature=True)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UdgError(f"--temperature must be 'auto' or a positive number, got {text!r}")
    return dataclasses.replace(sac_config, autotune_temperature=False, init_temperature=value)


def generate_config(args):
    """The validated :class:`GenerateConfig` of ``udg generate``'s flags: the preset of
    ``--env``/``--scale``, then each flag that was given, field by field."""
    import dataclasses

    from udg.experiments.generate_config import generate_preset

    config = generate_preset(args.env, args.scale)
    agents = args.agents
    if agents is None and args.agent_tasks:
        agents = len(args.agent_tasks)
    overrides = {
        "num_agents": agents,
        "steps": args.steps,
        "task": args.task,
        "agent_tasks": args.agent_tasks,
        "w_div": args.w_div,
        "seed": args.seed,
        "episode_length": args.episode_length,
        "warmup_steps": args.warmup_steps,
        "features": args.features,
        "observe_features": args.observe_features,
        "final_rollouts": args.final_rollouts,
    }
    w_task = args.w_task
    if w_task is None and (args.task or args.agent_tasks) and args.w_div == 0:
        w_task = 1.0
    overrides["w_task"] = w_task
    overrides["sac"] = temperature_settings(config.sac, args.temperature)
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.agent_tasks and args.task is None:
        # One task per agent replaces the preset's mixed-in task (Ant's locomotion prior).
        config = dataclasses.replace(config, task=None)
    diversity = {"reward_scale": args.reward_scale, "episode_scaling": args.episode_scaling}
    diversity = {k: v for k, v in diversity.items() if v is not None}
    config = dataclasses.replace(
        config, diversity=dataclasses.replace(config.diversity, **diversity)
    )
    if config.num_agents == 1 and args.w_div is None:
        config = dataclasses.replace(config, w_div=0.0)
    return config.validated()


def generate_disk_bytes(args) -> tuple[Path, int, str] | None:
    """(folder, bytes, what) of the datasets ``udg generate`` will write, for the preflight's
    disk check; none for a run being resumed (its files are there already)."""
    from udg.data.minari_io import dataset_bytes
    from udg.experiments.runs import MANIFEST

    config = generate_config(args)
    if (Path(args.out) / MANIFEST).exists():
        return None
    steps = (config.rounds + config.final_rollouts) * config.episode_length
    need = config.num_agents * dataset_bytes(config.env, steps, config.episode_length)
    return args.out, need, f"{config.num_agents} datasets of {steps} transitions"


def generate(args) -> None:
    """``udg generate``: preset, overrides, run with a progress bar, summary table."""
    from udg.cli.progress import progress_bar
    from udg.experiments.generate import plot_run_coverage, round_summary, run_generate

    config = generate_config(args)
    total = config.rounds * config.episode_length
    k = config.num_agents
    with progress_bar(f"generate {config.env} K={k}", total=total, unit="steps") as bar:

        def on_round(round_done: int, row: dict) -> None:
            bar.update(min(round_done * config.episode_length, total), **round_summary(config, row))

        generator, paths = run_generate(config, args.out, on_round)
    if config.feature_columns and len(config.feature_columns) >= 2:
        plot_run_coverage(args.out)
    from udg.data.minari_io import read_metadata

    table = Table(title=f"generate {config.env}: {len(paths)} datasets in {args.out}")
    for col in ("dataset", "episodes", "transitions", "mean return, last 10 episodes"):
        table.add_column(col)
    rows = generator.metrics[-10:]
    for i, path in enumerate(paths):
        meta = read_metadata(path)
        last = np.mean([r[f"return_{i}"] for r in rows]) if rows else float("nan")
        table.add_row(
            str(path), str(meta["total_episodes"]), str(meta["total_steps"]), f"{last:.2f}"
        )
    stdout.print(table)
    stdout.print(f"coverage figure: {Path(args.out) / 'coverage.png'}")


def print_ranking(ranking, task) -> None:
    table = Table(title=f"ranked for {task.name}: {task.formula}")
    # Datasets from different roots may share an id; then only the folder tells them apart.
    names = [r.name for r in ranking]
    show_paths = len(set(names)) < len(names)
    if show_paths:  # each folder below the part all of them share: short, and what differs
        common = os.path.commonpath([str(r.path) for r in ranking])
        folders = [os.path.relpath(str(r.path), common) for r in ranking]
        table.caption = f"folders below {common}"
    cols = ("rank", "dataset", "mean return", "reward/step", "episodes", "transitions")
    for col in cols + (("folder",) if show_paths else ()):
        table.add_column(col, justify="left" if col in ("dataset", "folder") else "right")
    for i, r in enumerate(ranking):
        table.add_row(
            str(r.rank),
            r.name,
            f"{r.score:.2f}",
            f"{r.reward_per_step:.3f}",
            str(r.num_episodes),
            str(r.num_transitions),
            *((folders[i],) if show_paths else ()),
        )
    stdout.print(table)


MOPO_FLAGS = (
    "rollout_length",
    "penalty_coef",
    "penalty",
    "reward",
    "model",
    "model_epochs",
    "model_batches",
)
"""``udg offline``'s flags that only MOPO reads (its model and rollouts)."""


def check_algo(algo: str, args) -> None:
    """Refuse an unknown learner, and MOPO's flags given with a model-free one."""
    from udg.cli.preflight import flag
    from udg.errors import unknown_name
    from udg.offline import ALGO_LABELS, ALGOS

    if algo not in ALGOS:
        raise unknown_name("algo", algo, ALGOS)
    given = [flag(name) for name in MOPO_FLAGS if getattr(args, name, None) is not None]
    if algo != "mopo" and given:
        verb = "is" if len(given) == 1 else "are"
        raise UdgError(
            f"{', '.join(given)} {verb} MOPO's; --algo {algo} ({ALGO_LABELS[algo]}) fits no "
            "dynamics model and makes no rollouts"
        )


def _model_budget(args) -> dict:
    """The dynamics model's budget that ``udg offline``'s flags change, checked."""
    dynamics = {}
    if args.model_epochs is not None:
        if args.model_epochs < 1:
            raise UdgError(f"--model-epochs must be >= 1, got {args.model_epochs}")
        dynamics["max_epochs"] = args.model_epochs
    if args.model_batches is not None:
        if args.model_batches < 0:
            raise UdgError(
                f"--model-batches must be >= 0 (0: full passes), got {args.model_batches}"
            )
        dynamics["max_batches_per_epoch"] = args.model_batches or None
    return dynamics


def _mopo_settings(args, preset):
    """MOPO's config of ``udg offline``'s flags: the preset, then each flag given."""
    import dataclasses

    overrides = {
        "epochs": args.epochs,
        "rollout_length": args.rollout_length,
        "penalty_coef": args.penalty_coef,
        "penalty": args.penalty,
        "reward": args.reward,
        "eval_episodes": args.eval_episodes,
        "observation_dims": args.observation_dims,
    }
    mopo = dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    budget = _model_budget(args)
    return dataclasses.replace(mopo, dynamics=dataclasses.replace(mopo.dynamics, **budget))


def _model_free_settings(args, preset):
    """A model-free learner's config of ``udg offline``'s flags: the preset, then each flag
    given."""
    import dataclasses

    overrides = {
        "epochs": args.epochs,
        "eval_episodes": args.eval_episodes,
        "observation_dims": args.observation_dims,
    }
    return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def offline(args) -> None:
    """``udg offline``: preset, overrides, progress bars, the result."""
    from udg.cli.progress import progress_bar
    from udg.data.minari_io import load_datasets
    from udg.envs import get_task
    from udg.experiments.offline import OfflineConfig, run_offline
    from udg.experiments.presets import learner_preset
    from udg.limits import check_episodes
    from udg.offline import ALGO_LABELS

    check_algo(args.algo, args)  # before the data is read
    mopo_run = args.algo == "mopo"
    _model_budget(args)  # checked before the data is read
    task = get_task(args.task)
    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise UdgError(f"--eval-episodes must be at least 1, got {args.eval_episodes}")
    if args.eval_episode_length is not None and args.eval_episode_length < 1:
        raise UdgError(f"--eval-episode-length must be at least 1, got {args.eval_episode_length}")
    preset = learner_preset(task.env, args.scale, args.algo)
    check_episodes(
        task.env,
        args.eval_episodes or preset.eval_episodes,
        args.eval_episode_length,
        f"an evaluation of {args.eval_episodes or preset.eval_episodes} episodes at once",
        "use fewer --eval-episodes or a shorter --eval-episode-length",
    )
    datasets = load_datasets(args.data)
    if datasets[0].env != task.env:
        raise UdgError(
            f"task {task.name} is for env {task.env}, but the data is of env {datasets[0].env}"
        )
    try:
        settings = (_mopo_settings if mopo_run else _model_free_settings)(args, preset)
    except ValueError as err:
        raise UdgError(str(err)) from None
    config = OfflineConfig(
        task=task.name,
        select=args.select,
        seed=args.seed,
        eval_episode_length=args.eval_episode_length,
        **({"mopo": settings} if mopo_run else {"learner": settings}),
    )
    from udg.cli.preflight import check_free_space
    from udg.experiments.offline import run_disk_bytes
    from udg.experiments.runs import MANIFEST

    if not (Path(args.out) / MANIFEST).exists():  # a resumed run has its files already
        check_free_space(args.out, run_disk_bytes(config), "the run's policy and checkpoint")
    label = ALGO_LABELS[args.algo]
    bars = {}

    def on_model_epoch(epoch: int, losses) -> None:
        bars["model"].update(epoch, holdout_mse=float(np.mean(losses)))

    model_bar = (
        progress_bar("dynamics", total=settings.dynamics.max_epochs or 0, unit="epochs")
        if mopo_run
        else _no_bar()  # a model-free learner fits no model
    )
    with model_bar as bar:
        bars["model"] = bar
        with progress_bar(label, total=settings.epochs, unit="epochs") as policy_bar:
            last = {}

            def on_epoch(epoch: int, row: dict) -> None:
                last.update({k: row[k] for k in ("eval_return", "q", "uncertainty") if k in row})
                policy_bar.update(epoch, **{k: float(v) for k, v in last.items()})

            result = run_offline(
                config,
                args.data,
                args.out,
                datasets=datasets,
                on_ranking=lambda r: None if args.json else print_ranking(r, task),
                on_model_epoch=on_model_epoch,
                on_epoch=on_epoch,
                model_path=args.model,
            )
    if args.json:
        _print_json(result)
        return
    stdout.print(
        f"{task.name}, {args.select} data ({result['selected']}, "
        f"{result['selected_transitions']} transitions, data mean return "
        f"{result['data_mean_return']:.2f}): {label} last {result['last_return']:.2f} "
        f"+- {result['last_std']:.2f}, best {result['best_return']:.2f} "
        f"(epoch {result['best_epoch']}); {result['wall_seconds']:.0f} s; {args.out}/result.json"
    )
    if mopo_run:
        _print_model_summary(result["dynamics"])


def _no_bar():
    import contextlib
    from types import SimpleNamespace

    return contextlib.nullcontext(SimpleNamespace(update=lambda completed, **metrics: None))


def _print_model_summary(model: dict) -> None:
    """What ``udg offline`` says of MOPO's dynamics fit: how it ended, and crossed bounds."""
    if "epochs" in model:  # absent for a reused model (--model) saved without its metrics
        stopped = (
            "early-stopped"
            if model.get("early_stopped", True)
            else "stopped at its epoch cap, holdout MSE still improving: a longer fit "
            "(--model-epochs, --model-batches) gives a tighter penalty"
        )
        stdout.print(
            f"dynamics model: {model['epochs']} epochs ({stopped}), elites' holdout MSE "
            f"{model['elite_holdout_mse']:.4f} (normalised)"
        )
    crossed = model.get("logvar_bounds_crossed", 0.0)
    if crossed > 0:
        stdout.print(
            f"warning: {crossed:.0%} of the dynamics elites' log-variance bounds crossed; there "
            "the predicted variance, and so MOPO's penalty, is a constant"
        )


def pipeline_config(experiment: str, args):
    """The :class:`PipelineConfig` of ``udg demo`` / ``udg experiment``'s flags."""
    from udg.experiments.pipeline import PipelineConfig

    return PipelineConfig(
        experiment=experiment,
        scale=args.scale,
        seed=args.seed,
        seeds=args.seeds,
        expert_steps=args.expert_steps,
        algo=args.algo,
    )


def pipeline_disk_bytes(experiment: str, args) -> tuple[Path, int, str]:
    """(folder, bytes, what) of the datasets a pipeline writes, for the preflight's disk
    check (the datasets already there count as written)."""
    from udg.experiments.pipeline import pipeline_disk_bytes as need

    config = pipeline_config(experiment, args)
    done = sum(p.stat().st_size for p in Path(args.out).rglob("*.hdf5") if p.is_file())
    what = f"{config.seeds} seed(s) of {experiment}'s datasets"
    return args.out, max(need(config) - done, 0), what


def pipeline(experiment: str, args) -> None:
    """``udg demo`` / ``udg experiment``: run, then print the headline table and findings."""
    from udg.cli.progress import console, progress_bar
    from udg.experiments.pipeline import run_pipeline
    from udg.experiments.report import columns, findings, headline_rows, learner_label, paper_rows

    config = pipeline_config(experiment, args)
    summary = run_pipeline(
        config,
        args.out,
        executor=args.executor,
        address=args.address,
        max_cells=args.population_cells,
        data_workers=args.data_workers,
        # Stage lines go where the bars are (stderr), printed above a live bar, not through it;
        # standard output keeps the tables.
        log=lambda m: console.print(f"[dim]{m}[/dim]"),
        progress=progress_bar,
    )
    header = ["task"] + [label for _, label in columns(summary)]
    for title, rows in [
        (f"{learner_label(summary)} return (last evaluation)", headline_rows(summary)),
        ("the paper's numbers (MOPO)", paper_rows(summary) if summary["paper"] else []),
    ]:
        if not rows:
            continue
        table = Table(title=title)
        for col in header:
            table.add_column(col, justify="left" if col == "task" else "right")
        for row in rows:
            table.add_row(*row)
        stdout.print(table)
    for line in findings(summary):
        stdout.print(f"- {line}")
    stdout.print(
        f"report: {Path(args.out) / 'report.html'} and report.md ({summary['wall_seconds']:.0f} s)"
    )

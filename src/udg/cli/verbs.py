"""The verbs over finished runs: ``udg plot``, ``udg evaluate`` and ``udg diversity``.

Each reads run folders through :mod:`udg.experiments.runs`, checks every input before any work
(a wrong folder, task or count is one :class:`UdgError`), then prints a table or JSON. They
replace the scripts that re-implemented run loading beside the CLI.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from udg.cli.commands import _print_json, stdout
from udg.errors import UdgError
from udg.experiments.runs import RunFolder, load_run
from udg.limits import check_episodes


def _finished(path: Path, kind: str) -> RunFolder:
    run = load_run(path)
    if run.kind != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise UdgError(f"{path} holds a {run.kind} run, not {article} {kind} run")
    if run.status != "complete":
        raise UdgError(f"{path} holds a {run.status} {kind} run, not a finished one; rerun it")
    return run


def _writable_png(out: Path) -> None:
    if out.is_dir():
        raise UdgError(f"--out {out} is a folder; name a .png file")
    if out.suffix.lower() != ".png":
        raise UdgError(f"--out {out}: the figure is written as PNG; name it *.png")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UdgError(f"--out {out}: cannot write under {parent}")


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each folder's shortest trailing path that tells it from the others (``seed0`` or, when
    several runs end in ``seed0``, ``udg-top2/seed0``)."""
    parts = [Path(p).resolve().parts for p in paths]
    if len(set(parts)) < len(parts):
        raise UdgError("a run folder is given twice")
    for k in itertools.count(1):  # ends by the full paths at the latest: they differ
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise AssertionError


def _curve(run: RunFolder) -> dict[str, np.ndarray]:
    rows = [r for r in run.learning_curve() if np.isfinite(r.get("eval_return", np.nan))]
    if not rows:
        raise UdgError(f"{run.path}/learning_curve.csv has no evaluation rows")
    return {
        "epoch": np.array([int(r["epoch"]) for r in rows]),  # [evaluations]
        "return": np.array([float(r["eval_return"]) for r in rows]),
        "std": np.array([float(r.get("eval_std", np.nan)) for r in rows]),
    }


def _schedule_field(run: RunFolder, name: str) -> int:
    """An integer of the run's learner schedule (MOPO's or the model-free learner's)."""
    try:
        return int(run.schedule[name])
    except (KeyError, TypeError, ValueError):
        raise UdgError(f"{run.path}/manifest.json names no {name} of its {run.algo} run") from None


def _greedy_actions(run: RunFolder):
    """The jitted deterministic policy of the run's learner: ``(policy, observations [n, o])
    -> actions [n, a]``."""
    if run.algo == "mopo":
        from udg.agents import sac

        return sac.jit_greedy_actions_single
    from udg.offline import learners

    return learners.get_learner(run.algo).functions.jit_act


def plot_runs(paths: Sequence[Path], out: Path, title: str = "", as_json: bool = False) -> dict:
    """Draw the learning curves of offline runs (MOPO's, TD3+BC's or IQL's) in one figure (x:
    updates) and print each run's last, best and mean-of-the-last-quarter evaluation return."""
    from udg.experiments.plots import plot_learning_curves

    if not paths:
        raise UdgError("name at least one offline run folder")
    runs = [load_run(p) for p in paths]
    for run in runs:
        if run.kind != "offline":
            raise UdgError(f"{run.path} holds a {run.kind} run, not an offline run")
    names = _labels(paths)
    _writable_png(Path(out))
    curves = dict(zip(names, (_curve(r) for r in runs), strict=True))
    epochs = next(iter(curves.values()))["epoch"]
    if any(not np.array_equal(c["epoch"], epochs) for c in curves.values()):
        raise UdgError("the runs were evaluated at different epochs; plot them apart")
    updates = {_schedule_field(r, "steps_per_epoch") for r in runs}
    if len(updates) > 1:
        raise UdgError(f"the runs' epochs differ in length: {sorted(updates)} updates")
    plot_learning_curves(
        epochs * updates.pop(),
        {name: c["return"] for name, c in curves.items()},
        "evaluation return (band: std over episodes)",
        Path(out),
        title=title,
        spreads={n: c["std"] for n, c in curves.items() if np.isfinite(c["std"]).all()},
    )
    quarter = max(len(epochs) // 4, 1)
    rows = []
    for name, run, c in zip(names, runs, curves.values(), strict=True):
        best = int(np.argmax(c["return"]))
        rows.append(
            {
                "run": name,
                "path": str(run.path),
                "last": float(c["return"][-1]),
                "best": float(c["return"][best]),
                "best_epoch": int(c["epoch"][best]),
                "mean_last_quarter": float(np.mean(c["return"][-quarter:])),
            }
        )
    summary = {"figure": str(out), "runs": rows}
    if as_json:
        _print_json(summary)
        return summary
    table = Table(title="evaluation return")
    for col in ("run", "last", "best (epoch)", "mean of the last quarter"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run"], f"{r['last']:.1f}", f"{r['best']:.1f} ({r['best_epoch']})",
            f"{r['mean_last_quarter']:.1f}",
        )  # fmt: skip
    stdout.print(table)
    stdout.print(f"figure: {out}")
    return summary


def evaluate_run(
    path: Path,
    task: str | None,
    episodes: int,
    seed: int | None = None,
    episode_length: int | None = None,
    as_json: bool = False,
) -> dict:
    """Run an offline run's saved policy (MOPO's, TD3+BC's or IQL's) deterministically in the
    real env; print each episode's steps, termination, displacement of the first two feature
    columns and return."""
    import jax.numpy as jnp

    from udg.data.collect import run_episodes
    from udg.envs import get_env_spec, get_task, make_env
    from udg.seeds import int_seeds

    run = _finished(Path(path), "offline")
    try:
        own = get_task(run.config["task"])
        own_seed = int(run.config["seed"])
    except (KeyError, TypeError, ValueError):
        raise UdgError(f"{path}/manifest.json names no task or seed") from None
    epochs = _schedule_field(run, "epochs")
    spec = get_task(task) if task is not None else own
    if spec.env != own.env:
        raise UdgError(f"task {spec.name} is for {spec.env}; the run's policy acts in {own.env}")
    if episodes < 1:
        raise UdgError(f"--episodes must be at least 1, got {episodes}")
    if seed is not None and seed < 0:
        raise UdgError(f"--seed must be non-negative, got {seed}")
    if episode_length is not None and episode_length < 1:
        raise UdgError(f"--episode-length must be at least 1, got {episode_length}")
    length = episode_length or run.config.get("eval_episode_length")
    check_episodes(
        spec.env,
        episodes,
        length,
        f"--episodes {episodes} played at once",
        "use fewer --episodes or a shorter --episode-length",
    )
    policy, greedy = run.load_policy(), _greedy_actions(run)
    dims = int(run.result["observation_dims"])
    # The default replays the run's last evaluation: its seed's stream at its last epoch.
    reset_seeds = (
        int_seeds(own_seed, "evaluation", episodes, epochs)
        if seed is None
        else int_seeds(seed, "evaluation", episodes)
    )
    envs = [make_env(spec.env, max_episode_steps=length) for _ in range(episodes)]
    try:
        played = run_episodes(
            envs,
            lambda obs, t: np.asarray(greedy(policy, jnp.asarray(obs[:, :dims], jnp.float32))),
            reset_seeds,
        )
    finally:
        for env in envs:
            env.close()
    columns = list(get_env_spec(spec.env).feature_columns)[:2]
    rows = []
    for i, e in enumerate(played):
        start = np.array([e.infos[c][0] for c in columns])
        final = np.array([e.infos[c][-1] for c in columns])
        rows.append(
            {
                "episode": i,
                "steps": len(e),
                "terminated": bool(e.terminations[-1]),
                "final_position": final.tolist(),
                "displacement": float(np.linalg.norm(final - start)),
                "return": float(np.sum(spec.reward(e.columns()))),
            }
        )
    returns = np.array([r["return"] for r in rows])  # [episodes]
    summary = {
        "run": str(run.path),
        "task": spec.name,
        "position_columns": columns,
        "episodes": rows,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
    }
    if as_json:
        _print_json(summary)
        return summary
    table = Table(title=f"{run.path}: {spec.name}, deterministic policy")
    for col in (
        "episode",
        "steps",
        "terminated",
        f"final ({', '.join(columns)})",
        "reach",
        "return",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["episode"]), str(r["steps"]), str(r["terminated"]),
            ", ".join(f"{v:.2f}" for v in r["final_position"]), f"{r['displacement']:.2f}",
            f"{r['return']:.2f}",
        )  # fmt: skip
    stdout.print(table)
    stdout.print(f"mean return {summary['mean_return']:.2f} ± {summary['std_return']:.2f}")
    return summary


def _last_episodes(data, episodes: int) -> list[np.ndarray]:
    """Per episode of the last ``episodes`` of ``data``, the slice bounds [start, end)."""
    first = max(0, data.num_episodes - episodes)
    starts = data.episode_starts[first:]
    return list(itertools.pairwise(starts))


def _policy_measures(data, columns: Sequence[str], episodes: int) -> dict:
    """The feature states of a policy's last episodes and how far and which way they went."""
    bounds = _last_episodes(data, episodes)
    feats = np.stack([data.infos[c] for c in columns], axis=-1)  # [N, f]
    states = feats[bounds[0][0] : bounds[-1][1]]  # [n, f]
    moves = np.stack([feats[end - 1, :2] - feats[start, :2] for start, end in bounds])  # [e, 2]
    unit = moves / np.maximum(np.linalg.norm(moves, axis=1, keepdims=True), 1e-9)
    mean = unit.mean(axis=0)
    return {
        "states": states,
        "median_reach": float(np.median(np.linalg.norm(moves, axis=1))),
        "heading_deg": float(np.degrees(np.arctan2(mean[1], mean[0])) % 360),
        "consistency": float(np.linalg.norm(mean)),
    }


def diversity_run(
    path: Path,
    episodes: int = 10,
    columns: Sequence[str] | None = None,
    as_json: bool = False,
) -> dict:
    """Pairwise exact W1 between a generate run's agents (the feature states of each agent's
    last episodes) against K uniformly random policies, with each policy's reach and heading."""
    from udg.data.collect import random_episodes
    from udg.data.dataset import dataset_from_episodes
    from udg.data.minari_io import load_dataset
    from udg.diversity.exact import pairwise_exact_w1
    from udg.envs import get_env_spec

    run = _finished(Path(path), "generate")
    if episodes < 1:
        raise UdgError(f"--episodes must be at least 1, got {episodes}")
    try:
        env, horizon = run.config["env"], int(run.config["episode_length"])
    except (KeyError, TypeError, ValueError):
        raise UdgError(f"{path}/manifest.json names no env or episode_length") from None
    spec = get_env_spec(env)
    columns = list(columns or run.config.get("features") or spec.feature_columns)
    if len(columns) < 2:
        raise UdgError(f"--columns needs at least two info columns, got {columns}")
    unknown = [c for c in columns if c not in spec.info_columns]
    if unknown:
        raise UdgError(f"{env} has no info columns {unknown}; known: {list(spec.info_columns)}")
    datasets = [load_dataset(p) for p in run.dataset_paths()]
    if len(datasets) < 2:
        raise UdgError(f"{path} holds {len(datasets)} dataset; the W1 table needs two agents")
    fewest = min(d.num_episodes for d in datasets)
    if episodes > fewest:
        raise UdgError(
            f"--episodes {episodes}: the run's agents have {fewest} episodes each (at the "
            "fewest); give at most that many"
        )
    agents = [_policy_measures(d, columns, episodes) for d in datasets]
    randoms = [
        _policy_measures(
            dataset_from_episodes(
                "random", env, random_episodes(env, episodes * horizon, i, horizon)
            ),
            columns,
            episodes,
        )
        for i in range(len(datasets))
    ]
    groups = {}
    for name, measures in (("agents", agents), ("random", randoms)):
        w = pairwise_exact_w1([m["states"] for m in measures], max_points=2000)  # [K, K]
        off = w[~np.eye(len(w), dtype=bool)]
        groups[name] = {
            "min_w1": float(off.min()),
            "mean_w1": float(off.mean()),
            "w1": w.tolist(),
            "policies": [{k: v for k, v in m.items() if k != "states"} for m in measures],
        }
    ratio = groups["agents"]["min_w1"] / max(groups["random"]["min_w1"], 1e-12)
    summary = {
        "run": str(run.path),
        "env": env,
        "num_agents": len(datasets),
        "episodes": episodes,
        "columns": columns,
        "min_ratio": ratio,
        **groups,
    }
    if as_json:
        _print_json(summary)
        return summary
    stdout.print(
        f"{env}, K={len(datasets)}, last {episodes} episodes per policy, features {columns}"
    )
    table = Table(title="pairwise exact W1")
    for col in ("policies", "min", "mean"):
        table.add_column(col)
    for name, g in groups.items():
        table.add_row(name, f"{g['min_w1']:.3f}", f"{g['mean_w1']:.3f}")
    stdout.print(table)
    stdout.print(f"ratio of minima (agents / random): {ratio:.1f}")
    table = Table(title="where each policy's episodes went")
    for col in ("policies", "policy", "median reach", "heading (deg)", "consistency"):
        table.add_column(col)
    for name, g in groups.items():
        for i, p in enumerate(g["policies"]):
            table.add_row(
                name, str(i), f"{p['median_reach']:.2f}", f"{p['heading_deg']:.0f}",
                f"{p['consistency']:.2f}",
            )  # fmt: skip
    stdout.print(table)
    return summary

"""MOPO on one SAC agent's replay data, against that agent and against the data.

Takes agent ``--agent`` of a finished ``udg generate`` run (e.g. a supervised SAC agent),
evaluates its final policy (deterministic) on ``--task``, then runs ``udg offline`` on the
agent's dataset (all of it) for several seeds, and prints MOPO's last and best returns beside
the agent's return and the data's mean episode return.

    .venv/bin/python scripts/measure_offline.py RUN --task T [--agent 0] [--seeds 3]
        [--scale demo|small] [--epochs N] [--first-seed S] [--out DIR] [--executor local|ray]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.cli.progress import progress_bar
from udg.data.minari_io import dataset_id_for
from udg.envs import get_task
from udg.errors import UdgError
from udg.evaluation.evaluate import evaluate
from udg.experiments.generate_config import GenerateConfig
from udg.experiments.grid import Cell, run_cells_with_bar
from udg.experiments.offline import OfflineConfig
from udg.experiments.offline_config import mopo_preset
from udg.experiments.runs import load_run
from udg.files import atomic_write_json


def load_generate_config(run: Path) -> GenerateConfig:
    from udg.agents.sac import SACConfig
    from udg.diversity.wasserstein import DiversityConfig

    raw = json.loads((run / "manifest.json").read_text())["config"]
    raw["sac"] = SACConfig(**raw["sac"])
    raw["diversity"] = DiversityConfig(**raw["diversity"])
    for key in ("features", "agent_tasks"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    return GenerateConfig(**raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--task", required=True)
    parser.add_argument("--agent", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="MOPO epochs (default: the scale's)")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--executor", default="local")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        task = get_task(args.task)
        config = load_generate_config(args.run)
        if not 0 <= args.agent < config.num_agents:
            raise UdgError(f"--agent {args.agent}: the run has agents 0..{config.num_agents - 1}")
        mopo = mopo_preset(config.env, args.scale)
        agents = load_run(args.run).load_agents()
    except (UdgError, OSError, ValueError, KeyError, TypeError) as err:
        sys.exit(f"measure_offline: error: {args.run}: {err}")
    agent = jax.tree.map(lambda x: x[args.agent], agents)
    returns = evaluate(
        task,
        lambda o: np.asarray(sac.jit_greedy_actions_single(agent, jnp.asarray(o))),
        args.episodes,
        seed=123,
    )
    data = args.run / "datasets" / dataset_id_for(config.env, f"agent-{args.agent}")
    out = args.out or args.run.parent / f"{args.run.name}-mopo-{task.name}"
    if args.epochs is not None:
        mopo = dataclasses.replace(mopo, epochs=args.epochs)
    cells = [
        Cell(
            data="udg",
            config=OfflineConfig(task=task.name, select="all", seed=s, mopo=mopo),
            datasets=(str(data),),
            out=str(out / f"seed{s}"),
        )
        for s in range(args.first_seed, args.first_seed + args.seeds)
    ]
    with progress_bar("MOPO cells", len(cells) * mopo.epochs, "epochs") as bar:
        results = run_cells_with_bar(
            cells,
            bar,
            mopo.epochs,
            log=lambda line: print(line, flush=True),
            work=out / "work",
            executor=args.executor,
        )
    last = np.array([r["last_return"] for r in results.values()])
    best = np.array([r["best_return"] for r in results.values()])
    data_mean = next(iter(results.values()))["data_mean_return"]
    summary = {
        "task": task.name,
        "run": str(args.run),
        "agent": args.agent,
        "scale": args.scale,
        "agent_return_mean": float(returns.mean()),
        "agent_return_std": float(returns.std()),
        "data_mean_return": data_mean,
        "mopo_last": last.tolist(),
        "mopo_best": best.tolist(),
    }
    print(json.dumps(summary, indent=2))
    print(
        f"MOPO last {last.mean():.1f} ± {last.std():.1f} (best {best.mean():.1f}); agent "
        f"{returns.mean():.1f}; ratio {last.mean() / returns.mean():.2f}; data mean "
        f"{data_mean:.1f}"
    )
    atomic_write_json(out / "summary.json", summary)


if __name__ == "__main__":
    main()

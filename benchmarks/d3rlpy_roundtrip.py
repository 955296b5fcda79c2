"""An exported udg dataset in d3rlpy: loaded, aligned, with the task's rewards, trained on.

Needs the bench extra (`pip install -e ".[bench]"`: torch 2.13.0 and d3rlpy 2.7.0). In a scratch
folder it collects two HalfCheetah random datasets with `udg collect-random`, exports their top-1
for cheetah-jump with `udg export` (random data stores HalfCheetah-v5's own reward; the export's
rewards are cheetah-jump's), and then, as a d3rlpy user would:

1. loads it with `d3rlpy.datasets.get_minari(id)`, d3rlpy's own loader, and counts how many of
   its transitions are the episodes' (d3rlpy concatenates an episode's T+1 observations with its
   T actions, so from the second episode on every observation sits beside another's action);
2. loads it with the one line `MDPDataset(**numpy.load(<dataset>/d3rlpy.npz))` and checks every
   transition against the Minari episodes: observation, action, reward (the task's), next
   observation;
3. trains d3rlpy's TD3PlusBC for a few hundred updates on it and evaluates the policy for one
   episode in the plain Gymnasium env recorded as the dataset's eval env (HalfCheetah-v5).

It prints one line per check and exits 1 if the one-line load is not exact or training fails.
Run: `.venv/bin/python benchmarks/d3rlpy_roundtrip.py [--steps 300]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UDG = [sys.executable, "-m", "udg.cli.main"]


def udg(*args: str) -> str:
    done = subprocess.run([*UDG, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"udg {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def episode_transitions(minari_dataset) -> list[tuple]:
    """(observation, action, reward, next observation, terminal) of every Minari step."""
    out = []
    for ep in minari_dataset.iterate_episodes():
        for i in range(len(ep.actions)):
            out.append(
                (
                    ep.observations[i],
                    ep.actions[i],
                    ep.rewards[i],
                    ep.observations[i + 1],
                    bool(ep.terminations[i]),
                )
            )
    return out


def d3rlpy_transitions(buffer) -> list[tuple]:
    """The same five values of every transition d3rlpy's transition picker gives."""
    out = []
    for episode in buffer.episodes:
        for i in range(episode.transition_count):
            t = buffer.transition_picker(episode, i)
            out.append(
                (t.observation, t.action, float(t.reward[0]), t.next_observation, bool(t.terminal))
            )
    return out


def matching(got: list[tuple], want: list[tuple]) -> int:
    """How many transitions of ``got`` equal the one at the same place of ``want``."""
    same = 0
    for g, w in zip(got, want, strict=False):
        ok = (
            np.allclose(g[0], w[0], atol=1e-5)
            and np.allclose(g[1], w[1], atol=1e-5)
            and abs(g[2] - w[2]) <= 1e-4 * max(1.0, abs(w[2]))
            and g[4] == w[4]
            and (w[4] or np.allclose(g[3], w[3], atol=1e-5))
        )
        same += bool(ok)
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="TD3PlusBC updates")
    parser.add_argument("--transitions", type=int, default=3000, help="per random dataset")
    args = parser.parse_args()

    import logging

    import d3rlpy
    import minari
    import structlog

    # d3rlpy logs every step of its setup at info level; keep this script's lines readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    root = Path(tempfile.mkdtemp(prefix="udg-d3rlpy-"))
    for seed in (0, 1):
        udg("collect-random", "--env", "halfcheetah", "--steps", str(args.transitions),
            "--seed", str(seed), "--out", str(root / "data"))  # fmt: skip
    exported = json.loads(
        udg(
            "export",
            str(root / "data"),
            "--task",
            "cheetah-jump",
            "--out",
            str(root / "exports"),
            "--json",
        )  # fmt: skip
    )
    print(f"d3rlpy {d3rlpy.__version__}, minari {minari.__version__}; udg export wrote "
          f"{exported['dataset_id']} ({exported['episodes']} episodes, "
          f"{exported['transitions']} transitions)")  # fmt: skip
    os.environ["MINARI_DATASETS_PATH"] = str(root / "exports")
    source = minari.load_dataset(exported["dataset_id"])
    want = episode_transitions(source)
    stored = np.concatenate([ep.rewards for ep in source.iterate_episodes()])
    print(f"  Minari rewards: the task's (mean {stored.mean():.3f} per step; the collected "
          f"reward was {np.mean(np.concatenate([ep.infos['collected_reward'][1:] for ep in source.iterate_episodes()])):.3f})")  # fmt: skip

    buffer, env = d3rlpy.datasets.get_minari(exported["dataset_id"])
    got = d3rlpy_transitions(buffer)
    print(f"1. get_minari: {len(got)} transitions for {len(want)}; "
          f"{matching(got, want)} equal to the episodes' (d3rlpy's loader, not the export)")  # fmt: skip

    with np.load(Path(exported["path"]) / "d3rlpy.npz") as arrays:
        one_line = d3rlpy.dataset.MDPDataset(**arrays)
    got = d3rlpy_transitions(one_line)
    exact = len(got) == len(want) and matching(got, want) == len(want)
    print(
        f"2. MDPDataset(**np.load('d3rlpy.npz')): {len(got)} transitions for {len(want)}; "
        f"{matching(got, want)} equal to the episodes' -> {'exact' if exact else 'NOT exact'}"
    )

    algo = d3rlpy.algos.TD3PlusBCConfig(batch_size=256).create(device="cpu:0")
    start = time.perf_counter()
    metrics = algo.fit(
        one_line,
        n_steps=args.steps,
        n_steps_per_epoch=args.steps,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
        save_interval=10**9,
    )
    seconds = time.perf_counter() - start
    eval_env = source.recover_environment(eval_env=True)
    returns = d3rlpy.metrics.evaluate_qlearning_with_environment(algo, eval_env, n_trials=1)
    losses = metrics[-1][1]
    print(f"3. TD3PlusBC: {args.steps} updates in {seconds:.1f} s "
          f"({1000 * seconds / args.steps:.1f} ms each); critic loss {losses['critic_loss']:.3f}; "
          f"one episode in {eval_env.spec.id} (its own reward): {returns:.1f}")  # fmt: skip
    print(f"   (scratch folder {root})")
    return 0 if exact and np.isfinite(losses["critic_loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())

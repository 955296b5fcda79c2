"""Measure how far apart the K agents of a generate run are, against random policies.

For each agent, the feature states of its last ``--episodes`` episodes (its near-final policy)
form one distribution; the same number of episodes of uniformly random actions, collected with
K different seeds, form the reference. The script prints the minimum and mean pairwise exact W1
(POT) of both groups and their ratio (issue target on point with K = 6: min ratio >= 5), then,
per policy, how far its episodes went (median distance from the episode's first feature state
to its last), their mean heading, and how consistent that heading is (1: every episode the same
way; near 0: no preferred direction), which tells walking in distinct directions from a cloud.

    .venv/bin/python scripts/measure_diversity.py RUN [--episodes 10] [--columns X Y]

``--columns`` measures other info columns than the run's features (the first two are taken as
a position for reach and heading), e.g. ``--columns x_position y_position`` for a run whose
diversity features were velocities.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import numpy as np

from udg.data.collect import collect_episodes, uniform_random_policy
from udg.data.dataset import dataset_from_episodes
from udg.data.minari_io import dataset_id_for, load_dataset
from udg.diversity.exact import pairwise_exact_w1
from udg.envs import get_env_spec, make_env


def features(data, columns, episodes):
    first = max(0, data.num_episodes - episodes)
    start = int(data.episode_starts[first])
    return np.stack([data.infos[c][start:] for c in columns], axis=-1)


def displacements(data, columns, episodes):
    """[episodes, 2]: last minus first feature state (first two columns) of each of the last
    ``episodes`` episodes: how far and in which direction each episode went."""
    first = max(0, data.num_episodes - episodes)
    starts = data.episode_starts[first:]  # with the end of the last episode
    xy = np.stack([data.infos[c] for c in columns[:2]], axis=-1)
    return np.stack([xy[end - 1] - xy[start] for start, end in pairwise(starts)])


def heading_table(name, sets):
    """Per policy: median distance travelled, mean heading and its consistency (the length of
    the mean unit vector: 1 when every episode goes the same way, ~0 for random directions)."""
    print(f"{name}: {'policy':<8}{'median reach':>14}{'heading (deg)':>15}{'consistency':>13}")
    for i, d in enumerate(sets):
        unit = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        mean = unit.mean(axis=0)
        heading = np.degrees(np.arctan2(mean[1], mean[0])) % 360
        print(
            f"{'':<{len(name) + 2}}{i:<8}{np.median(np.linalg.norm(d, axis=1)):>14.2f}"
            f"{heading:>15.0f}{np.linalg.norm(mean):>13.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--columns", nargs="+", help="info columns (default: the run's features)")
    args = parser.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    config = manifest["config"]
    env, k, horizon = config["env"], config["num_agents"], config["episode_length"]
    columns = args.columns or config["features"] or list(get_env_spec(env).feature_columns)
    datasets = [
        load_dataset(args.run / "datasets" / dataset_id_for(env, f"agent-{i}")) for i in range(k)
    ]
    agents = [features(d, columns, args.episodes) for d in datasets]
    agent_moves = [displacements(d, columns, args.episodes) for d in datasets]
    randoms, random_moves = [], []
    for seed in range(k):
        gym_env = make_env(env, max_episode_steps=horizon)
        policy = uniform_random_policy(gym_env.action_space, np.random.default_rng(1000 + seed))
        episodes = collect_episodes(gym_env, policy, args.episodes * horizon, seed=1000 + seed)
        data = dataset_from_episodes("r", env, episodes)
        randoms.append(features(data, columns, args.episodes))
        random_moves.append(displacements(data, columns, args.episodes))
    rows = {}
    for name, sets in (("agents", agents), ("random", randoms)):
        w = pairwise_exact_w1(sets, max_points=2000)
        off = w[~np.eye(k, dtype=bool)]
        rows[name] = {"min": float(off.min()), "mean": float(off.mean())}
    ratio = rows["agents"]["min"] / rows["random"]["min"]
    print(f"{env}, K={k}, last {args.episodes} episodes per agent, features {columns}")
    print(f"{'policies':<10}{'min pairwise W1':>18}{'mean pairwise W1':>18}")
    for name, row in rows.items():
        print(f"{name:<10}{row['min']:>18.3f}{row['mean']:>18.3f}")
    print(
        f"ratio of minima (agents / random): {ratio:.1f}  (target >= 5: "
        f"{'met' if ratio >= 5 else 'NOT met'})"
    )
    heading_table("agents", agent_moves)
    heading_table("random", random_moves)


if __name__ == "__main__":
    main()

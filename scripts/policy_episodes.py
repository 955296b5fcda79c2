"""How a ``udg offline`` policy's real episodes end: length, termination, torso height, position.

Loads ``OUT/policy.msgpack`` of a finished ``udg offline --out OUT`` run (its env, task, MOPO
config and observation entries from ``OUT/manifest.json``), runs the deterministic policy for
``--episodes`` episodes in the real environment and prints one line per episode: steps, whether
the env terminated it, the last, highest and lowest first observation entry (for Ant the torso
height ``qpos[2]``, healthy within [0.2, 1.0]), and the final (x, y) position from the env's
info.

    .venv/bin/python scripts/policy_episodes.py OUT [OUT ...] [--episodes 5] [--seed 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from udg.agents import sac
from udg.agents.sac import SACConfig
from udg.envs import get_task, make_env


def policy_of(run: Path):
    """(env name, greedy policy [o] -> [a]) of one offline run."""
    try:
        manifest = json.loads((run / "manifest.json").read_text())
        result = json.loads((run / "result.json").read_text())
        config = manifest["config"]
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"policy_episodes: error: {run} is not a finished udg offline run ({err})")
    env = get_task(config["task"]).env
    obs_dims = int(result["observation_dims"])
    try:  # the run's own network sizes (the demo preset's are smaller than the others')
        hidden = tuple(int(h) for h in config["mopo"]["sac"]["hidden_dims"])
    except (KeyError, TypeError, ValueError) as err:
        sys.exit(f"policy_episodes: error: {run}/manifest.json names no SAC hidden_dims ({err})")
    sac_config = dataclasses.replace(SACConfig(), hidden_dims=hidden)
    act_dim = make_env(env).action_space.shape[0]
    template = sac.SAC.create(sac_config, jax.random.key(0), obs_dims, act_dim)
    try:
        agent = sac.from_bytes(template, (run / "policy.msgpack").read_bytes())
    except (OSError, ValueError) as err:
        sys.exit(f"policy_episodes: error: {run}/policy.msgpack: {err}")
    act = jax.jit(sac.greedy_actions_single)
    return env, lambda obs: np.asarray(act(agent, obs[None, :obs_dims]))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="udg offline output folders")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per run")
    parser.add_argument("--seed", type=int, default=100, help="reset seed of the first episode")
    args = parser.parse_args()
    for run in args.runs:
        env_name, policy = policy_of(run)
        for episode in range(args.episodes):
            env = make_env(env_name)
            obs, info = env.reset(seed=args.seed + episode)
            heights, terminated, truncated = [], False, False
            while not (terminated or truncated):
                obs, _, terminated, truncated, info = env.step(policy(obs.astype(np.float32)))
                heights.append(float(obs[0]))
            print(
                f"{run.name} episode {episode}: {len(heights)} steps, terminated {terminated}, obs[0] "
                f"last {heights[-1]:.3f} max {max(heights):.3f} min {min(heights):.3f}, "
                f"(x, y) = ({info.get('x_position', np.nan):.2f}, "
                f"{info.get('y_position', np.nan):.2f})"
            )


if __name__ == "__main__":
    main()

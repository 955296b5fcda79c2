"""Reference rows for cheetah-run on 1000-step episodes: zero action, random, the SAC expert
that collected the replay (its final greedy policy), each over 5 episodes of the evaluation
stream of seeds 0, 1, 2 (the offline cells' seeds)."""

import json
import sys

import jax
import numpy as np

from udg.agents import sac
from udg.envs import get_task
from udg.evaluation.evaluate import evaluate
from udg.evaluation.reference import random_policy_returns, zero_action_returns
from udg.experiments.runs import load_run

task = get_task("cheetah-run")
agents = load_run(sys.argv[1]).load_agents()  # the generate run that made the replay
agent = jax.tree.map(lambda leaf: leaf[0], agents)
greedy = jax.jit(sac.greedy_actions_single)
rows = {"zero": [], "random": [], "expert": []}
for seed in (0, 1, 2):
    rows["zero"].append(float(zero_action_returns(task, 5, seed).mean()))
    rows["random"].append(float(random_policy_returns(task, 5, seed).mean()))
    rows["expert"].append(
        float(evaluate(task, lambda o: np.asarray(greedy(agent, o)), 5, seed).mean())
    )
print(json.dumps(rows))

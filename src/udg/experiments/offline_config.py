"""MOPO's settings at the three scales, per environment.

``paper`` is SPEC section 5 as written (50k rollouts every 1000 updates, 3000 epochs, 7x4x200
ensemble). ``small`` keeps the algorithm and network sizes but cuts rollouts, epochs and the
model's minibatches per epoch so that a MuJoCo cell fits in minutes on 2 cores (halfcheetah's
in about half an hour): 40 policy epochs for halfcheetah (6 cells in ``udg experiment
cheetah``), 8 for ant, whose 30 cells in ``udg experiment ant-angle`` must share the same
3-hour budget (see :data:`SMALL_BUDGET`);
``demo`` shrinks the networks too, for the point env.
The rollout horizon h and penalty lambda are per environment, within MOPO's published ranges:
h = 5 everywhere; lambda = 1 for point and ant, 0.5 for halfcheetah (MOPO's HalfCheetah value).
"""

from __future__ import annotations

import dataclasses

from udg.agents.sac import SACConfig
from udg.envs.registry import get_env_spec
from udg.errors import UdgError
from udg.experiments.generate_config import SCALES
from udg.offline.ensemble import DynamicsConfig
from udg.offline.mopo import MOPOConfig

PENALTY_COEF = {"point": 1.0, "ant": 1.0, "halfcheetah": 0.5}
ROLLOUT_LENGTH = {"point": 5, "ant": 5, "halfcheetah": 5}
SMALL_BUDGET = {
    # env: (policy epochs of 1000 updates, model max epochs, model minibatches per epoch)
    "point": (40, 40, 400),
    "halfcheetah": (40, 200, 400),
    "ant": (8, 20, 100),
}
"""``small`` budgets per env. ant's is sized from a measured ant-angle cell (a ~13 s policy epoch
with its rollouts and evaluations, ~266 s for a 15-epoch cell): measured 82-255 s per cell and
75 min for ant-angle's 30 cells (``results/ant-angle/RUN.md``), after stage 1 (K = 6 x 240k
steps at the current ``small`` generate preset: 1 h 54 min on 2 cores) and the six experts (53
min at ``--expert-steps 150000``). At this budget MOPO's Ant policy learns to stand, not walk;
at 64 epochs it learns to end the episode, the penalty outweighing the healthy bonus
(``results/ant-angle/longer-mopo``). halfcheetah's model may take up to 80k steps, early stopping
still on: capped at 16k, its penalty on 100k SAC replay transitions stayed about 1.5x that of a
fit to convergence (71k-122k steps) and MOPO's return fell below the data's. At 80k, MOPO
returns 4659.7 over 3 seeds against the data's 2059.8, and a cell takes 23-37 min on 2 cores,
the model's fit four-fifths of it (``results/offline``)."""


def mopo_preset(env: str, scale: str) -> MOPOConfig:
    """MOPO's config for ``env`` at ``scale``."""
    get_env_spec(env)
    if scale not in SCALES:
        raise UdgError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    base = MOPOConfig(rollout_length=ROLLOUT_LENGTH[env], penalty_coef=PENALTY_COEF[env])
    if scale == "paper":
        return base
    if scale == "small":
        epochs, model_epochs, model_batches = SMALL_BUDGET[env]
        return dataclasses.replace(
            base,
            rollout_batch_size=10_000,
            epochs=epochs,
            eval_every=max(epochs // 4, 1),
            eval_episodes=5,
            dynamics=dataclasses.replace(
                base.dynamics, max_epochs=model_epochs, max_batches_per_epoch=model_batches
            ),
        )
    return dataclasses.replace(
        base,
        rollout_batch_size=2_000,
        rollout_freq=250,
        epochs=12,
        steps_per_epoch=250,
        eval_every=4,
        eval_episodes=5,
        checkpoint_every=4,
        sac=SACConfig(hidden_dims=(64, 64)),
        dynamics=DynamicsConfig(
            hidden_dims=(64, 64, 64),
            weight_decay=(2.5e-5, 5e-5, 7.5e-5, 1e-4),
            max_epochs=15,
            max_batches_per_epoch=100,
        ),
    )

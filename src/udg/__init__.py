"""udg: unsupervised data generation for offline reinforcement learning.

The package is a straight line of stages: ``envs`` (environments and task rewards) ->
``agents`` (SAC, populations) -> ``diversity`` (the Wasserstein diversity reward) -> ``data``
(episodes, Minari datasets, relabelling, selection) -> ``offline`` (dynamics ensemble, MOPO) ->
``experiments`` (pipelines, reports) -> ``cli``.
"""

__version__ = "0.1.0"

# Importing udg registers its Gymnasium ids, so `gym.make("udg/Point-v0")` works after it (and
# Minari's recover_environment on a udg dataset).
from udg.envs import register_envs as _register_envs  # noqa: E402

_register_envs()

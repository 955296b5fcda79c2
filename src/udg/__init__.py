"""udg: unsupervised data generation for offline reinforcement learning.

The package is a straight line of stages: ``envs`` (environments and task rewards) ->
``agents`` (SAC, populations) -> ``diversity`` (the Wasserstein diversity reward) -> ``data``
(episodes, Minari datasets, relabelling, selection) -> ``offline`` (dynamics ensemble, MOPO) ->
``experiments`` (pipelines, reports) -> ``cli``.
"""

__version__ = "0.1.0"

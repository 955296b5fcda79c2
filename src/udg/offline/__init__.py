"""Stage 2's learners: MOPO (the paper's, model-based) and two model-free ones, TD3+BC and IQL.

The names below are the registry the command line and the reports read; they import no JAX,
so ``udg --help`` and a report's rendering stay light.
"""

ALGOS = ("mopo", "td3bc", "iql")
"""The offline learners ``--algo`` chooses from; the first, MOPO, the paper's, is the
default."""

ALGO_LABELS = {"mopo": "MOPO", "td3bc": "TD3+BC", "iql": "IQL"}
"""Each learner's name in tables, bars and figures."""

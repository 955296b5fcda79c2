"""Benchmark of the diversity reward per episode end (target: < 5 ms), side by side.

Times, after warm-up and as the best of several runs, at WURL scale (K = 10 agents,
T = D = 1000, M = 5 directions, 2-D features): one agent's reward; the batched reward of
all K agents ending together (per agent), with shared and with per-agent directions; the
same single reward with `jnp.argsort` in place of the int32-key argsort (the optimisation
this module relies on); the FIFO push of K episodes; and, for reference, one exact W1
between two 1000-point sets with POT. The float32 matmul peak is measured in the same run
so the numbers can be compared across machines. The machine is shared: expect noise.

Run: .venv/bin/python benchmarks/bench_diversity.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from udg.diversity import wasserstein
from udg.diversity.exact import exact_w1
from udg.diversity.wasserstein import (
    DiversityConfig,
    FeatureCache,
    diversity_reward,
    diversity_rewards_batch,
    push_batch,
)

NUM_AGENTS, CACHE_SIZE, EPISODE_LENGTH, FEATURE_DIM = 10, 1000, 1000, 2
TARGET_MS = 5.0
REPEATS = 30


def best_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    jax.block_until_ready(fn())  # warm-up (compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def matmul_peak_gflops(n: int = 1024) -> float:
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return 2 * n**3 / (best_ms(lambda: dot(x, x), repeats=10) * 1e-3) / 1e9


def main() -> None:
    rng = np.random.default_rng(0)
    cache = FeatureCache(
        features=jnp.asarray(rng.normal(size=(NUM_AGENTS, CACHE_SIZE, FEATURE_DIM)), jnp.float32),
        counts=jnp.full(NUM_AGENTS, CACHE_SIZE, jnp.int32),
        pointers=jnp.zeros(NUM_AGENTS, jnp.int32),
    )
    episodes = jnp.asarray(rng.normal(size=(NUM_AGENTS, EPISODE_LENGTH, FEATURE_DIM)), jnp.float32)
    lengths = jnp.full(NUM_AGENTS, EPISODE_LENGTH, jnp.int32)
    agents = jnp.arange(NUM_AGENTS)
    key = jax.random.key(0)
    config = DiversityConfig(num_directions=5, cache_size=CACHE_SIZE)

    single = jax.jit(diversity_reward, static_argnums=0)
    batch = jax.jit(diversity_rewards_batch, static_argnums=0)
    push_all = jax.jit(push_batch)
    rows: list[tuple[str, float, int, bool]] = []  # (name, total ms, episodes covered, targeted)

    rows.append(
        (
            "reward, one agent",
            best_ms(lambda: single(config, key, episodes[0], lengths[0], cache, 0)),
            1,
            True,
        )
    )
    rows.append(
        (
            "reward, all K batched (shared directions)",
            best_ms(lambda: batch(config, key, episodes, lengths, cache, agents)),
            NUM_AGENTS,
            True,
        )
    )
    per_agent = replace(config, shared_batch_directions=False)
    rows.append(
        (
            "reward, all K batched (per-agent directions)",
            best_ms(lambda: batch(per_agent, key, episodes, lengths, cache, agents)),
            NUM_AGENTS,
            True,
        )
    )

    def plain_argsort(values: jax.Array, counts: jax.Array) -> jax.Array:
        valid = jnp.arange(values.shape[-1]) < jnp.asarray(counts)[..., None]
        return jnp.argsort(jnp.where(valid, values, jnp.inf), axis=-1, stable=True)

    fast_argsort = wasserstein.masked_argsort
    wasserstein.masked_argsort = plain_argsort  # looked up at trace time
    try:
        # A new function object: jit wrappers of one function share the trace cache.
        plain = jax.jit(lambda *args: diversity_reward(*args), static_argnums=0)
        rows.append(
            (
                "reward, one agent, jnp.argsort (baseline)",
                best_ms(lambda: plain(config, key, episodes[0], lengths[0], cache, 0)),
                1,
                False,
            )
        )
    finally:
        wasserstein.masked_argsort = fast_argsort

    rows.append(
        (
            "FIFO push of K episodes",
            best_ms(lambda: push_all(cache, agents, episodes, lengths)),
            NUM_AGENTS,
            False,
        )
    )
    x = np.asarray(episodes[0], np.float64)
    y = np.asarray(cache.features[1], np.float64)
    rows.append(
        ("exact W1 1000x1000 (POT emd2), reference", best_ms(lambda: exact_w1(x, y), 3), 1, False)
    )

    peak = matmul_peak_gflops()
    print(
        f"K={NUM_AGENTS} T={CACHE_SIZE} D={EPISODE_LENGTH} M={config.num_directions} "
        f"f={FEATURE_DIM}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"float32 matmul peak {peak:.1f} GFLOP/s (1024^3, best of 10)"
    )
    single_ms = rows[0][1]
    header = f"{'measurement':<46} {'total ms':>9} {'ms/episode':>11} {'x one-agent':>12} {'target':>8} {'met':>4}"
    print(header)
    print("-" * len(header))
    for name, total, covered, targeted in rows:
        per_episode = total / covered
        target = f"<{TARGET_MS:g} ms" if targeted else "-"
        met = ("yes" if per_episode < TARGET_MS else "NO") if targeted else "-"
        print(
            f"{name:<46} {total:>9.3f} {per_episode:>11.3f} {per_episode / single_ms:>12.2f} {target:>8} {met:>4}"
        )
    print(f"(best of {REPEATS} after warm-up; the machine is shared, so timings are noisy)")


if __name__ == "__main__":
    main()

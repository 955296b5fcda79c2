"""Throughput of the dynamics-ensemble training step against the machine's matmul peak.

Measured side by side in one run:
  1. float32 matmul peak: a large jitted jnp.dot (n x n @ n x n, FLOPs = 2 n^3, n in
     {1024, 2048}), best over the repeats;
  2. one ensemble training step at paper settings (E = 7 members, 4 x 200 swish, batch 256,
     Ant-sized input 105 + 8 = 113, target 105 + 1 = 106, i.e. 212 outputs for mean and
     log-variance), one step per dispatch and S steps scanned per dispatch;
  3. the same work as a Python loop over 7 single-member states, each with its own jitted step;
  4. the step's matmuls alone (the same E-batched layers, linear, value and gradient, no loss
     or Adam): what XLA's CPU dot reaches at these shapes, the ceiling of the step.
FLOPs counted: forward matmuls 2 * E * B * sum_l(in_l * out_l); the backward pass has two
matmuls of the same size per layer (gradients w.r.t. weights and w.r.t. the layer input), so a
step is ~3x forward; the input gradient of the first layer is never needed and XLA drops it,
so the count is exactly 3x forward minus that one matmul (the 14 dots in the compiled step).
Elementwise work (swish, exp, softplus, Adam) is not counted, so the ratio to peak is a lower
bound on the machine's utilisation.
Timings are the best over several interleaved repeats; the machine is shared and noisy.

Run: .venv/bin/python benchmarks/bench_dynamics.py
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from udg.offline.dynamics import DynamicsConfig, EnsembleTrainState, train_step

ENSEMBLE, BATCH, OBS_DIM, ACT_DIM = 7, 256, 105, 8
IN_DIM, OUT_DIM = OBS_DIM + ACT_DIM, OBS_DIM + 1
SCAN_STEPS = 20
REPEATS = 7
CALLS = 10


def best_time(fn, repeats: int = REPEATS) -> float:
    """Best wall time of fn() (which must block) over repeats."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_runners() -> list[tuple[int, object]]:
    """(n, fn) pairs timing one jitted n x n float32 matmul each, compiled and warmed up."""
    dot = jax.jit(jnp.dot)
    runners = []
    for n in (1024, 2048):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        dot(a, a).block_until_ready()
        runners.append((n, lambda a=a: dot(a, a).block_until_ready()))
    return runners


def step_flops(config: DynamicsConfig, members: int) -> float:
    """Matmul FLOPs of one training step: 3 x forward, less layer 0's input gradient."""
    dims = [IN_DIM, *config.hidden_dims, 2 * OUT_DIM]
    layers = [2 * members * BATCH * a * b for a, b in zip(dims[:-1], dims[1:], strict=True)]
    return 3.0 * sum(layers) - layers[0]


def linear_chain_runner(config: DynamicsConfig):
    """The step's matmuls alone: value and gradient of the same E-batched linear layers (no
    activation, loss, or Adam), S scanned per dispatch. Its FLOPs equal the step's count, so
    its GFLOP/s is what XLA's CPU dot reaches at these shapes: the ceiling of the step."""
    dims = [IN_DIM, *config.hidden_dims, 2 * OUT_DIM]
    keys = jax.random.split(jax.random.key(2), len(dims))
    weights = [
        jax.random.normal(k, (ENSEMBLE, a, b), jnp.float32) / a**0.5
        for k, a, b in zip(keys[1:], dims[:-1], dims[1:], strict=True)
    ]
    x = jax.random.normal(keys[0], (ENSEMBLE, BATCH, IN_DIM), jnp.float32)

    def chain_sum(ws):
        h = x
        for w in ws:
            h = jnp.einsum("ebi,eio->ebo", h, w)
        return 0.5 * jnp.sum(jnp.square(h))  # its gradient needs every forward matmul

    @jax.jit
    def scanned(ws):
        def body(ws, _):
            grads = jax.grad(chain_sum)(ws)
            return [w - 1e-6 * g for w, g in zip(ws, grads, strict=True)], None

        return jax.lax.scan(body, ws, None, length=SCAN_STEPS)[0]

    run = lambda: jax.block_until_ready(scanned(weights))  # noqa: E731
    run()
    return run


def main() -> None:
    config = DynamicsConfig()  # paper settings: E = 7, 4 x 200, batch 256
    matmuls = matmul_runners()
    t_dot = dict.fromkeys((n for n, _ in matmuls), float("inf"))

    state = EnsembleTrainState.create(config, jax.random.key(0), IN_DIM, OUT_DIM)
    keys = jax.random.split(jax.random.key(1), 2)
    inputs = jax.random.normal(keys[0], (SCAN_STEPS, ENSEMBLE, BATCH, IN_DIM), jnp.float32)
    targets = jax.random.normal(keys[1], (SCAN_STEPS, ENSEMBLE, BATCH, OUT_DIM), jnp.float32)

    step_fn = jax.jit(train_step)

    @jax.jit
    def scanned(state, inputs, targets):  # S steps per dispatch
        return jax.lax.scan(lambda s, b: train_step(s, *b), state, (inputs, targets))

    single = dataclasses.replace(config, ensemble_size=1, num_elites=1)
    members = [
        jax.tree_util.tree_map(lambda p, e=e: p[e : e + 1] if p.ndim else p, state).replace(
            config=single
        )
        for e in range(ENSEMBLE)
    ]

    def run_ensemble(s=state):
        for i in range(CALLS):
            s, _ = step_fn(s, inputs[i], targets[i])
        jax.block_until_ready(s)

    def run_scanned(s=state):
        s, _ = scanned(s, inputs, targets)
        jax.block_until_ready(s)

    def run_loop(ms=members):
        ms = list(ms)
        for i in range(CALLS):
            for e in range(ENSEMBLE):
                ms[e], _ = step_fn(ms[e], inputs[i, e : e + 1], targets[i, e : e + 1])
        jax.block_until_ready(ms)

    run_chain = linear_chain_runner(config)
    for fn in (run_ensemble, run_scanned, run_loop):  # compile and warm up
        fn()
    t_ens = t_scan = t_loop = t_chain = float("inf")
    for _ in range(REPEATS):  # interleaved so load changes hit all kernels alike
        for n, run in matmuls:
            t_dot[n] = min(t_dot[n], best_time(run, 2))
        t_ens = min(t_ens, best_time(run_ensemble, 1) / CALLS)
        t_scan = min(t_scan, best_time(run_scanned, 1) / SCAN_STEPS)
        t_loop = min(t_loop, best_time(run_loop, 1) / CALLS)
        t_chain = min(t_chain, best_time(run_chain, 1) / SCAN_STEPS)

    peak, peak_n = max((2 * n**3 / t / 1e9, n) for n, t in t_dot.items())
    flops = step_flops(config, ENSEMBLE)
    rows = [
        (f"matmul peak (jnp.dot {peak_n}^2)", "-", "-", f"{peak:.1f}", "1.00"),
        *[
            (
                name,
                f"{t * 1e3:.2f}",
                f"{flops / 1e9:.3f}",
                f"{flops / t / 1e9:.1f}",
                f"{flops / t / 1e9 / peak:.2f}",
            )
            for name, t in (
                ("ensemble step, 1 per dispatch", t_ens),
                (f"ensemble step, {SCAN_STEPS} scanned", t_scan),
                ("loop over 7 members' steps", t_loop),
                (f"its matmuls alone, {SCAN_STEPS} scanned", t_chain),
            )
        ],
    ]
    header = ("kernel", "ms/step", "GFLOP/step", "GFLOP/s", "of peak")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    print(
        f"devices: {jax.devices()}  E={ENSEMBLE} hidden={config.hidden_dims} B={BATCH} in={IN_DIM} out={OUT_DIM}"
    )
    for r in (header, *rows):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    print(f"ensemble vs loop speed-up, 1 per dispatch: {t_loop / t_ens:.2f}x (target >= 3x)")
    print(f"ensemble vs loop speed-up, scanned:        {t_loop / t_scan:.2f}x")
    print(
        f"best step ratio to peak: {flops / min(t_ens, t_scan) / 1e9 / peak:.2f} (target >= 0.60)"
    )
    print(
        f"ceiling at these shapes (matmuls alone) to peak: {flops / t_chain / 1e9 / peak:.2f}; "
        f"step / matmuls-alone: {t_chain / min(t_ens, t_scan):.2f}"
    )


if __name__ == "__main__":
    main()

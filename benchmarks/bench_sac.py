"""Benchmark of the SAC update: achieved matmul throughput against the machine's measured
float32 peak, and the cost of a K-agent population update against K single-agent updates.

Run: `.venv/bin/python benchmarks/bench_sac.py [--steps 100] [--rounds 5] [--agents 6]`.

Rows of the printed table:
  (a) peak: best of several jitted `jnp.dot` of large square float32 matrices, 2 n^3 FLOPs.
  (b) one SAC update at Ant size (obs 105, act 8, 2x256 hidden, batch 256), timed through
      `update_n` (N updates scanned in one dispatch, so Python/dispatch overhead is amortised);
      FLOPs counted analytically (see `sac_update_flops`), achieved GFLOP/s and ratio to (a).
      Target: ratio >= 0.70.
  (c) K-agent `population_update_n` time against K times the single-agent time. Target <= 1.1.
      Shown for the default (lax.map over agents on CPU, vmap elsewhere; the agents split over
      one CPU device per core, `udg.devices`, as `udg` runs them), for all agents on one device
      (`shard=False`) and for vmap.
  (d) the same update in PyTorch, when `torch` is importable (skipped otherwise).
All timed callables run round-robin and each keeps its best of `--rounds`, so load from other
processes on a shared machine hits the peak and the updates alike; ratios still move by
several percent between runs. No XLA flags are set: on this 2-core CPU none of
--xla_cpu_use_xnnpack=false, --xla_cpu_use_onednn=true, --xla_cpu_enable_fast_math=true,
--xla_cpu_enable_concurrency_optimized_scheduler=true made the update measurably faster, so the
script runs unchanged on a GPU (a user's XLA_FLAGS are honoured and printed).
"""

import argparse
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.devices import member_mesh, use_cpu_cores

OBS_DIM, ACT_DIM, HIDDEN, BATCH = 105, 8, (256, 256), 256
PEAK_SIZES = (1024, 2048)


def interleaved_best(timers: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Best wall time of each blocking callable, run round-robin for `rounds` rounds after one
    warm-up call each, so that load from other processes hits all of them alike."""
    for run in timers.values():
        run()  # compile and warm up
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(rounds):
        for name, run in timers.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def matmul_timer(n: int) -> Callable[[], None]:
    """A jitted n x n float32 `jnp.dot` (2 n^3 FLOPs) that blocks until done."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return lambda: dot(a, b).block_until_ready()


def dense_flops(batch: int, dims: list[int]) -> list[int]:
    """Forward FLOPs 2 * B * in * out of each dense layer of an MLP with widths `dims`."""
    return [2 * batch * i * o for i, o in zip(dims[:-1], dims[1:], strict=True)]


def sac_update_flops(obs_dim: int, act_dim: int, hidden: tuple[int, ...], batch: int) -> int:
    """Matmul FLOPs of one SAC update (elementwise work, Adam and sampling not counted).

    Per dense layer of B rows, in -> out: forward 2*B*in*out; backward has a weight gradient
    (2*B*in*out) and an input gradient (2*B*in*out), the latter skipped for the first layer
    whose input is data (only the action columns count when the gradient flows into the
    action). So a trained net costs ~3x its forward, a net differentiated only with respect
    to its input ~2x, a forward-only net 1x. The update does:
      1. actor forward on s'                                   (forward)
      2. target twin critic on (s', a')                        (forward)
      3. twin critic on (s, a), trained                        (forward + weight + input grads)
      4. actor on s, trained                                   (forward + weight + input grads)
      5. twin critic on (s, pi(s)) with gradient into pi(s)    (forward + input grads)
    """
    actor = dense_flops(batch, [obs_dim, *hidden, 2 * act_dim])
    critic = [2 * f for f in dense_flops(batch, [obs_dim + act_dim, *hidden, 1])]  # 2 members
    critic_first_action_cols = 2 * 2 * batch * act_dim * hidden[0]
    forward_a, forward_c = sum(actor), sum(critic)
    trained_a = 2 * forward_a + sum(actor[1:])
    trained_c = 2 * forward_c + sum(critic[1:])
    through_c = forward_c + sum(critic[1:]) + critic_first_action_cols
    return forward_a + forward_c + trained_c + trained_a + through_c


def random_batches(key: jax.Array, *lead: int) -> dict[str, jax.Array]:
    keys = jax.random.split(key, 4)
    shape = (*lead, BATCH)
    return {
        "observations": jax.random.normal(keys[0], (*shape, OBS_DIM)),
        "actions": jax.random.uniform(keys[1], (*shape, ACT_DIM), minval=-1.0, maxval=1.0),
        "rewards": jax.random.normal(keys[2], shape),
        "next_observations": jax.random.normal(keys[3], (*shape, OBS_DIM)),
        "terminations": jnp.zeros(shape),
    }


def single_timer(steps: int) -> Callable[[], None]:
    """`jit_update_n` of one Ant-sized agent over `steps` scanned updates."""
    config = sac.SACConfig(hidden_dims=HIDDEN, batch_size=BATCH)
    state = {"agent": sac.SAC.create(config, jax.random.key(0), OBS_DIM, ACT_DIM)}
    batches = random_batches(jax.random.key(1), steps)

    def run() -> None:
        state["agent"], metrics = sac.jit_update_n(state["agent"], batches, jax.random.key(2))
        jax.block_until_ready(metrics)

    return run


def population_timer(
    num_agents: int, steps: int, vectorize: bool | None, shard: bool = True
) -> Callable[[], None]:
    """`jit_population_update_n` of K Ant-sized agents over `steps` scanned updates."""
    config = sac.SACConfig(hidden_dims=HIDDEN, batch_size=BATCH)
    agents = sac.create_population(config, jax.random.key(0), num_agents, OBS_DIM, ACT_DIM)
    if not shard:  # all on the first device (as created, they are split over the devices)
        agents = jax.device_put(agents, jax.devices()[0])
    state = {"agents": agents}
    batches = random_batches(jax.random.key(1), num_agents, steps)

    def run() -> None:
        state["agents"], metrics = sac.jit_population_update_n(
            state["agents"], batches, jax.random.key(2), vectorize=vectorize, shard=shard
        )
        jax.block_until_ready(metrics)

    return run


def xla_flop_estimate() -> float | None:
    """XLA's own cost-analysis FLOP count of one compiled update (all ops, not only dots)."""
    config = sac.SACConfig(hidden_dims=HIDDEN, batch_size=BATCH)
    agent = sac.SAC.create(config, jax.random.key(0), OBS_DIM, ACT_DIM)
    batch = jax.tree.map(lambda x: x[0], random_batches(jax.random.key(1), 1))
    analysis = jax.jit(sac.update).lower(agent, batch, jax.random.key(3)).compile()
    analysis = analysis.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return analysis.get("flops") if analysis else None


def torch_timer(steps: int) -> Callable[[], None] | None:
    """`steps` updates of the same SAC in PyTorch (eager), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from torch import nn

    torch.manual_seed(0)

    def mlp(inp: int, out: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(inp, HIDDEN[0]),
            nn.ReLU(),
            nn.Linear(*HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN[1], out),
        )

    actor = mlp(OBS_DIM, 2 * ACT_DIM)
    critics = nn.ModuleList([mlp(OBS_DIM + ACT_DIM, 1) for _ in range(2)])
    targets = nn.ModuleList([mlp(OBS_DIM + ACT_DIM, 1) for _ in range(2)])
    targets.load_state_dict(critics.state_dict())
    log_alpha = torch.zeros((), requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=3e-4)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    s, s2 = torch.randn(BATCH, OBS_DIM), torch.randn(BATCH, OBS_DIM)
    a, r, d = torch.rand(BATCH, ACT_DIM) * 2 - 1, torch.randn(BATCH), torch.zeros(BATCH)

    def policy(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = actor(obs).chunk(2, -1)
        log_std = log_std.clamp(-5, 2)
        u = mean + log_std.exp() * torch.randn_like(mean)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.9189385).sum(-1)
        logp = logp - (2 * (np.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), logp

    def q(nets: nn.ModuleList, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1)
        return torch.stack([net(x)[:, 0] for net in nets])

    def update() -> None:
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = policy(s2)
            y = r + 0.99 * (1 - d) * (q(targets, s2, a2).min(0).values - alpha * logp2)
        critic_loss = ((q(critics, s, a) - y) ** 2).mean(1).sum()
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        with torch.no_grad():
            for p, tp in zip(critics.parameters(), targets.parameters(), strict=True):
                tp.mul_(0.995).add_(0.005 * p)
        pi, logp = policy(s)
        actor_loss = (alpha * logp - q(critics, s, pi).min(0).values).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = log_alpha.exp() * (-logp.mean().detach() + ACT_DIM)
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()

    def run() -> None:
        for _ in range(steps):
            update()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="updates scanned per dispatch")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the best is kept")
    parser.add_argument("--agents", type=int, default=6, help="population size K for row (c)")
    args = parser.parse_args()
    use_cpu_cores()  # as `udg` does: one CPU device per core, before any computation
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus, "
        f"XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}', {len(jax.devices())} devices"
    )

    timers = {f"peak{n}": matmul_timer(n) for n in PEAK_SIZES}
    timers["single"] = single_timer(args.steps)
    timers["population"] = population_timer(args.agents, args.steps, None)
    timers["population_one_device"] = population_timer(args.agents, args.steps, None, False)
    timers["population_vmap"] = population_timer(args.agents, args.steps, True)
    torch_steps = min(args.steps, 20)
    run_torch = torch_timer(torch_steps)
    if run_torch is not None:
        timers["torch"] = run_torch
    best = interleaved_best(timers, args.rounds)

    peak, peak_n = max((2 * n**3 / best[f"peak{n}"] / 1e9, n) for n in PEAK_SIZES)
    flops = sac_update_flops(OBS_DIM, ACT_DIM, HIDDEN, BATCH)
    xla_flops = xla_flop_estimate()
    single = best["single"] / args.steps
    population = best["population"] / args.steps
    achieved = flops / single / 1e9
    pop_ratio = population / (args.agents * single)
    one_device_ratio = best["population_one_device"] / args.steps / (args.agents * single)
    vmap_ratio = best["population_vmap"] / args.steps / (args.agents * single)
    default_mode = ("vmap" if jax.default_backend() != "cpu" else "lax.map") + " over agents"
    mesh = member_mesh(args.agents)
    if mesh is not None:
        default_mode += f", split over {mesh.size} devices ({args.agents // mesh.size} each)"
    rows = [
        (
            "(a) f32 matmul peak",
            f"{peak:.1f} GFLOP/s",
            f"jnp.dot {peak_n}^2, best of {args.rounds}",
        ),
        (
            "(b) SAC update time",
            f"{single * 1e3:.3f} ms",
            f"obs {OBS_DIM}, act {ACT_DIM}, 2x256, batch {BATCH}, scan N={args.steps}",
        ),
        (
            "    counted matmul FLOPs",
            f"{flops / 1e6:.1f} MFLOP",
            "XLA cost_analysis (all ops): "
            + (f"{xla_flops / 1e6:.1f} MFLOP" if xla_flops else "n/a"),
        ),
        ("    achieved", f"{achieved:.1f} GFLOP/s", ""),
        (
            "    ratio to peak",
            f"{achieved / peak:.3f}",
            f"target >= 0.70: {'met' if achieved / peak >= 0.70 else 'NOT met'}",
        ),
        (
            f"(c) K={args.agents} population update",
            f"{population * 1e3:.3f} ms",
            f"default: {default_mode}; "
            f"{args.agents} x single = {args.agents * single * 1e3:.3f} ms",
        ),
        (
            "    ratio pop / (K x single)",
            f"{pop_ratio:.3f}",
            f"target <= 1.10: {'met' if pop_ratio <= 1.10 else 'NOT met'}",
        ),
        (
            "    population achieved",
            f"{args.agents * flops / population / 1e9:.1f} GFLOP/s",
            f"ratio to peak {args.agents * flops / population / 1e9 / peak:.3f}",
        ),
        (
            "    same, shard=False",
            f"{one_device_ratio:.3f}",
            f"all agents on one device; sharded is {one_device_ratio / pop_ratio:.2f}x faster",
        ),
        ("    same, vectorize=True", f"{vmap_ratio:.3f}", "jax.vmap over agents"),
    ]
    if run_torch is None:
        rows.append(("(d) PyTorch SAC update", "skipped", "torch not installed"))
    else:
        torch_time = best["torch"] / torch_steps
        rows.append(
            (
                "(d) PyTorch SAC update",
                f"{torch_time * 1e3:.3f} ms",
                f"{flops / torch_time / 1e9:.1f} GFLOP/s; JAX speed-up {torch_time / single:.2f}x",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()

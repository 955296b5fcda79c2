"""Benchmark of environment-inclusive SAC training throughput on Gymnasium Ant-v5, side by side.

Measures env steps per second, where each step is one Ant-v5 step plus one gradient update
(update-to-data ratio 1), after warm-up and compilation, for:
  - udg K=1: the stage-1 runner (`udg.experiments.generate.run_round`) with one agent,
    task ant-angle-0, w_task 1, w_div 0: one 1000-step episode, then its 1000 updates scanned
    in chunks of `updates_per_call` (the runner's default, 50);
  - udg K=6: the same runner with 6 agents and w_div 1 (diversity reward on); env steps summed
    over the agents (each agent steps its own env, up to 1000 steps per round);
  - SB3 SAC (PyTorch, CPU) and SBX SAC (JAX) with train_freq 1, gradient_steps 1 (their
    standard step-update loop);
  - SB3 / SBX with train_freq 1000, gradient_steps 1000: the same episode-then-updates loop
    structure as udg, separating loop structure from kernel speed.
Identical hyper-parameters everywhere: 2x256 ReLU MLPs for actor and twin critics, Adam 3e-4,
batch 256, gamma 0.99, tau 0.005, a FIXED entropy coefficient alpha = 0.2 (udg's stage-1 default,
WURL's setting: `autotune_temperature=False, init_temperature=0.2`; SB3/SBX `ent_coef=0.2`),
`--warmup` steps of uniformly random actions before learning (udg `warmup_steps`, SB3/SBX
`learning_starts`), a replay buffer holding the whole run, episodes of 1000 steps.

Timing: after warm-up every implementation runs one more untimed round of 1000 steps (JIT
compilation, first updates), then timed rounds of 1000 env steps per agent, interleaved
round-robin over the implementations so that load from other processes hits all of them alike.
A udg round is one `run_round(run)` call (acting, env stepping, rewards, replay, updates;
no checkpoint writing); an SB3/SBX round is `model.learn(1000, reset_num_timesteps=False)`,
which does exactly 1000 env steps and 1000 updates in either train_freq setting. Reported: env
steps over total time, the best single round, and gradient updates per second and per env step.
When Ant terminates early (torso height out of [0.2, 1]) SB3/SBX reset and go on, while udg's
lockstep round ends at the agent's termination yet gives every agent as many updates as the
round's longest episode, so udg's updates per env step exceed 1 and its env steps/s understates
its update throughput.

Devices: as the `udg` command, the script exposes one JAX CPU device per core, so the udg K=6
row splits its agents over them (`udg.devices`); udg K=1 and SBX run on the first device with
every core, as without the split.

Threads: PyTorch gets `torch.set_num_threads` equal to the cores JAX's CPU client uses (all
cores of this process, 2 on the reference machine; `--torch-threads` overrides). Torch's OpenMP
threads spin-wait at their barriers, so when other processes keep the cores busy a 2-thread
torch update can be ~100x slower than a 1-thread one: the script first times a small torch MLP
update at 1 thread and at the chosen count and warns when the chosen count is over 2x slower.
The float32 matmul peak (best jitted 1024^3 `jnp.dot`) is measured before and after, as a gauge
of machine load during the run. Targets (issue): udg >= 8x SB3 SAC and >= 1.5x SBX SAC. Missing
packages (torch + stable-baselines3, sbx-rl) are reported as "not installed" and skipped.

Run: .venv/bin/python benchmarks/bench_training.py [--steps 2000] [--warmup 1000] [--agents 6]
     [--torch-threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.agents.sac import SACConfig
from udg.devices import use_cpu_cores
from udg.experiments import generate
from udg.experiments.generate import Stage1Run, update_chunks
from udg.experiments.generate_config import GenerateConfig

ROUND = 1000  # env steps per agent per timed round = Ant-v5's episode length
HIDDEN = (256, 256)
LR, BATCH, GAMMA, TAU, ALPHA = 3e-4, 256, 0.99, 0.005, 0.2
SEED = 0
TARGETS = {"SB3 SAC": 8.0, "SBX SAC": 1.5}


@dataclass
class Contender:
    """One implementation: `run_round()` does one timed round and returns its env steps and
    gradient updates (summed over agents)."""

    name: str
    agents: int
    run_round: Callable[[], tuple[int, int]] | None = None
    missing: str = ""
    generator: Stage1Run | None = None  # udg's runner, for its stage-time breakdown
    compiles: int = 0  # new compilations of udg's update during the timed rounds
    steps: list[int] = field(default_factory=list)
    updates: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(self.steps) / sum(self.seconds)

    @property
    def update_rate(self) -> float:
        return sum(self.updates) / sum(self.seconds)

    @property
    def best_rate(self) -> float:
        return max(s / t for s, t in zip(self.steps, self.seconds, strict=True))


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of a jitted n x n `jnp.dot` (2 n^3 FLOPs)."""
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(x, x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(x, x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def torch_update_ms(torch, threads: int, repeats: int = 3, steps: int = 20) -> float:
    """Best ms of one Adam step of a critic-sized MLP (113 -> 256 -> 256 -> 1, batch 256)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    net = torch.nn.Sequential(
        torch.nn.Linear(113, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    x = torch.randn(BATCH, 113)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
        best = min(best, (time.perf_counter() - start) / steps)
    torch.set_num_threads(previous)
    return 1e3 * best


def udg_contender(num_agents: int, warmup: int, rounds: int, out: Path) -> Contender:
    """udg's stage-1 runner, warmed up and compiled; a round is one `run_round()`."""
    config = GenerateConfig(
        env="ant",
        num_agents=num_agents,
        # Sizes the (ring) replay: one agent may take up to K x ROUND steps of a timed round
        # while the others terminate early, so this fits the whole run.
        steps=warmup + ROUND * (rounds + 1) * num_agents,
        episode_length=ROUND,
        task="ant-angle-0",
        w_task=1.0,
        w_div=1.0 if num_agents > 1 else 0.0,  # the diversity reward needs K >= 2
        seed=SEED,
        warmup_steps=warmup,
        updates_per_step=1.0,
        sac=SACConfig(
            hidden_dims=HIDDEN,
            actor_lr=LR,
            critic_lr=LR,
            gamma=GAMMA,
            tau=TAU,
            batch_size=BATCH,
            autotune_temperature=False,
            init_temperature=ALPHA,
        ),
    )
    generator = generate.create_run(config, out)
    for _ in range(warmup // ROUND + 1):  # random-action rounds, then the compile round
        generate.run_round(generator)
    # Compile every scan length the runner can use (a round's leftover updates run as scans of
    # 32, 16, ..., 1), as a long run does once in its first minutes (63 extra warm-up updates;
    # the update donates the agents' buffers, so its result replaces them).
    for n in {
        size
        for rest in range(config.updates_per_call)
        for size in update_chunks(rest, config.updates_per_call)
    }:
        batches = generator.replay.sample(np.random.default_rng(0), BATCH, n)
        generator.agents, _ = sac.jit_population_update_n(
            generator.agents, batches, jax.random.key(n)
        )
    jax.block_until_ready(generator.agents)

    def run_round() -> tuple[int, int]:
        # Ant terminates early when its torso height leaves [0.2, 1], which ends a udg round
        # early too: run rounds until the agents took ROUND steps each on average, so a timed
        # round spans as many env steps as SB3/SBX's. Every agent does updates_per_step x the
        # round's LONGEST episode, so with early terminations udg does more updates than env
        # steps, unlike SB3/SBX.
        updates, steps = int(generator.agents.step.sum()), 0
        while steps < num_agents * ROUND:
            generate.run_round(generator)
            steps += sum(len(episodes[-1]) for episodes in generator.pending)
        return steps, int(generator.agents.step.sum()) - updates

    return Contender(f"udg K={num_agents}", num_agents, run_round, generator=generator)


def baselines_contender(
    name: str, package: str, train_freq: int, warmup: int, rounds: int
) -> Contender:
    """SB3 (`package="sb3"`) or SBX SAC with our hyper-parameters, warmed up and compiled."""
    label = f"{name} SAC" if train_freq == 1 else f"{name} SAC freq {train_freq}"
    try:
        import gymnasium as gym

        if package == "sb3":
            import torch  # noqa: F401
            from stable_baselines3 import SAC

            extra = {"device": "cpu"}
        else:
            from sbx import SAC

            extra = {}
    except ImportError as error:
        return Contender(label, 1, missing=f"not installed ({error.name})")
    env = gym.make("Ant-v5", max_episode_steps=ROUND)
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=LR,
        buffer_size=warmup + ROUND * (rounds + 1) + 1,
        learning_starts=warmup,
        batch_size=BATCH,
        tau=TAU,
        gamma=GAMMA,
        train_freq=train_freq,
        gradient_steps=train_freq,
        ent_coef=ALPHA,
        policy_kwargs={"net_arch": list(HIDDEN)},
        seed=SEED,
        verbose=0,
        **extra,
    )
    model.learn(warmup)  # random actions only: training starts once num_timesteps > warmup
    model.learn(ROUND, reset_num_timesteps=False)  # compile round

    def run_round() -> tuple[int, int]:
        steps, updates = model.num_timesteps, model._n_updates
        model.learn(ROUND, reset_num_timesteps=False)
        return model.num_timesteps - steps, model._n_updates - updates

    return Contender(label, 1, run_round)


def jit_cache_size() -> int:
    """Compiled variants of udg's population update so far (private jax API; 0 if absent)."""
    size = getattr(sac.jit_population_update_n, "_cache_size", None)
    return size() if size else 0


def stage_breakdown(generator: Stage1Run, before: dict[str, float]) -> str:
    """Seconds per stage part of udg's runner over the timed rounds."""
    parts = {k: v - before.get(k, 0.0) for k, v in generator.timings.items()}
    return ", ".join(f"{k} {v:.2f}s" for k, v in parts.items() if v > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed env steps per agent")
    parser.add_argument("--warmup", type=int, default=1000, help="random-action steps first")
    parser.add_argument("--agents", type=int, default=6, help="K of the udg population row")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="default: the cores JAX uses"
    )
    args = parser.parse_args()
    use_cpu_cores()  # as `udg` does: K = 6 splits its agents over the cores; K = 1 is unaffected
    rounds = max(1, -(-args.steps // ROUND))
    warmup = -(-args.warmup // ROUND) * ROUND  # whole udg rounds
    cores = len(os.sched_getaffinity(0))
    threads = args.torch_threads or cores
    try:
        import torch

        one, chosen = torch_update_ms(torch, 1), torch_update_ms(torch, threads)
        torch.set_num_threads(threads)
        torch_threads = (
            f"torch {torch.__version__}: {threads} threads "
            f"(MLP update {chosen:.2f} ms; {one:.2f} ms at 1 thread)"
        )
        if chosen > 2 * one:
            torch_threads += (
                f"\nWARNING: torch is {chosen / one:.0f}x slower at {threads} threads than at 1 "
                "(cores busy with other processes); SB3 rows are pessimistic, "
                "consider --torch-threads 1"
            )
    except ImportError:
        torch_threads = "torch not installed"

    print(f"Ant-v5, {rounds} timed rounds of {ROUND} steps per agent, warm-up {warmup} steps")
    print(
        f"{cores} cores; JAX {jax.__version__} ({jax.default_backend()}) uses all; {torch_threads}"
    )
    peak_before = matmul_peak_gflops()

    with tempfile.TemporaryDirectory() as tmp:
        contenders = [udg_contender(1, warmup, rounds, Path(tmp) / "udg-1")]
        if args.agents > 1:
            contenders.append(udg_contender(args.agents, warmup, rounds, Path(tmp) / "udg-k"))
        for package, name in (("sb3", "SB3"), ("sbx", "SBX")):
            for freq in (1, ROUND):
                contenders.append(baselines_contender(name, package, freq, warmup, rounds))
        running = [c for c in contenders if c.run_round is not None]
        before = {c.name: dict(c.generator.timings) for c in running if c.generator}
        for _ in range(rounds):
            for contender in running:
                cache = jit_cache_size()
                start = time.perf_counter()
                steps, updates = contender.run_round()
                contender.seconds.append(time.perf_counter() - start)
                contender.steps.append(steps)
                contender.updates.append(updates)
                if contender.generator:
                    contender.compiles += jit_cache_size() - cache
        breakdowns = {
            c.name: stage_breakdown(c.generator, before[c.name])
            for c in running
            if c.name in before
        }
    peak_after = matmul_peak_gflops()

    udg = [c for c in running if c.generator]
    header = f"{'implementation':<22}{'agents':>7}{'steps/s':>10}{'per agent':>11}{'best rnd':>10}"
    header += f"{'updates/s':>11}{'upd/step':>10}"
    header += "".join(f"{c.name + ' /':>12}" for c in udg)
    print(f"\nmatmul peak: {peak_before:.1f} GFLOP/s before, {peak_after:.1f} after")
    print(header)
    print("-" * len(header))
    for c in contenders:
        if c.run_round is None:
            print(f"{c.name:<22}{c.missing:>38}")
            continue
        row = f"{c.name:<22}{c.agents:>7}{c.rate:>10.0f}{c.rate / c.agents:>11.0f}"
        row += f"{c.best_rate:>10.0f}{c.update_rate:>11.0f}{sum(c.updates) / sum(c.steps):>10.2f}"
        row += "".join(f"{u.rate / c.rate:>12.2f}" for u in udg)
        print(row)
    print(
        "steps/s: env steps (summed over agents) per second; 'udg K=n /': udg's steps/s over the"
        " row's; upd/step: gradient updates per env step (udg > 1 when episodes end early)"
    )
    for c in udg:
        print(
            f"{c.name} time over the timed rounds: {breakdowns[c.name]}; "
            f"{c.compiles} new compilations of the update"
        )
    for target_name, target in TARGETS.items():
        other = next((c for c in running if c.name == target_name), None)
        if other is None:
            print(f"target udg >= {target}x {target_name}: not measured")
            continue
        ratios = ", ".join(f"{u.name} {u.rate / other.rate:.2f}x" for u in udg)
        print(f"target udg >= {target}x {target_name}: {ratios}")


if __name__ == "__main__":
    main()

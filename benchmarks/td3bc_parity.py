"""TD3+BC parity: udg's `udg.offline.td3bc` against d3rlpy's TD3PlusBC on one udg dataset.

Needs the bench extra (`pip install -e ".[bench]"`: torch 2.13.0 and d3rlpy 2.7.0). Both
learners read the same transitions of one udg/Minari dataset (made e.g. by `udg generate --env
halfcheetah --agents 1 --task cheetah-run --w-div 0 --w-task 1`, a SAC replay): udg through
`load_episodes`/`dataset_from_episodes`, d3rlpy through
`MDPDataset(**udg.data.export.d3rlpy_arrays(episodes))`, the layout `udg export` writes
(d3rlpy's own `get_minari` misaligns every episode after the first; see
`results/d3rlpy-roundtrip.md`). Every transition d3rlpy's picker gives is checked against
udg's before any training. Both use the paper's hyperparameters (alpha 2.5, policy noise 0.2,
noise clip 0.5, policy delay 2, lr 3e-4, batch 256, 2x256, tau 0.005, gamma 0.99) and the same
observation statistics (`(s - mean) / (std + 1e-3)` over the dataset: udg's
`observation_stats`, d3rlpy's `StandardObservationScaler` given that mean and std).

For each seed, each library trains for `--updates` updates, its own loop sampling its own
batches (udg: NumPy indices, `jit_update_n` over `--chunk` batches per dispatch; d3rlpy: the
loop of its `fit`, `sample_transition_batch` + `update`, without the logger), and is evaluated,
deterministic, in Gymnasium's `HalfCheetah-v5` with the dataset's episode length, on the same
reset seeds for every policy. Time per update is reported over the seeds' training runs
(sampling included, the first chunk, which holds udg's compilation, left out) and then from
interleaved rounds of four timers (each library's training loop, and its update alone on
pre-sampled NumPy batches), so that load from other processes hits all four alike. The data's
mean return and the zero-action and uniform-random policies' returns are reference rows. A
Markdown table goes to `--out`.

Run on one pinned core (the script makes XLA and torch single-threaded itself):
`taskset -c 1 .venv/bin/python benchmarks/td3bc_parity.py --dataset <run or dataset folder>
[--updates 30000] [--seeds 0 1] [--eval-episodes 10]`.
"""

from __future__ import annotations

import os

# Single-threaded XLA, before JAX is imported: the comparison is one core against one core.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

EVAL_ENV = "HalfCheetah-v5"
EVAL_SEED_BASE = 10_000
"""Evaluation episode i of every policy resets with seed EVAL_SEED_BASE + i."""

Policy = Callable[[np.ndarray], np.ndarray]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a Minari dataset folder, or a run "
                        "folder holding exactly one (e.g. udg generate's --out)")  # fmt: skip
    parser.add_argument("--updates", type=int, default=30_000, help="updates per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--episode-length", type=int, default=None,
                        help="evaluation episode length (default: the dataset's longest)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=1000,
                        help="updates per timed chunk (udg: scanned in one dispatch)")  # fmt: skip
    parser.add_argument("--timing-rounds", type=int, default=5,
                        help="interleaved rounds of the update-only timing")  # fmt: skip
    parser.add_argument("--timing-updates", type=int, default=500,
                        help="updates per library per update-only round")  # fmt: skip
    parser.add_argument("--out", default="results/td3bc-parity.md")
    args = parser.parse_args()
    for name in ("updates", "eval_episodes", "chunk", "timing_rounds", "timing_updates"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.updates % args.chunk or args.updates < 2 * args.chunk:
        parser.error("--updates must be a multiple of --chunk and at least two chunks "
                     "(the first chunk is warm-up, left out of the timing)")  # fmt: skip
    if len(set(args.seeds)) < 2:
        parser.error("give at least two distinct --seeds")
    if args.episode_length is not None and args.episode_length <= 0:
        parser.error("--episode-length must be > 0")
    return args


def load(path: str):
    """The dataset's episodes as udg's `Dataset` and d3rlpy's `ReplayBuffer`, checked to hold
    the same transitions in the same order."""
    import d3rlpy

    from udg.data.dataset import check_finite, dataset_from_episodes
    from udg.data.export import d3rlpy_arrays
    from udg.data.minari_io import find_datasets, load_episodes

    found = find_datasets([path])
    if len(found) != 1:
        sys.exit(f"{path} holds {len(found)} datasets; give one: {', '.join(map(str, found))}")
    env, _, episodes = load_episodes(found[0])
    if env != "halfcheetah":
        sys.exit(f"{found[0]} is a {env} dataset; this benchmark evaluates in {EVAL_ENV}")
    dataset = dataset_from_episodes(found[0].name, env, episodes)
    check_finite(dataset)
    buffer = d3rlpy.dataset.MDPDataset(**d3rlpy_arrays(episodes))

    picked = [
        buffer.transition_picker(ep, i)
        for ep in buffer.episodes
        for i in range(ep.transition_count)
    ]
    same = (
        len(picked) == dataset.num_transitions
        and np.array_equal(np.stack([t.observation for t in picked]), dataset.observations)
        and np.array_equal(np.stack([t.action for t in picked]), dataset.actions)
        and np.array_equal(
            np.stack([t.next_observation for t in picked]), dataset.next_observations
        )
        and np.allclose(
            np.array([t.reward[0] for t in picked]), dataset.rewards, rtol=1e-6, atol=1e-5
        )
        and np.array_equal(np.array([bool(t.terminal) for t in picked]), dataset.terminations)
    )
    if not same:
        sys.exit(f"d3rlpy's transitions of {found[0]} differ from udg's: not a fair comparison")
    return found[0], dataset, buffer


def udg_columns(dataset) -> dict[str, np.ndarray]:
    """The batch columns of `td3bc.update`, float32, for NumPy fancy indexing."""
    return {
        "observations": dataset.observations,
        "actions": dataset.actions,
        "rewards": dataset.rewards.astype(np.float32),
        "next_observations": dataset.next_observations,
        "terminations": dataset.terminations.astype(np.float32),
    }


def sample_udg(columns: dict[str, np.ndarray], rng: np.random.Generator, n: int, batch: int):
    """``n`` uniform batches, every column ``[n, batch, ...]``."""
    index = rng.integers(0, len(columns["rewards"]), size=(n, batch))  # [n, B]
    return {name: values[index] for name, values in columns.items()}


class UdgLearner:
    """udg's TD3+BC behind the loop's three calls: `train(n)`, `update_only(batches)`, `act`."""

    def __init__(self, dataset, config, seed: int):
        import jax

        from udg.offline import model_free, td3bc

        self.jax, self.fns = jax, td3bc.FUNCTIONS  # the jitted entry points
        init_key, self.train_key = jax.random.split(jax.random.key(seed))
        stats = model_free.observation_stats(dataset.observations)
        self.state = td3bc.TD3BC.create(init_key, dataset.obs_dim, dataset.act_dim, config, stats)
        self.columns = udg_columns(dataset)
        self.rng = np.random.default_rng(seed)
        self.batch_size = config.batch_size
        self.dispatches = 0
        self.metrics: dict[str, float] = {}

    def _run(self, batches) -> None:
        key = self.jax.random.fold_in(self.train_key, self.dispatches)
        self.dispatches += 1
        self.state, metrics = self.fns.jit_update_n(self.state, batches, key)
        self.metrics = {k: float(v) for k, v in metrics.items()}  # blocks until done

    def train(self, n: int) -> None:
        self._run(sample_udg(self.columns, self.rng, n, self.batch_size))

    def update_only(self, batches) -> None:
        self._run(batches)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(self.fns.jit_act(self.state, observation[None])[0])


class D3rlpyLearner:
    """d3rlpy's TD3PlusBC behind the same three calls; its own (global, `d3rlpy.seed`)
    randomness samples the batches, as in its `fit`."""

    def __init__(self, dataset, buffer, seed: int):
        import d3rlpy

        from udg.offline import model_free

        d3rlpy.seed(seed)
        mean = dataset.observations.astype(np.float64).mean(axis=0)
        std = dataset.observations.astype(np.float64).std(axis=0)
        assert np.allclose(std + model_free.OBS_STD_EPSILON,
                           model_free.observation_stats(dataset.observations).std)  # fmt: skip
        encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
        config = d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            actor_encoder_factory=encoder,
            critic_encoder_factory=encoder,
            batch_size=256,
            gamma=0.99,
            tau=0.005,
            n_critics=2,
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            alpha=2.5,
            update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
                mean=mean, std=std, eps=model_free.OBS_STD_EPSILON
            ),
        )
        self.algo = config.create(device="cpu:0")
        self.algo.build_with_dataset(buffer)
        self.buffer = buffer
        self.metrics: dict[str, float] = {}

    def train(self, n: int) -> None:
        for _ in range(n):
            self.metrics = self.algo.update(self.buffer.sample_transition_batch(256))

    def update_only(self, batches) -> None:
        for batch in batches:
            self.metrics = self.algo.update(batch)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.algo.predict(observation[None].astype(np.float32))[0]


def train(learner, updates: int, chunk: int, label: str) -> list[float]:
    """Train for ``updates`` updates in chunks; the wall time of each chunk."""
    seconds = []
    for i in range(updates // chunk):
        start = time.perf_counter()
        learner.train(chunk)
        seconds.append(time.perf_counter() - start)
        if (i + 1) % 5 == 0:
            print(f"  {label}: {(i + 1) * chunk} updates, {sum(seconds):.0f} s", flush=True)
    return seconds


def evaluate(policy: Policy, episodes: int, episode_length: int) -> np.ndarray:
    """Undiscounted returns ``[episodes]`` in the plain Gymnasium env, episode i reset with
    seed EVAL_SEED_BASE + i."""
    import gymnasium as gym

    env = gym.make(EVAL_ENV, max_episode_steps=episode_length)
    returns = np.zeros(episodes)
    for i in range(episodes):
        observation, _ = env.reset(seed=EVAL_SEED_BASE + i)
        done = False
        while not done:
            action = np.clip(policy(np.asarray(observation, np.float32)), -1.0, 1.0)
            observation, reward, terminated, truncated, _ = env.step(action)
            returns[i] += reward
            done = terminated or truncated
    env.close()
    return returns


def interleaved_timing(udg, d3, dataset, buffer, args, seed: int) -> dict[str, list[float]]:
    """Seconds per update of each library, its training loop (sampling included) and its
    update alone on pre-sampled NumPy batches, all four interleaved round by round (one
    warm-up round first), so that load from other processes hits them alike."""
    rng = np.random.default_rng(seed)
    n = args.timing_updates
    udg_batches = sample_udg(udg_columns(dataset), rng, n, 256)
    d3_batches = [buffer.sample_transition_batch(256) for _ in range(n)]
    timers = {
        ("udg", "loop"): lambda: udg.train(n),
        ("udg", "update"): lambda: udg.update_only(udg_batches),
        ("d3rlpy", "loop"): lambda: d3.train(n),
        ("d3rlpy", "update"): lambda: d3.update_only(d3_batches),
    }
    times: dict = {key: [] for key in timers}
    for round_ in range(args.timing_rounds + 1):
        for key, run in timers.items():
            start = time.perf_counter()
            run()
            if round_:
                times[key].append((time.perf_counter() - start) / n)
    return times


def mean_std(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.1f} ± {values.std():.1f}"


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def nproc(*flags: str) -> str:
        return subprocess.run(["nproc", *flags], capture_output=True, text=True).stdout.strip()

    return {
        "nproc": f"{nproc('--all')} (`nproc` under this pinning: {nproc()})",
        "cpu": model,
        "affinity": ",".join(map(str, sorted(os.sched_getaffinity(0)))),
    }


def git_short() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent)  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent).stdout.split()[1::2]  # fmt: skip
    dirty_paths = ", ".join(dirty)
    rev = done.stdout.strip() or "unknown"
    return f"{rev} (work tree with uncommitted changes: {dirty_paths})" if dirty else rev


def main() -> int:
    args = parse_args()
    import d3rlpy
    import jax
    import structlog
    import torch

    from udg.offline.td3bc import TD3BCConfig

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    revision = git_short()  # now: the code this process imported, not the tree at its end

    path, dataset, buffer = load(args.dataset)
    lengths = np.diff(dataset.episode_starts)
    episode_length = args.episode_length or int(lengths.max())
    data_returns = dataset.episode_returns()  # [E]
    print(f"dataset {path}: {dataset.num_transitions} transitions, {dataset.num_episodes} "
          f"episodes of {lengths.min()}-{lengths.max()} steps; d3rlpy's transitions equal udg's; "
          f"evaluation: {EVAL_ENV}, {episode_length} steps, {args.eval_episodes} episodes",
          flush=True)  # fmt: skip
    config = TD3BCConfig()  # the paper's defaults, the same as d3rlpy's set above

    results: dict[str, dict] = {"udg": {}, "d3rlpy": {}}
    first = {}
    for seed in args.seeds:
        learners = {
            "d3rlpy": D3rlpyLearner(dataset, buffer, seed),
            "udg": UdgLearner(dataset, config, seed),
        }
        for name, learner in learners.items():
            seconds = train(learner, args.updates, args.chunk, f"seed {seed} {name}")
            returns = evaluate(learner.act, args.eval_episodes, episode_length)
            results[name][seed] = {"chunks": seconds, "returns": returns,
                                   "metrics": dict(learner.metrics)}  # fmt: skip
            steady = 1000 * sum(seconds[1:]) / (args.updates - args.chunk)
            print(f"seed {seed} {name}: {args.updates} updates in {sum(seconds):.0f} s "
                  f"(first chunk {seconds[0]:.1f} s, then {steady:.2f} ms/update); return "
                  f"{returns.mean():.1f} ± {returns.std():.1f}; critic loss "
                  f"{learner.metrics.get('critic_loss', float('nan')):.3f}", flush=True)  # fmt: skip
        if not first:
            first = learners

    timing = interleaved_timing(first["udg"], first["d3rlpy"], dataset, buffer, args,
                                args.seeds[0])  # fmt: skip
    zero = evaluate(lambda o: np.zeros(dataset.act_dim, np.float32), args.eval_episodes,
                    episode_length)  # fmt: skip
    random_rng = np.random.default_rng(args.seeds[0])
    random = evaluate(lambda o: random_rng.uniform(-1, 1, dataset.act_dim).astype(np.float32),
                      args.eval_episodes, episode_length)  # fmt: skip
    total = time.perf_counter() - started

    def loop_ms(name: str) -> float:
        runs = results[name].values()
        return (
            1000
            * sum(sum(r["chunks"][1:]) for r in runs)
            / (len(runs) * (args.updates - args.chunk))
        )

    def seed_returns(name: str) -> list[float]:
        return [float(results[name][s]["returns"].mean()) for s in args.seeds]

    ms = {k: 1000 * float(np.median(v)) for k, v in timing.items()}  # interleaved medians
    loop = {k: loop_ms(k) for k in results}  # during the training runs
    udg_r, d3_r = seed_returns("udg"), seed_returns("d3rlpy")
    return_ok = float(np.mean(udg_r)) >= min(d3_r)
    speeds = {
        "training runs (loop)": loop["d3rlpy"] / loop["udg"],
        "interleaved, loop": ms["d3rlpy", "loop"] / ms["udg", "loop"],
        "interleaved, update only": ms["d3rlpy", "update"] / ms["udg", "update"],
    }
    speed_text = "; ".join(
        f"{k} **{v:.2f}x** ({'holds' if v >= 2 else 'does not hold'})" for k, v in speeds.items()
    )

    seeds_head = " | ".join(f"seed {s}" for s in args.seeds)
    rows = [
        f"| policy | {seeds_head} | mean ± std over seeds | ms/update: training runs (loop) | "
        f"interleaved, loop | interleaved, update only |",
        "|---" * (len(args.seeds) + 5) + "|",
    ]
    for name, label in (("udg", "udg `td3bc`"), ("d3rlpy", "d3rlpy `TD3PlusBC`")):
        cells = " | ".join(f"{r:.1f}" for r in seed_returns(name))
        rows.append(f"| {label} | {cells} | {mean_std(seed_returns(name))} | "
                    f"{loop[name]:.2f} | {ms[name, 'loop']:.2f} | {ms[name, 'update']:.2f} |")  # fmt: skip
    blank = " | ".join("" for _ in args.seeds)
    rows += [
        f"| data: episode return (± over its {dataset.num_episodes} episodes; last 10 "
        f"{data_returns[-10:].mean():.1f}, best {data_returns.max():.1f}) | {blank} | "
        f"{mean_std(data_returns)} | | | |",
        f"| zero action (± over episodes) | {blank} | {mean_std(zero)} | | | |",
        f"| uniform random action (± over episodes) | {blank} | {mean_std(random)} | | | |",
    ]
    versions = (f"JAX {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
                f"({torch.get_num_threads()} thread), d3rlpy {d3rlpy.__version__}, Python "
                f"{platform.python_version()}")  # fmt: skip
    info = machine()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    diag = ["| library | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
            "|---" * (len(args.seeds) + 1) + "|"]  # fmt: skip
    for name in ("udg", "d3rlpy"):
        losses = [results[name][s]["metrics"].get("critic_loss", float("nan")) for s in args.seeds]
        diag.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in losses) + " |")
    text = f"""# TD3+BC parity: udg against d3rlpy

Command: `taskset -c {info["affinity"]} {command}`
(XLA_FLAGS=`{os.environ.get("XLA_FLAGS", "")}`, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")})

- git: `{revision}`; date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;
  machine: nproc {info["nproc"]}, CPU {info["cpu"]}, this process pinned to core(s)
  {info["affinity"]}; {versions}; whole run {total / 60:.1f} min.
- dataset: `{path}` ({dataset.num_transitions} transitions, {dataset.num_episodes} episodes of
  {lengths.max()} steps), the same transitions in both libraries (checked one by one).
- {args.updates} updates per seed, batch 256, the paper's hyperparameters in both; evaluation:
  deterministic policy, {args.eval_episodes} episodes of {episode_length} steps of
  `{EVAL_ENV}` (its own reward), reset seeds {EVAL_SEED_BASE}..{EVAL_SEED_BASE + args.eval_episodes - 1}
  for every row. A seed's return is the mean over its evaluation episodes.

{chr(10).join(rows)}

Time per update. "Loop" is each library's training loop, sampling its batches included (udg:
NumPy indexing and one `jit_update_n` dispatch per chunk of updates; d3rlpy: its `fit` loop,
`sample_transition_batch` + `update` per step, without the logger). "Training runs" is over
the seeds' runs, sequential, the first {args.chunk}-update chunk of each (udg's compilation)
left out. "Interleaved" is the median over {args.timing_rounds} rounds in which the four timers
(each library's loop and its update alone on pre-sampled NumPy batches, conversion included)
ran {args.timing_updates} updates each in turn, after a warm-up round, so that load from other
processes on the machine hits them alike.

- Speed, target udg >= 2x faster per update, d3rlpy / udg: {speed_text}.
- Return: udg {mean_std(udg_r)} against d3rlpy {mean_std(d3_r)} (d3rlpy's range over seeds
  {min(d3_r):.1f} to {max(d3_r):.1f}). Target udg's mean within d3rlpy's range or above:
  **{"holds" if return_ok else "does not hold"}**.

Final critic loss (udg: mean over the last chunk; d3rlpy: the last update):

{chr(10).join(diag)}
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

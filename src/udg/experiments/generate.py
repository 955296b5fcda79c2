"""Stage 1 runner: train K diverse SAC agents and write one dataset per agent.

The imperative shell around the jitted kernels of :mod:`udg.agents.sac` and
:mod:`udg.diversity.wasserstein`: it steps K environments in lockstep rounds of one episode,
rewards each finished episode with ``w_task * r_task + w_div * r_div``, feeds the replay, runs
the population update, and keeps every transition for the datasets. Each round draws its
randomness from ``(seed, round)`` alone and checkpoints are written at round boundaries (the
episodes as append-only chunk files, then the learner state), so a killed run rerun with the
same command continues and produces exactly the datasets of an uninterrupted run. The replay is
not checkpointed: it holds the whole history, which the chunk files already are.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.agents.replay import PopulationReplay
from udg.data.dataset import Episode
from udg.data.episode_arrays import episode_arrays, episodes_from_arrays
from udg.data.minari_io import dataset_id_for, write_dataset
from udg.diversity import wasserstein as wd
from udg.envs.registry import get_env_spec, make_env
from udg.envs.tasks import get_task
from udg.errors import UdgError
from udg.experiments.generate_config import GenerateConfig
from udg.experiments.runs import (
    MANIFEST,
    atomic_savez,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    config_dict,
    git_revision,
    load_npz,
    machine_description,
    open_run,
    read_csv_rows,
    read_json,
)
from udg.experiments.tensorboard import TensorBoardLog

CHECKPOINT = "checkpoint"
REWARD_PARTS = ("reward_task", "reward_diversity")


def _round_seed(seed: int, round_index: int, *more: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, round_index, *more])


class _Timer:
    """Wall time per stage part (env stepping, acting, updates, diversity, writing)."""

    def __init__(self, totals: dict[str, float] | None = None):
        self.totals = defaultdict(float, totals or {})

    def __call__(self, part: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[part] += time.perf_counter() - self.start

        return _Span()


@jax.jit
def _act(agents: sac.SAC, observations, key, t):
    """One action per agent, ``[K, o] -> [K, a]``: one dispatch per environment step (the key
    derivation inside, since every eager op outside a jit costs a dispatch of its own)."""
    return sac.sample_actions(agents, observations[:, None], jax.random.fold_in(key, t))[:, 0]


def update_chunks(total: int, per_call: int) -> list[int]:
    """Scan lengths for ``total`` updates: full chunks of ``per_call``, then the remainder as
    powers of two, largest first (e.g. 50, 50, 32, 4, 1 for 137 of 50). The runner compiles one
    update per length, so at most 1 + ceil(log2(per_call)) are ever compiled whatever the
    episode lengths (early terminations vary them), while a remainder costs at most
    ceil(log2(per_call)) dispatches, not one per update."""
    full, rest = divmod(total, per_call)
    powers = [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]
    return [per_call] * full + powers


class Generator:
    """One stage-1 run in a folder: create or resume, run rounds, write datasets."""

    def __init__(self, config: GenerateConfig, out: Path):
        self.config = config = config.validated()
        self.out = Path(out)
        self.envs = [
            make_env(config.env, max_episode_steps=config.episode_length)
            for _ in range(config.num_agents)
        ]
        space = self.envs[0].observation_space
        self.obs_dim = space.shape[0] + (
            len(config.feature_columns) if config.observe_features else 0
        )  # the agents' input: the observation, then the features when they observe them
        self.act_space = self.envs[0].action_space
        self.act_dim = self.act_space.shape[0]
        self.tasks = [get_task(name) for name in config.task_names] or None
        key = jax.random.key(config.seed)
        self.init_key, self.run_key = jax.random.split(key)
        self.agents = sac.create_population(
            config.sac, self.init_key, config.num_agents, self.obs_dim, self.act_dim
        )
        self.cache = wd.FeatureCache.create(
            config.num_agents, config.episode_length, len(config.feature_columns)
        )
        capacity = (config.rounds + config.final_rollouts) * config.episode_length
        self.replay = PopulationReplay(config.num_agents, capacity, self.obs_dim, self.act_dim)
        self.round = 0
        self.num_chunks = 0
        self.pending: list[list[Episode]] = [[] for _ in range(config.num_agents)]
        self.metrics: list[dict] = []
        self._tensorboard: TensorBoardLog | None = None
        self._tensorboard_rows = 0  # metric rows already in the event files
        self.timer = _Timer()
        self.git_revisions = [git_revision()]
        self.wall_before = 0.0
        self._start = time.perf_counter()
        self._reward_fn = jax.jit(
            lambda key, feats, lengths, cache: wd.diversity_rewards_batch(
                config.diversity, key, feats, lengths, cache, jnp.arange(config.num_agents)
            )
        )
        self._push = jax.jit(wd.push_batch)

    # --- checkpoints -------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / CHECKPOINT

    def _chunk_path(self, index: int) -> Path:
        return self.checkpoint_dir / f"episodes-{index:05d}.npz"

    def save_checkpoint(self) -> None:
        with self.timer("writing"):
            if any(self.pending):
                arrays = {}
                for i, episodes in enumerate(self.pending):
                    for k, v in episode_arrays(episodes).items():
                        arrays[f"agent{i}/{k}"] = v
                atomic_savez(self._chunk_path(self.num_chunks), **arrays)
                self.num_chunks += 1
                self.pending = [[] for _ in range(self.config.num_agents)]
            self._write_metrics()  # before the state: rows past the saved round are dropped
            atomic_savez(
                self.checkpoint_dir / "state.npz",
                agents=np.frombuffer(sac.to_bytes(self.agents), np.uint8),
                cache_features=np.asarray(self.cache.features),
                cache_counts=np.asarray(self.cache.counts),
                cache_pointers=np.asarray(self.cache.pointers),
                round=np.array(self.round),
                num_chunks=np.array(self.num_chunks),
            )
            self._write_manifest(status="running")

    def load_checkpoint(self) -> bool:
        state_path = self.checkpoint_dir / "state.npz"
        if not state_path.exists():
            return False
        state = load_npz(state_path)
        self.agents = sac.from_bytes(self.agents, state["agents"].tobytes())
        self.cache = wd.FeatureCache(
            features=jnp.asarray(state["cache_features"]),
            counts=jnp.asarray(state["cache_counts"]),
            pointers=jnp.asarray(state["cache_pointers"]),
        )
        self.round = int(state["round"])
        self.num_chunks = int(state["num_chunks"])
        for episodes in self.iter_chunks():  # the replay is the whole history: rebuild it
            for i, agent_episodes in enumerate(episodes):
                for episode in agent_episodes:
                    self._add_to_replay(i, episode)
        manifest = read_json(self.out / MANIFEST)
        self.timer = _Timer(manifest.get("timings", {}))
        earlier = manifest.get("git_revisions") or [manifest.get("git_revision", "unknown")]
        self.git_revisions = earlier + [r for r in self.git_revisions if r not in earlier]
        self.wall_before = manifest.get("wall_seconds", 0.0)
        self.load_metrics(self.round)
        self._tensorboard_rows = len(self.metrics)
        return True

    def load_metrics(self, rounds: int | None = None) -> None:
        """Read back the first ``rounds`` rows of ``metrics.csv`` (all when None)."""
        path = self.out / "metrics.csv"
        if path.exists():
            self.metrics = read_csv_rows(path)[:rounds]

    def iter_chunks(self):
        """Each committed chunk as a list (per agent) of episode lists."""
        for index in range(self.num_chunks):
            arrays = load_npz(self._chunk_path(index))
            yield [
                episodes_from_arrays(arrays, f"agent{i}/") for i in range(self.config.num_agents)
            ]

    def _write_metrics(self) -> None:
        if self.metrics:
            atomic_write_csv(self.out / "metrics.csv", self.metrics)
        if self._tensorboard is None:  # opened at the first write, after any resume
            resumed = self._tensorboard_rows * self.config.episode_length
            self._tensorboard = TensorBoardLog(
                self.out / "tensorboard", "env_steps", resume_step=resumed + 1 if resumed else None
            )
        self._tensorboard.write(self.metrics[self._tensorboard_rows :])
        self._tensorboard_rows = len(self.metrics)

    def _write_manifest(self, status: str, extra: dict | None = None) -> None:
        atomic_write_json(
            self.out / MANIFEST,
            {
                "kind": "generate",
                "status": status,
                "config": config_dict(self.config),
                "seed": self.config.seed,
                "git_revision": self.git_revisions[0],
                "git_revisions": self.git_revisions,  # every revision that ran a part of it
                "machine": machine_description(),
                "rounds_done": self.round,
                "env_steps_per_agent": self.round * self.config.episode_length,
                "wall_seconds": self.wall_before + (time.perf_counter() - self._start),
                "timings": dict(self.timer.totals),
                **(extra or {}),
            },
        )

    # --- one round ---------------------------------------------------------------------

    def _agent_inputs(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        """What the agents see of ``[..., obs]`` observations with their info columns (the
        observations themselves, uncopied, unless the agents observe the features)."""
        if not self.config.observe_features:
            return observations
        feats = np.stack([np.asarray(infos[c]) for c in self.config.feature_columns], axis=-1)
        return np.concatenate([observations, feats], axis=-1).astype(np.float32)

    def _add_to_replay(self, agent: int, episode: Episode) -> None:
        inputs = self._agent_inputs(episode.observations, episode.infos)
        self.replay.add(
            agent,
            inputs[:-1],
            episode.actions.astype(np.float32),
            episode.rewards.astype(np.float32),
            inputs[1:],
            episode.terminations.astype(np.float32),
        )

    def run_round(self, learn: bool = True) -> dict:
        """Collect one episode per agent, reward it, store it and (after warm-up) learn."""
        cfg, k, horizon = self.config, self.config.num_agents, self.config.episode_length
        round_key = jax.random.fold_in(self.run_key, self.round)
        act_key, div_key, update_key = jax.random.split(round_key, 3)
        rng = np.random.default_rng(_round_seed(cfg.seed, self.round))
        random_phase = self.round * horizon < cfg.warmup_steps

        obs = np.zeros((k, self.obs_dim), np.float32)
        records = []
        with self.timer("env stepping"):
            for i, env in enumerate(self.envs):
                seed = int(_round_seed(cfg.seed, self.round, i).generate_state(1)[0])
                o, info = env.reset(seed=seed)
                obs[i] = self._agent_inputs(o, info)
                records.append(
                    {
                        "obs": [o],
                        "act": [],
                        "rew": [],
                        "term": [],
                        "trunc": [],
                        "info": {c: [v] for c, v in info.items()},
                    }
                )
        active = np.ones(k, bool)
        for t in range(horizon):
            with self.timer("acting"):
                if random_phase:
                    actions = rng.uniform(
                        self.act_space.low, self.act_space.high, (k, self.act_dim)
                    )
                else:
                    actions = np.asarray(_act(self.agents, obs, act_key, t))
                actions = actions.astype(self.act_space.dtype)
            with self.timer("env stepping"):
                for i in np.flatnonzero(active):
                    o, r, terminated, truncated, info = self.envs[i].step(actions[i])
                    rec = records[i]
                    rec["obs"].append(o)
                    rec["act"].append(actions[i])
                    rec["rew"].append(r)
                    rec["term"].append(terminated)
                    rec["trunc"].append(truncated and not terminated)
                    for c, v in info.items():
                        rec["info"][c].append(v)
                    obs[i] = self._agent_inputs(o, info)
                    if terminated or truncated:
                        active[i] = False
            if not active.any():
                break

        episodes = self._reward_episodes(records, div_key)
        for i, episode in enumerate(episodes):
            self._add_to_replay(i, episode)
            self.pending[i].append(episode)

        row = {"round": self.round, "env_steps": (self.round + 1) * horizon}
        row.update(self._episode_metrics(episodes))
        if learn and not random_phase and cfg.updates_per_step > 0:
            row.update(self._learn(episodes, update_key, rng))
        self.round += 1
        return row

    def _reward_episodes(self, records, div_key) -> list[Episode]:
        cfg, k, horizon = self.config, self.config.num_agents, self.config.episode_length
        lengths = np.array([len(r["act"]) for r in records])
        infos = [{c: np.asarray(v, np.float64) for c, v in r["info"].items()} for r in records]
        diversity = np.zeros((k, horizon))
        self._last_nearest = np.full(k, -1)
        self._last_distance = np.full(k, np.nan)
        if cfg.w_div > 0:
            with self.timer("diversity"):
                feats = np.zeros((k, horizon, len(cfg.feature_columns)), np.float32)
                for i in range(k):
                    cols = np.stack([infos[i][c][1:] for c in cfg.feature_columns], axis=-1)
                    feats[i, : lengths[i]] = cols
                rewards, info = self._reward_fn(div_key, feats, lengths, self.cache)
                diversity = np.asarray(rewards, np.float64)
                self._last_nearest = np.asarray(info["nearest"])
                distances = np.asarray(info["mean_distances"])
                nearest = distances.min(axis=1)  # +inf for self and empty caches
                self._last_distance = np.where(np.isfinite(nearest), nearest, np.nan)
                self.cache = self._push(self.cache, jnp.arange(k), feats, lengths)
        episodes = []
        for i, rec in enumerate(records):
            t = lengths[i]
            actions = np.asarray(rec["act"], np.float32)
            observations = np.asarray(rec["obs"])
            task_reward = np.zeros(t)
            if self.tasks is not None:
                columns = {
                    "observations": observations[:-1],
                    "actions": actions,
                    "next_observations": observations[1:],
                    **{c: v[1:] for c, v in infos[i].items()},
                }
                task_reward = self.tasks[i].reward(columns)
            reward = cfg.w_task * task_reward + cfg.w_div * diversity[i, :t]
            episodes.append(
                Episode(
                    observations=observations,
                    actions=actions,
                    rewards=reward,
                    terminations=np.asarray(rec["term"], bool),
                    truncations=np.asarray(rec["trunc"], bool),
                    infos={
                        **infos[i],
                        "reward_task": np.concatenate([[0.0], task_reward]),
                        "reward_diversity": np.concatenate([[0.0], diversity[i, :t]]),
                    },
                )
            )
        return episodes

    def _episode_metrics(self, episodes: list[Episode]) -> dict:
        row = {}
        for i, e in enumerate(episodes):
            row[f"return_{i}"] = float(np.sum(e.rewards))
            row[f"diversity_{i}"] = float(np.mean(e.infos["reward_diversity"][1:]))
            row[f"task_return_{i}"] = float(np.sum(e.infos["reward_task"][1:]))
            row[f"nearest_{i}"] = int(self._last_nearest[i])
            row[f"nearest_distance_{i}"] = float(self._last_distance[i])
        return row

    def _learn(self, episodes: list[Episode], key, rng: np.random.Generator) -> dict:
        cfg = self.config
        steps = max(len(e) for e in episodes)
        total = int(round(cfg.updates_per_step * steps))
        metrics = {}
        with self.timer("updates"):
            for call, n in enumerate(update_chunks(total, cfg.updates_per_call)):
                batches = self.replay.sample(rng, cfg.sac.batch_size, n)
                self.agents, metrics = sac.jit_population_update_n(
                    self.agents, batches, jax.random.fold_in(key, call)
                )
            metrics = {k: float(np.mean(v)) for k, v in metrics.items()}
        return metrics

    # --- the whole run -----------------------------------------------------------------

    def run(self, on_round: Callable[[int, dict], None] | None = None) -> list[Path]:
        """Run (or finish) the stage; return the dataset folders."""
        cfg = self.config
        total_rounds = cfg.rounds + cfg.final_rollouts
        while self.round < total_rounds:
            row = self.run_round(learn=self.round < cfg.rounds)
            self.metrics.append(row)
            if on_round is not None:
                on_round(self.round, row)
            if self.round % cfg.checkpoint_every == 0 or self.round == total_rounds:
                self.save_checkpoint()
        return self.write_datasets()

    def write_datasets(self) -> list[Path]:
        cfg = self.config
        per_agent: list[list[Episode]] = [[] for _ in range(cfg.num_agents)]
        for chunk in self.iter_chunks():
            for i, episodes in enumerate(chunk):
                per_agent[i].extend(episodes)
        paths = []
        with self.timer("writing"):
            for i, episodes in enumerate(per_agent):
                paths.append(
                    write_dataset(
                        episodes,
                        self.out / "datasets",
                        dataset_id_for(cfg.env, f"agent-{i}"),
                        cfg.env,
                        max_episode_steps=cfg.episode_length,
                        algorithm="udg-wurl-sac" if cfg.w_div > 0 else "sac",
                        description=f"agent {i} of {cfg.num_agents}: its whole replay history",
                        udg_metadata={
                            "kind": "generate",
                            "agent": i,
                            "run": str(self.out),
                            "w_task": cfg.w_task,
                            "w_div": cfg.w_div,
                            "task": cfg.task_names[i] if cfg.task_names else None,
                        },
                        overwrite=True,  # a rerun after a crash mid-write replaces partial sets
                    )
                )
        atomic_write_bytes(self.out / "agents.msgpack", sac.to_bytes(self.agents))
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._write_manifest(status="complete", extra={"datasets": [str(p) for p in paths]})
        return paths


def run_generate(
    config: GenerateConfig, out: Path, on_round: Callable[[int, dict], None] | None = None
) -> tuple[Generator, list[Path]]:
    """Create, resume or extend the run in ``out`` and run it to the end.

    A run asked for more ``steps`` than it holds continues from its last checkpoint; without
    final rollouts its datasets then equal those of a run made with the larger ``steps``."""
    config = config.validated()
    defaults = config_dict(GenerateConfig())
    manifest = open_run(out, "generate", config_dict(config), defaults, may_grow=("steps",))
    stored_steps = (manifest or {}).get("config", {}).get("steps", config.steps)
    if stored_steps < config.steps and config.final_rollouts > 0:
        raise UdgError(
            f"{out} holds a run of {stored_steps} steps whose datasets end with final-policy "
            "rollouts; it cannot be extended (use another --out)"
        )
    generator = Generator(config, out)
    if stored_steps == config.steps and (manifest or {}).get("status") == "complete":
        generator.load_metrics()
        return generator, [Path(p) for p in manifest.get("datasets", [])]
    if not generator.load_checkpoint():
        generator._write_manifest(status="running")
    return generator, generator.run(on_round)


def round_summary(config: GenerateConfig, row: dict) -> dict[str, float | str]:
    """A progress bar's metrics for one round's metrics row: mean and worst agent return, and
    the mean W1 to the nearest other agent ("-" without diversity or before the caches fill)."""
    returns = [row[f"return_{i}"] for i in range(config.num_agents)]
    distance = np.array(
        [row.get(f"nearest_distance_{i}", np.nan) for i in range(config.num_agents)]
    )
    distance = distance[np.isfinite(distance)]
    return {
        "ret": float(np.mean(returns)),
        "min_ret": float(np.min(returns)),
        "nearest_w": float(distance.mean()) if config.w_div > 0 and distance.size else "-",
    }


def plot_run_coverage(run: Path, last: int | None = None, out: Path | None = None) -> Path:
    """Draw the coverage figure of a finished generate run from its datasets: into ``out``
    (default ``RUN/coverage.png``), with each agent's last ``last`` episodes bold (default:
    its last 20 %)."""
    from udg.data.minari_io import find_datasets, load_dataset
    from udg.experiments.plots import plot_coverage

    if last is not None and last < 1:
        raise UdgError(f"--last must be at least 1, got {last}")
    run = Path(run)
    manifest = read_json(run / MANIFEST)
    if manifest.get("kind") != "generate" or manifest.get("status") != "complete":
        raise UdgError(f"{run} is not a finished generate run")
    config = manifest["config"]
    features = config.get("features") or list(get_env_spec(config["env"]).feature_columns)
    if len(features) < 2:
        raise UdgError("the coverage figure needs at least two feature columns")
    trajectories, labels = [], []
    for path in find_datasets([run / "datasets"]):
        data = load_dataset(path)
        feats = np.stack([data.infos[c] for c in features[:2]], axis=-1)
        trajectories.append([feats[data.episode(e)] for e in range(data.num_episodes)])
        labels.append(path.name.removesuffix("-v0"))
    title = f"{config['env']}: {config['num_agents']} agents, {manifest['env_steps_per_agent']} steps each"
    out = run / "coverage.png" if out is None else Path(out)
    return plot_coverage(trajectories, labels, features[:2], out, title=title, last=last)

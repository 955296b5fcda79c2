"""Stage 1 runner: train K diverse SAC agents and write one dataset per agent.

A loop over pure pieces: each round :func:`udg.data.collect.run_episodes` plays one episode per
agent in lockstep, :func:`score_episodes` rewards each with ``w_task * r_task + w_div * r_div``
(the jitted Wasserstein reward of :mod:`udg.diversity.wasserstein`), the episodes enter the
replay and the chunk buffer, and :func:`learn` runs the jitted population update of
:mod:`udg.agents.sac`. Each round draws its randomness from the named streams of
``(seed, round)`` alone (:mod:`udg.seeds`), and checkpoints are written at round boundaries (the
episodes as append-only chunk files, then the learner state), so a killed run rerun with the
same command continues and produces exactly the datasets of an uninterrupted run. The replay is
not checkpointed: it holds the whole history, which the chunk files already are.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udg.agents import sac
from udg.agents.replay import PopulationReplay
from udg.data.collect import run_episodes, timed
from udg.data.dataset import Dataset, Episode
from udg.data.episode_arrays import episode_arrays, episodes_from_arrays
from udg.data.minari_io import dataset_id_for, write_dataset
from udg.diversity import wasserstein as wd
from udg.envs.registry import env_walls, get_env_spec, make_env
from udg.envs.tasks import TaskSpec, get_task
from udg.errors import UdgError
from udg.experiments import tensorboard
from udg.experiments.generate_config import GenerateConfig
from udg.experiments.runs import (
    MANIFEST,
    atomic_savez,
    atomic_write_bytes,
    config_dict,
    git_revision,
    load_npz,
    load_run,
    load_state,
    open_run,
    read_json,
    read_rows,
    release_folder,
    save_state,
    write_manifest,
    write_rows,
)
from udg.limits import check_memory
from udg.seeds import int_seed, jax_key, numpy_rng

CHECKPOINT = "checkpoint"
STATE = f"{CHECKPOINT}/state.npz"
METRICS = "metrics.csv"
REWARD_PARTS = ("reward_task", "reward_diversity")


@dataclasses.dataclass
class Stage1Run:
    """Everything one stage-1 run holds between rounds (a record; the functions below act)."""

    config: GenerateConfig
    out: Path
    envs: list
    obs_dim: int  # the agents' input: the observation, then the features when they observe them
    tasks: list[TaskSpec] | None
    agents: sac.SAC  # every leaf [K, ...]
    cache: wd.FeatureCache
    replay: PopulationReplay
    round: int = 0
    num_chunks: int = 0
    pending: list[list[Episode]] = dataclasses.field(default_factory=list)  # [K] unsaved
    metrics: list[dict] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    git_revisions: list[str] = dataclasses.field(default_factory=lambda: [git_revision()])
    wall_before: float = 0.0  # seconds spent by earlier attempts
    started: float = dataclasses.field(default_factory=time.perf_counter)
    board: object = None  # the TensorBoard writer, opened at the first checkpoint
    board_rows: int = 0  # metric rows already in the event files


@jax.jit
def _act(agents: sac.SAC, observations, key, t):
    """One action per agent, ``[K, o] -> [K, a]``: one dispatch per environment step (the key
    derivation inside, since every eager op outside a jit costs a dispatch of its own)."""
    return sac.sample_actions(agents, observations[:, None], jax.random.fold_in(key, t))[:, 0]


_diversity_rewards = jax.jit(wd.diversity_rewards_batch, static_argnums=0)
_push = jax.jit(wd.push_batch)


def update_chunks(total: int, per_call: int) -> list[int]:
    """Scan lengths for ``total`` updates: full chunks of ``per_call``, then the remainder as
    powers of two, largest first (e.g. 50, 50, 32, 4, 1 for 137 of 50). The runner compiles one
    update per length, so at most 1 + ceil(log2(per_call)) are ever compiled whatever the
    episode lengths (early terminations vary them), while a remainder costs at most
    ceil(log2(per_call)) dispatches, not one per update."""
    full, rest = divmod(total, per_call)
    powers = [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]
    return [per_call] * full + powers


def memory_estimate(config: GenerateConfig) -> int:
    """Bytes a run of ``config`` holds at its peak, from its shapes: the replay (the whole
    history, float32), the same history again as episodes while the datasets are written
    (float64 infos included), the feature caches and the agents' parameters with Adam's
    moments and the target critics, and the diversity reward's largest intermediate: each
    agent's episode against every agent's cache, along M directions, about f + 5 floats per
    (agent, cache, direction, step) (measured: XLA asks for 720 GB at K = 10 000, T = 50,
    M = 5, f = 2, which this term gives to 3 %)."""
    from udg.data.minari_io import env_shapes

    (obs,), (act,) = env_shapes(config.env)
    k, steps = config.num_agents, (config.rounds + config.final_rollouts) * config.episode_length
    inputs = obs + (len(config.feature_columns) if config.observe_features else 0)
    replay = k * steps * (2 * inputs + act + 2) * 4
    episodes = k * steps * (obs + act + 3 + 2 * len(get_env_spec(config.env).info_columns)) * 8
    cache = k * config.episode_length * len(config.feature_columns) * 4
    widths = [inputs + act, *config.sac.hidden_dims, 2 * act]
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    f, m = len(config.feature_columns), config.diversity.num_directions
    pairwise = k * k * m * config.episode_length * (f + 5) * 4
    return replay + episodes + cache + pairwise + k * params * 4 * 4 * 3  # actor + 2 critics, x4


def check_generate_memory(config: GenerateConfig) -> None:
    """Refuse a run of ``config`` whose :func:`memory_estimate` exceeds the machine's memory."""
    check_memory(
        memory_estimate(config),
        f"a run of {config.num_agents} agents x {config.steps} steps (episodes of "
        f"{config.episode_length})",
        "use fewer agents or steps",
    )


def create_run(config: GenerateConfig, out: Path) -> Stage1Run:
    """A fresh stage-1 run of ``config`` in ``out``: environments, agents, empty caches."""
    config = config.validated()
    envs = [
        make_env(config.env, max_episode_steps=config.episode_length)
        for _ in range(config.num_agents)
    ]
    features = len(config.feature_columns) if config.observe_features else 0
    obs_dim = envs[0].observation_space.shape[0] + features
    act_dim = envs[0].action_space.shape[0]
    capacity = (config.rounds + config.final_rollouts) * config.episode_length
    return Stage1Run(
        config=config,
        out=Path(out),
        envs=envs,
        obs_dim=obs_dim,
        tasks=[get_task(name) for name in config.task_names] or None,
        agents=sac.create_population(
            config.sac, jax_key(config.seed, "init"), config.num_agents, obs_dim, act_dim
        ),
        cache=wd.FeatureCache.create(
            config.num_agents, config.episode_length, len(config.feature_columns)
        ),
        replay=PopulationReplay(config.num_agents, capacity, obs_dim, act_dim),
        pending=[[] for _ in range(config.num_agents)],
    )


# --- checkpoints -------------------------------------------------------------------------


def _chunk_path(run: Stage1Run, index: int) -> Path:
    return run.out / CHECKPOINT / f"episodes-{index:05d}.npz"


def save_checkpoint(run: Stage1Run) -> None:
    """Append the pending episodes as a chunk file, then write metrics, state and manifest."""
    with timed(run.timings, "writing"):
        if any(run.pending):
            arrays = {}
            for i, episodes in enumerate(run.pending):
                for k, v in episode_arrays(episodes).items():
                    arrays[f"agent{i}/{k}"] = v
            atomic_savez(_chunk_path(run, run.num_chunks), **arrays)
            run.num_chunks += 1
            run.pending = [[] for _ in range(run.config.num_agents)]
        _write_metrics(run)  # before the state: rows past the saved round are dropped
        save_state(
            run.out,
            STATE,
            agents=np.frombuffer(sac.to_bytes(run.agents), np.uint8),
            cache_features=np.asarray(run.cache.features),
            cache_counts=np.asarray(run.cache.counts),
            cache_pointers=np.asarray(run.cache.pointers),
            round=np.array(run.round),
            num_chunks=np.array(run.num_chunks),
        )
        _write_manifest(run, status="running")


def load_checkpoint(run: Stage1Run) -> bool:
    """Restore ``run`` from its folder's last checkpoint; False when there is none."""
    state = load_state(run.out, STATE)
    if state is None:
        return False
    run.agents = sac.from_bytes(run.agents, state["agents"].tobytes())
    run.cache = wd.FeatureCache(
        features=jnp.asarray(state["cache_features"]),
        counts=jnp.asarray(state["cache_counts"]),
        pointers=jnp.asarray(state["cache_pointers"]),
    )
    run.round = int(state["round"])
    run.num_chunks = int(state["num_chunks"])
    for episodes in iter_chunks(run):  # the replay is the whole history: rebuild it
        for i, agent_episodes in enumerate(episodes):
            for episode in agent_episodes:
                _add_to_replay(run, i, episode)
    manifest = read_json(run.out / MANIFEST)
    run.timings = dict(manifest.get("timings", {}))
    earlier = manifest.get("git_revisions") or [manifest.get("git_revision", "unknown")]
    run.git_revisions = earlier + [r for r in run.git_revisions if r not in earlier]
    run.wall_before = manifest.get("wall_seconds", 0.0)
    run.metrics = [row for row in read_metrics(run) if row["round"] < run.round]
    run.board_rows = len(run.metrics)
    return True


def iter_chunks(run: Stage1Run):
    """Each committed chunk as a list (per agent) of episode lists."""
    for index in range(run.num_chunks):
        arrays = load_npz(_chunk_path(run, index))
        yield [episodes_from_arrays(arrays, f"agent{i}/") for i in range(run.config.num_agents)]


def _write_metrics(run: Stage1Run) -> None:
    write_rows(run.out, METRICS, run.metrics)
    if run.board is None:  # opened at the first write, after any resume
        # A resumed run purges every event of the killed one and writes its rows again: the
        # killed writer may have lost events it still had queued (flush does not drain them).
        run.board = tensorboard.open_log(run.out / "tensorboard", 0 if run.board_rows else None)
        run.board_rows = 0
    tensorboard.write_rows(run.board, run.metrics[run.board_rows :], "env_steps")
    run.board_rows = len(run.metrics)


def _write_manifest(run: Stage1Run, status: str, **extra) -> None:
    write_manifest(
        run.out,
        "generate",
        status,
        config_dict(run.config),
        seed=run.config.seed,
        git_revision=run.git_revisions[0],
        git_revisions=run.git_revisions,  # every revision that ran a part of it
        rounds_done=run.round,
        env_steps_per_agent=run.round * run.config.episode_length,
        wall_seconds=run.wall_before + (time.perf_counter() - run.started),
        timings=dict(run.timings),
        **extra,
    )


# --- one round ---------------------------------------------------------------------------


def agent_inputs(config: GenerateConfig, observations: np.ndarray, infos: dict) -> np.ndarray:
    """What the agents see of ``[..., obs]`` observations with their info columns: the
    observations, then the diversity features when the agents observe them."""
    if not config.observe_features:
        return np.asarray(observations, np.float32)
    feats = np.stack([np.asarray(infos[c]) for c in config.feature_columns], axis=-1)
    return np.concatenate([observations, feats], axis=-1).astype(np.float32)


def _add_to_replay(run: Stage1Run, agent: int, episode: Episode) -> None:
    inputs = agent_inputs(run.config, episode.observations, episode.infos)
    run.replay.add(
        agent,
        inputs[:-1],
        episode.actions.astype(np.float32),
        episode.rewards.astype(np.float32),
        inputs[1:],
        episode.terminations.astype(np.float32),
    )


def play_round(run: Stage1Run) -> list[Episode]:
    """One episode per agent, in lockstep: uniformly random actions during the warm-up, then
    the agents' own samples. Returns the episodes as the environments scored them."""
    cfg, r = run.config, run.round
    if r * cfg.episode_length < cfg.warmup_steps:
        space, rng = run.envs[0].action_space, numpy_rng(cfg.seed, "actions", r)
        shape = (cfg.num_agents, space.shape[0])
        policy = lambda inputs, t: rng.uniform(space.low, space.high, shape)  # noqa: E731
    else:
        key = jax_key(cfg.seed, "actions", r)
        policy = lambda inputs, t: np.asarray(_act(run.agents, inputs, key, t))  # noqa: E731
    return run_episodes(
        run.envs,
        policy,
        [int_seed(cfg.seed, "env_reset", r, i) for i in range(cfg.num_agents)],
        observe=lambda obs, info: agent_inputs(cfg, obs, info),
        timings=run.timings,
    )


def diversity_rewards(
    config: GenerateConfig, cache: wd.FeatureCache, episodes: list[Episode], key
) -> tuple[np.ndarray, dict, wd.FeatureCache]:
    """WURL's reward of each agent's episode against the nearest other agent's cache, ``[K, T]``,
    with the nearest agent and its W1 per agent, and the caches with the episodes pushed."""
    k, horizon = config.num_agents, config.episode_length
    lengths = np.array([len(e) for e in episodes])
    if config.w_div == 0:
        return (
            np.zeros((k, horizon)),
            {"nearest": np.full(k, -1), "distance": np.full(k, np.nan)},
            cache,
        )
    feats = np.zeros((k, horizon, len(config.feature_columns)), np.float32)  # [K, T, f]
    for i, e in enumerate(episodes):
        feats[i, : lengths[i]] = np.stack([e.infos[c][1:] for c in config.feature_columns], -1)
    rewards, info = _diversity_rewards(config.diversity, key, feats, lengths, cache, jnp.arange(k))
    nearest = np.asarray(info["mean_distances"]).min(axis=1)  # +inf for self and empty caches
    summary = {
        "nearest": np.asarray(info["nearest"]),
        "distance": np.where(np.isfinite(nearest), nearest, np.nan),
    }
    return np.asarray(rewards, np.float64), summary, _push(cache, jnp.arange(k), feats, lengths)


def score_episodes(
    config: GenerateConfig, tasks: list[TaskSpec] | None, episodes: list[Episode], diversity
) -> list[Episode]:
    """The episodes rewarded with ``w_task * r_task + w_div * r_div`` (``diversity``: ``[K, T]``),
    both parts kept as the info columns of :data:`REWARD_PARTS`."""
    scored = []
    for i, episode in enumerate(episodes):
        t = len(episode)
        task_reward = np.zeros(t) if tasks is None else tasks[i].reward(episode.columns())
        reward = config.w_task * task_reward + config.w_div * diversity[i, :t]
        infos = {
            **episode.infos,
            "reward_task": np.concatenate([[0.0], task_reward]),
            "reward_diversity": np.concatenate([[0.0], diversity[i, :t]]),
        }
        scored.append(dataclasses.replace(episode, rewards=reward, infos=infos))
    return scored


def learn(run: Stage1Run, num_steps: int) -> dict:
    """``updates_per_step * num_steps`` population updates on replay batches; mean metrics."""
    cfg = run.config
    total = int(round(cfg.updates_per_step * num_steps))
    key, rng = jax_key(cfg.seed, "updates", run.round), numpy_rng(cfg.seed, "replay", run.round)
    metrics = {}
    with timed(run.timings, "updates"):
        for call, n in enumerate(update_chunks(total, cfg.updates_per_call)):
            batches = run.replay.sample(rng, cfg.sac.batch_size, n)
            run.agents, metrics = sac.jit_population_update_n(
                run.agents, batches, jax.random.fold_in(key, call)
            )
        return {k: float(np.mean(v)) for k, v in metrics.items()}


def run_round(run: Stage1Run, learn_after: bool = True) -> dict:
    """Play, score, store and (after the warm-up) learn from one round; its metrics row."""
    cfg = run.config
    random_phase = run.round * cfg.episode_length < cfg.warmup_steps
    played = play_round(run)
    with timed(run.timings, "diversity"):
        diversity, nearest, run.cache = diversity_rewards(
            cfg, run.cache, played, jax_key(cfg.seed, "diversity", run.round)
        )
    episodes = score_episodes(cfg, run.tasks, played, diversity)
    for i, episode in enumerate(episodes):
        _add_to_replay(run, i, episode)
        run.pending[i].append(episode)
    row = {"round": run.round, "env_steps": (run.round + 1) * cfg.episode_length}
    for i, e in enumerate(episodes):
        row[f"return_{i}"] = float(np.sum(e.rewards))
        row[f"diversity_{i}"] = float(np.mean(e.infos["reward_diversity"][1:]))
        row[f"task_return_{i}"] = float(np.sum(e.infos["reward_task"][1:]))
        row[f"nearest_{i}"] = int(nearest["nearest"][i])
        row[f"nearest_distance_{i}"] = float(nearest["distance"][i])
    if learn_after and not random_phase and cfg.updates_per_step > 0:
        row.update(learn(run, max(len(e) for e in episodes)))
    run.round += 1
    return row


# --- the whole run -----------------------------------------------------------------------


def run_stage(run: Stage1Run, on_round: Callable[[int, dict], None] | None = None) -> list[Path]:
    """Run (or finish) the stage; return the dataset folders."""
    cfg = run.config
    total_rounds = cfg.rounds + cfg.final_rollouts
    while run.round < total_rounds:
        row = run_round(run, learn_after=run.round < cfg.rounds)
        run.metrics.append(row)
        if on_round is not None:
            on_round(run.round, row)
        if run.round % cfg.checkpoint_every == 0 or run.round == total_rounds:
            save_checkpoint(run)
    return write_datasets(run)


def write_datasets(run: Stage1Run) -> list[Path]:
    """One Minari dataset per agent from the chunk files; then the agents and the manifest."""
    cfg = run.config
    per_agent: list[list[Episode]] = [[] for _ in range(cfg.num_agents)]
    for chunk in iter_chunks(run):
        for i, episodes in enumerate(chunk):
            per_agent[i].extend(episodes)
    paths = []
    with timed(run.timings, "writing"):
        for i, episodes in enumerate(per_agent):
            paths.append(
                write_dataset(
                    episodes,
                    run.out / "datasets",
                    dataset_id_for(cfg.env, f"agent-{i}"),
                    cfg.env,
                    max_episode_steps=cfg.episode_length,
                    algorithm="udg-wurl-sac" if cfg.w_div > 0 else "sac",
                    description=f"agent {i} of {cfg.num_agents}: its whole replay history",
                    udg_metadata={
                        "kind": "generate",
                        "agent": i,
                        "run": str(run.out),
                        "w_task": cfg.w_task,
                        "w_div": cfg.w_div,
                        "task": cfg.task_names[i] if cfg.task_names else None,
                    },
                    overwrite=True,  # a rerun after a crash mid-write replaces partial sets
                )
            )
    atomic_write_bytes(run.out / "agents.msgpack", sac.to_bytes(run.agents))
    tensorboard.close(run.board)  # every event written before the run is complete
    run.board = None
    _write_manifest(run, status="complete", datasets=[str(p) for p in paths])
    return paths


def run_generate(
    config: GenerateConfig, out: Path, on_round: Callable[[int, dict], None] | None = None
) -> tuple[Stage1Run, list[Path]]:
    """Create, resume or extend the run in ``out`` and run it to the end.

    A run asked for more ``steps`` than it holds continues from its last checkpoint; without
    final rollouts its datasets then equal those of a run made with the larger ``steps``."""
    config = config.validated()
    check_generate_memory(config)  # before the run folder is made
    defaults = config_dict(GenerateConfig())
    manifest = open_run(out, "generate", config_dict(config), defaults, may_grow=("steps",))
    try:
        return _run_opened(config, out, manifest, on_round)
    finally:
        release_folder(out)  # the run is done (or stopped): another process may go on with it


def _run_opened(
    config: GenerateConfig, out: Path, manifest: dict | None, on_round
) -> tuple[Stage1Run, list[Path]]:
    stored_steps = (manifest or {}).get("config", {}).get("steps", config.steps)
    if stored_steps < config.steps and config.final_rollouts > 0:
        raise UdgError(
            f"{out} holds a run of {stored_steps} steps whose datasets end with final-policy "
            "rollouts; it cannot be extended (use another --out)"
        )
    run = create_run(config, out)
    if stored_steps == config.steps and (manifest or {}).get("status") == "complete":
        run.metrics = read_metrics(run)
        return run, [Path(p) for p in manifest.get("datasets", [])]
    if not load_checkpoint(run):
        _write_manifest(run, status="running")
    try:
        return run, run_stage(run, on_round)
    finally:  # also when stopped: the writer's thread ends before the interpreter does
        tensorboard.close(run.board)
        run.board = None


def read_metrics(run: Stage1Run) -> list[dict]:
    """The run's ``metrics.csv`` rows, each checked to hold the round and every agent's return
    (a damaged file is one line, not a KeyError later)."""
    rows = read_rows(run.out, METRICS)
    needed = ["round", *(f"return_{i}" for i in range(run.config.num_agents))]
    for row in rows:
        missing = [c for c in needed if c not in row]
        if missing:
            raise UdgError(
                f"{run.out / METRICS} is damaged: a row lacks {', '.join(missing[:3])}; restore "
                "it or delete the run folder to train again"
            )
    return rows


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


def plot_run_coverage(
    run: Path,
    last: int | None = None,
    out: Path | None = None,
    loaded: dict[Path, Dataset] | None = None,
) -> Path:
    """Draw the coverage figure of a finished generate run from its datasets: into ``out``
    (default ``RUN/coverage.png``), with each agent's last ``last`` episodes bold (default:
    its last 20 %). ``loaded``: datasets read before, by folder (those it reads are added)."""
    from udg.data.minari_io import find_datasets, load_datasets
    from udg.experiments.plots import plot_coverage

    if last is not None and last < 1:
        raise UdgError(f"--last must be at least 1, got {last}")
    run = Path(run)
    folder = load_run(run)  # the one manifest reader: a malformed manifest is one line
    if folder.kind != "generate" or folder.status != "complete":
        raise UdgError(f"{run} is not a finished generate run")
    config = folder.config
    manifest = read_json(run / MANIFEST)
    features = config.get("features") or list(get_env_spec(config["env"]).feature_columns)
    if len(features) < 2:
        raise UdgError("the coverage figure needs at least two feature columns")
    trajectories, labels = [], []
    paths = find_datasets([run / "datasets"])
    for path, data in zip(paths, load_datasets(paths, loaded), strict=True):
        trajectories.append(data.feature_episodes(features[:2]))
        labels.append(path.name.removesuffix("-v0"))
    title = f"{config['env']}: {config['num_agents']} agents, {manifest['env_steps_per_agent']} steps each"
    out = run / "coverage.png" if out is None else Path(out)
    default = list(get_env_spec(config["env"]).feature_columns[:2])
    walls = env_walls(config["env"]) if list(features[:2]) == default else ()
    return plot_coverage(
        trajectories, labels, features[:2], out, title=title, last=last, walls=walls
    )

"""Reading and writing datasets as Minari datasets, atomically.

Every buffer UDG writes is a standard Minari dataset (HDF5 storage) under a root folder, at
``<root>/<dataset_id>`` with ids like ``udg/point/agent-3-v0``, so ``minari.load_dataset`` reads
it with ``MINARI_DATASETS_PATH=<root>``. A dataset is first written under a hidden temporary
folder of the same root and then renamed into place, so an interrupted write never leaves a
half-written dataset. Loading accepts any Minari dataset of a known environment (UDG's own ids or
Gymnasium's, e.g. ``Ant-v5``) and turns every failure into one clear :class:`UdgError` line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from udg.data.dataset import Dataset, Episode, check_finite, dataset_from_episodes
from udg.envs.registry import env_name_for_gym_id, get_env_spec, make_env
from udg.errors import UdgError
from udg.files import locked_folder
from udg.limits import size_text
from udg.provenance import Authorship, default_authorship, requirements

METADATA_FILE = "metadata.json"
DATA_FILE = "main_data.hdf5"
"""Minari's HDF5 file of a dataset's episodes, beside its metadata in ``data/``."""


@contextlib.contextmanager
def _minari_root(root: Path):
    """Point Minari at ``root`` for the duration (Minari reads the root from the environment)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def dataset_id_for(env: str, name: str, version: int = 0) -> str:
    """UDG's Minari id of a buffer: ``udg/<env>/<name>-v<version>``."""
    return f"udg/{env}/{name}-v{version}"


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def check_dataset_name(name: str, flag: str = "--name") -> str:
    """A dataset name as its Minari id holds it (one path component: letters, digits, ``_``,
    ``.``, ``-``), or a :class:`UdgError` saying what is accepted."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise UdgError(
            f"{flag} {name!r}: a dataset name is 1-200 letters, digits, '_', '.' or '-' "
            "(no '/', '..' or spaces), starting with a letter or digit"
        )
    return name


def write_dataset(
    episodes: Sequence[Episode],
    root: str | Path,
    dataset_id: str,
    env: str,
    *,
    max_episode_steps: int | None = None,
    algorithm: str = "udg",
    description: str = "",
    udg_metadata: Mapping | None = None,
    overwrite: bool = False,
    authorship: Authorship | None = None,
    ref_scores: tuple[float, float] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``<root>/<dataset_id>``; returns its folder.

    Its metadata is complete for Minari: author, code permalink (``authorship``, default
    :func:`~udg.provenance.default_authorship`), requirements and evaluation env
    (:func:`minari_provenance`), and ``ref_scores`` = (random policy, expert) returns for
    Minari's normalised score, where they were measured. ``extra_files`` (name -> content) go
    into the dataset's folder beside Minari's ``data/``, moved into place with it."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise UdgError(
            f"malformed dataset id {dataset_id!r} (expected namespace/name-vN)"
        ) from None
    if not episodes:
        raise UdgError(f"refusing to write dataset {dataset_id} with no episodes")
    for episode in episodes:
        episode.validate()
    root = Path(root).resolve()  # Minari joins relative roots twice
    target = root / dataset_id
    if target.exists() and not overwrite:
        raise UdgError(f"dataset {target} exists already; choose another id or folder")
    create = {
        "algorithm_name": algorithm,
        "description": description or f"UDG dataset {dataset_id}",
        "data_format": "hdf5",
        **minari_provenance(env, max_episode_steps, authorship),
    }
    if ref_scores is not None:
        create["ref_min_score"], create["ref_max_score"] = map(float, ref_scores)
    _check_room(root, episodes, target)
    with locked_folder(root, "datasets into"):  # one writer per root: check, write, move
        return _write_locked(
            buffers_from(episodes),
            root,
            dataset_id,
            env,
            overwrite=overwrite,
            max_episode_steps=max_episode_steps,
            create=create,
            udg_metadata=dict(udg_metadata or {}, env=env),
            extra_files=extra_files or {},
        )


def episodes_disk_bytes(episodes: Sequence[Episode]) -> int:
    """An upper estimate of the disk ``episodes`` take as a Minari dataset: their arrays (HDF5
    stores them as they are), each episode's group and 10 % besides, and the metadata files."""
    arrays = sum(
        e.observations.nbytes
        + e.actions.nbytes
        + e.rewards.nbytes
        + e.terminations.nbytes
        + e.truncations.nbytes
        + sum(np.asarray(v).nbytes for v in e.infos.values())
        for e in episodes
    )
    return int(1.1 * (arrays + len(episodes) * EPISODE_BYTES)) + 2**20


def _check_room(root: Path, episodes: Sequence[Episode], target: Path) -> None:
    """Refuse a write the disk cannot hold, before it starts: HDF5 met with a full disk
    halfway through a file floods stderr and may crash the process (h5py cannot recover)."""
    ancestor = root
    while not ancestor.exists():
        ancestor = ancestor.parent
    need, free = episodes_disk_bytes(episodes), shutil.disk_usage(ancestor).free
    if free < need:
        raise UdgError(
            f"dataset {target} needs about {size_text(need)} of disk and {ancestor} has "
            f"{size_text(free)} free; free space or choose another --out, then rerun"
        )


def minari_provenance(
    env: str, max_episode_steps: int | None, authorship: Authorship | None = None
) -> dict:
    """The arguments of Minari's ``create_dataset_from_buffers`` that say where a dataset of
    env ``env`` comes from: author, contact, code permalink, requirements, and the env to
    evaluate in: the plain Gymnasium env where one holds the same dynamics (``Ant-v5``,
    ``HalfCheetah-v5``), so that evaluation works without udg, else udg's own."""
    import dataclasses

    import gymnasium as gym

    who = authorship or default_authorship()
    spec = get_env_spec(env)
    eval_id = spec.foreign_gym_ids[0] if spec.foreign_gym_ids else spec.gym_id
    eval_spec = gym.spec(eval_id)
    eval_spec = dataclasses.replace(
        eval_spec, max_episode_steps=max_episode_steps or spec.max_episode_steps
    )
    return {
        "author": who.author,
        "author_email": who.author_email,
        "code_permalink": who.code_permalink,
        "requirements": requirements(env),
        "eval_env": eval_spec,
    }


def buffers_from(episodes: Sequence[Episode]) -> list:
    """Minari's episode buffers of ``episodes``."""
    from minari.data_collector import EpisodeBuffer

    return [
        EpisodeBuffer(
            id=i,
            observations=e.observations,
            actions=e.actions,
            rewards=np.asarray(e.rewards, dtype=np.float64),
            terminations=np.asarray(e.terminations, dtype=bool),
            truncations=np.asarray(e.truncations, dtype=bool),
            infos={k: np.asarray(v, dtype=np.float64) for k, v in e.infos.items()},
        )
        for i, e in enumerate(episodes)
    ]


def check_dataset_target(root: str | Path, dataset_id: str) -> Path:
    """Where :func:`write_dataset` would write ``dataset_id`` under ``root``, refused before
    any work when it cannot: a dataset there already, or a symbolic link on the way (it could
    take the write out of ``root``)."""
    root = Path(root).absolute()
    target = root / dataset_id
    if target.exists():
        raise UdgError(f"dataset {target} exists already; choose another --name or --out")
    _refuse_links(root, dataset_id)
    return target


def _refuse_links(root: Path, dataset_id: str) -> None:
    """A symlink where the write would land could take it out of ``root``: refuse it."""
    parts = Path(dataset_id).parts
    paths = [root / Path(*parts[:i]) for i in range(1, len(parts) + 1)]
    for path in [*paths, root / parts[0] / "namespace_metadata.json"]:
        if path.is_symlink():
            raise UdgError(f"{path} is a symbolic link; udg writes datasets only into real folders")


def _write_locked(
    buffers: list,
    root: Path,
    dataset_id: str,
    env: str,
    overwrite: bool,
    max_episode_steps: int | None,
    create: dict,
    udg_metadata: dict,
    extra_files: Mapping[str, bytes],
) -> Path:
    """:func:`write_dataset`'s work, with the root locked: stale staging folders of killed
    writers are removed, the target is checked again, and the dataset is staged and moved in."""
    import minari

    target = root / dataset_id
    _refuse_links(root, dataset_id)
    if target.exists() and not overwrite:  # a concurrent writer may have made it meanwhile
        raise UdgError(f"dataset {target} exists already; choose another id or folder")
    for stale in root.glob(".tmp-*"):  # the root is locked: no live writer stages there
        shutil.rmtree(stale, ignore_errors=True)
    staging = root / f".tmp-{uuid.uuid4().hex}"
    try:
        gym_env = make_env(env, max_episode_steps=max_episode_steps)
        with _minari_root(staging):
            written = minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=gym_env, **create
            )
            written.storage.update_metadata({"udg": udg_metadata})
        gym_env.close()
        for name, content in extra_files.items():
            (staging / dataset_id / name).write_bytes(content)
        namespace_file = Path(dataset_id).parts[0]
        staged_namespace = staging / namespace_file / "namespace_metadata.json"
        final_namespace = root / namespace_file / "namespace_metadata.json"
        if staged_namespace.exists() and not final_namespace.exists():
            final_namespace.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged_namespace, final_namespace)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / dataset_id, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _data_dir(path: Path) -> Path:
    if (path / "data" / METADATA_FILE).is_file():
        return path / "data"
    if path.name == "data" and (path / METADATA_FILE).is_file():
        return path
    raise UdgError(f"not a Minari dataset: {path} (no data/{METADATA_FILE})")


@functools.cache
def env_shapes(env: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Observation and action shapes of env ``env`` (made once and cached)."""
    gym_env = make_env(env)
    shapes = gym_env.observation_space.shape, gym_env.action_space.shape
    gym_env.close()
    return shapes


EPISODE_BYTES = 24 * 1024
"""Disk an HDF5 episode group takes beyond its arrays (measured: point datasets of 2000 and
10 000 steps, 100-step episodes, take 34 KiB per episode, 10 KiB of it the arrays)."""


def dataset_bytes(env: str, steps: int, episode_length: int | None = None) -> int:
    """A lower estimate of the disk a dataset of ``steps`` transitions of ``env`` takes, in
    episodes of ``episode_length`` (default the env's): float64 observations, actions,
    rewards, flags and infos, and each episode's group (90 % of what was measured, so that a
    refusal on this estimate is never wrong)."""
    (obs,), (act,) = env_shapes(env)
    spec = get_env_spec(env)
    episodes = -(-steps // (episode_length or spec.max_episode_steps))
    columns = obs + act + 3 + len(spec.info_columns)
    return int(0.9 * (episodes * EPISODE_BYTES + steps * columns * 8))


def read_metadata(path: str | Path) -> dict:
    """The Minari metadata of the dataset at ``path``."""
    data_dir = _data_dir(Path(path))
    try:
        return json.loads((data_dir / METADATA_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UdgError(f"cannot read {data_dir / METADATA_FILE}: {err}") from None


def dataset_env(metadata: Mapping, path: Path) -> str:
    """The UDG env name of a dataset from its metadata."""
    spec = metadata.get("env_spec")
    if not spec:
        raise UdgError(f"dataset {path} records no environment; cannot tell which env it is for")
    gym_id = json.loads(spec)["id"] if isinstance(spec, str) else spec["id"]
    try:
        return env_name_for_gym_id(gym_id)
    except UdgError as err:
        raise UdgError(f"dataset {path}: {err}") from None


def _flat_infos(infos: Mapping | None, length: int) -> dict[str, np.ndarray]:
    """Keep the scalar-per-step info columns (foreign datasets may hold other shapes)."""
    columns = {}
    for key, value in (infos or {}).items():
        if (
            isinstance(value, np.ndarray)
            and value.shape == (length,)
            and value.dtype.kind in "fiub"
        ):
            columns[key] = value
    return columns


def load_episodes(
    path: str | Path, expected_env: str | None = None
) -> tuple[str, dict, list[Episode]]:
    """The env, Minari metadata and episodes of the dataset at ``path``, checking the env (and
    that it is ``expected_env``) and the shapes."""
    from minari import MinariDataset

    path = Path(path)
    metadata = read_metadata(path)
    env = dataset_env(metadata, path)
    if expected_env is not None and env != expected_env:
        raise UdgError(f"dataset {path} is for env {env}, not {expected_env}")
    try:
        minari_dataset = MinariDataset(_data_dir(path))
        total = minari_dataset.total_episodes
        raw = list(minari_dataset.storage.get_episodes(range(total)))
    except UdgError:
        raise
    except Exception as err:  # h5py and Minari raise many types on damaged files
        raise UdgError(f"cannot read dataset {path}: {_damage(err)}") from None
    obs_shape, act_shape = env_shapes(env)
    derive = _column_deriver(env, metadata)
    episodes = []
    for ep in raw:
        obs, act = np.asarray(ep["observations"]), np.asarray(ep["actions"])
        if obs.shape[1:] != obs_shape or act.shape[1:] != act_shape:
            raise UdgError(
                f"dataset {path} has observations {obs.shape[1:]} and actions {act.shape[1:]}, "
                f"but env {env} has {obs_shape} and {act_shape}"
            )
        episodes.append(
            Episode(
                observations=obs,
                actions=act,
                rewards=np.asarray(ep["rewards"]),
                terminations=np.asarray(ep["terminations"]),
                truncations=np.asarray(ep["truncations"]),
                infos=derive(
                    obs, act, np.asarray(ep["rewards"]), _flat_infos(ep.get("infos"), len(obs))
                ),
            )
        )
    return env, metadata, episodes


def _column_deriver(env: str, metadata: Mapping) -> Callable:
    """``derive(observations, actions, rewards, infos) -> infos`` completing the udg columns a
    dataset lacks where its data determines them: an observed column from the observations
    (any dataset), and, for a plain Gymnasium env's dataset (a foreign id, whose rewards are
    the env's own), the columns its rewards determine. A column the data holds is kept."""
    spec = get_env_spec(env)
    env_spec = metadata.get("env_spec")
    env_spec = json.loads(env_spec) if isinstance(env_spec, str) else env_spec or {}
    from_rewards = spec.columns_from_rewards if env_spec.get("id") in spec.foreign_gym_ids else None
    kwargs = env_spec.get("kwargs") or {}

    def derive(obs, actions, rewards, infos: dict) -> dict:
        if all(c in infos for c in spec.info_columns):
            return infos
        derived = {name: obs[:, i].astype(np.float64) for name, i in spec.observed_columns}
        if from_rewards is not None:
            derived.update(from_rewards(actions, rewards, kwargs))
        return {**derived, **infos}

    return derive


def load_dataset(path: str | Path, expected_env: str | None = None) -> Dataset:
    """Load the Minari dataset at ``path`` as a :class:`Dataset`, checking env and shapes."""
    env, metadata, episodes = load_episodes(path, expected_env)
    name = metadata.get("dataset_id", Path(path).name)
    dataset = dataset_from_episodes(
        name, env, episodes, metadata={"path": str(path), "udg": metadata.get("udg", {})}
    )
    check_finite(dataset)
    return dataset


def _damage(err: Exception) -> str:
    """One line for an error h5py or Minari raised on a damaged file."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"truncated or corrupt ({reason})"


def dataset_health(path: Path) -> str | None:
    """Why the dataset at ``path`` cannot be read, or None when its metadata reads and its
    HDF5 file opens with as many episodes as the metadata says (a cheap check: the episodes'
    arrays are not read)."""
    import h5py

    try:
        metadata = read_metadata(path)
        dataset_env(metadata, path)
        with h5py.File(_data_dir(path) / DATA_FILE, "r") as f:
            episodes = len(f.keys())
    except UdgError as err:
        return str(err)
    except Exception as err:  # h5py raises many types on damaged files
        return f"{DATA_FILE}: {_damage(err)}"
    if episodes != metadata.get("total_episodes"):
        return (
            f"{DATA_FILE} holds {episodes} episodes, metadata says {metadata.get('total_episodes')}"
        )
    return None


def find_datasets(paths: Iterable[str | Path], incomplete: bool = False) -> list[Path]:
    """Every Minari dataset folder at or below ``paths`` (a dataset, a root or a run folder).
    A dataset folder missing one of its two files is refused, or, with ``incomplete``, found
    like the others (for a listing that names it damaged)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UdgError(f"no such file or folder: {path}")
        if (path / "data" / METADATA_FILE).is_file():
            found.append(path)
            continue
        if path.name == "data" and (path / METADATA_FILE).is_file():
            found.append(path.parent)
            continue
        data_dirs = {  # a data folder with either file: a dataset, whole or damaged
            p.parent
            for name in (METADATA_FILE, DATA_FILE)
            for p in path.rglob(name)
            if p.parent.name == "data" and not any(part.startswith(".tmp-") for part in p.parts)
        }
        for data_dir in sorted(data_dirs):  # never skipped: `--select all` would drop it
            for name in (METADATA_FILE, DATA_FILE):
                if not incomplete and not (data_dir / name).is_file():
                    raise UdgError(
                        f"dataset {data_dir.parent} is incomplete: no data/{name}; restore or "
                        "remove it"
                    )
        below = sorted(d.parent for d in data_dirs)
        if not below:
            raise UdgError(f"no Minari datasets found at or below {path}")
        found.extend(below)
    return list(dict.fromkeys(found))


def data_fingerprint(paths: Iterable[str | Path]) -> str:
    """A short hash of the size and modification time of every dataset file at or below
    ``paths``: finished work keyed on its data's paths alone would be returned again after the
    datasets there were replaced (a cheap stand-in for hashing the contents)."""
    import hashlib

    stamps = []
    for path in find_datasets(paths):
        data_dir = _data_dir(path)
        for name in (METADATA_FILE, DATA_FILE):
            info = (data_dir / name).stat()
            stamps.append(f"{(data_dir / name).resolve()} {info.st_size} {info.st_mtime_ns}")
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]


def load_datasets(
    paths: Iterable[str | Path], cache: dict[Path, Dataset] | None = None
) -> list[Dataset]:
    """Load every dataset at or below ``paths``; all must be of one env. ``cache`` (by folder)
    gives the datasets loaded before and keeps those loaded now: a grid's cells rank the same
    datasets, which are then read once, not once per cell."""
    cache = {} if cache is None else cache
    datasets = []
    for path in find_datasets(paths):
        if path not in cache:
            cache[path] = load_dataset(path)
        datasets.append(cache[path])
    envs = sorted({d.env for d in datasets})
    if len(envs) > 1:
        raise UdgError(f"datasets of several envs given ({', '.join(envs)}); give one env's")
    return datasets

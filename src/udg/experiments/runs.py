"""Run folders: atomic files, manifests, config checks and provenance.

Every long command writes into a run folder. Files are written to a temporary name and moved
into place, so a killed process leaves either the old or the new version, never half of one.
The manifest records the config, seed, git revision, machine and timings; rerunning a command
into a folder that holds a run with a different config is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

from udg.errors import UdgError
from udg.files import (  # noqa: F401  (re-exported: the runners import them from here)
    atomic_savez,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    hold_folder,
    json_default,
    load_npz,
    read_csv_rows,
    release_folder,
)
from udg.provenance import git_revision  # noqa: F401  (re-exported)

MANIFEST = "manifest.json"


def config_dict(config) -> dict:
    """A config dataclass as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=json_default))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise UdgError(f"cannot read {path}: {err}") from None


def config_differences(
    old: dict, new: dict, prefix: str = "", may_grow: tuple[str, ...] = ()
) -> list[str]:
    """Dotted names of the fields that differ between two config dicts (a field named in
    ``may_grow`` differs only when the new value is smaller)."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            names += config_differences(a, b, f"{name}.", may_grow)
        elif name in may_grow and a is not None and b is not None and b >= a:
            continue
        elif a != b:
            names.append(name)
    return names


def with_defaults(config: dict, defaults: dict) -> dict:
    """``config`` with the fields it lacks taken from ``defaults`` (nested dicts merged)."""
    merged = dict(defaults)
    for key, value in config.items():
        default = defaults.get(key)
        both_dicts = isinstance(value, dict) and isinstance(default, dict)
        merged[key] = with_defaults(value, default) if both_dicts else value
    return merged


def check_run(
    out: Path,
    kind: str,
    config: dict,
    defaults: dict | None = None,
    may_grow: tuple[str, ...] = (),
) -> dict | None:
    """Whether ``out`` can take a run of ``kind`` with ``config``, without writing anything:
    the existing manifest when it holds the same run (to resume or read back), None when it is
    new or empty, a :class:`UdgError` otherwise (a file, another kind of run, another config, a
    folder of other files).

    ``defaults`` fills the fields a run's stored config lacks (fields added to udg after the
    run was made), so such a run resumes when the new field keeps its default. The fields in
    ``may_grow`` may be larger than stored (a run that can be extended, e.g. its steps).
    """
    out = Path(out)
    if out.is_symlink():
        raise UdgError(f"{out} is a symbolic link; give the folder it points to, or a new one")
    if out.exists() and not out.is_dir():
        raise UdgError(f"{out} is a file, not a folder; choose a new or empty folder")
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("config", {}), dict):
            raise UdgError(f"{manifest_path} is not a udg manifest; choose another --out")
        if manifest.get("kind") != kind:
            raise UdgError(f"{out} holds a {manifest.get('kind')} run, not a {kind} run")
        stored = with_defaults(manifest.get("config", {}), defaults or {})
        differing = config_differences(stored, config, may_grow=may_grow)
        if differing:
            raise UdgError(
                f"{out} holds a run with a different config ({', '.join(differing[:6])}); "
                "use another --out or the same settings to resume"
            )
        return manifest
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise UdgError(f"{out} exists and is not a udg {kind} run; choose an empty or new --out")
    return None


def open_run(
    out: Path,
    kind: str,
    config: dict,
    defaults: dict | None = None,
    may_grow: tuple[str, ...] = (),
) -> dict | None:
    """Claim ``out`` for a run (made, and locked until this process ends or releases it);
    :func:`check_run`'s answer, asked again once the lock is held (another process may have
    started a run there in between)."""
    check_run(out, kind, config, defaults, may_grow)  # before the folder is made
    hold_folder(Path(out), f"a {kind} run into")  # until this process ends: one writer per run
    return check_run(out, kind, config, defaults, may_grow)


def machine_description() -> dict:
    """Where a run ran: CPU count, platform, Python, JAX backend."""
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
    }


def write_manifest(out: Path, kind: str, status: str, config: dict, **fields) -> None:
    """Write ``out/manifest.json`` atomically: the run's kind, status and config, where and from
    which revision it ran, and ``fields`` (which may replace ``git_revision``: a resumed run
    keeps the revision it started from)."""
    manifest = {
        "kind": kind,
        "status": status,
        "config": config,
        "git_revision": git_revision(),
        "machine": machine_description(),
        **fields,
    }
    atomic_write_json(Path(out) / MANIFEST, manifest)


def save_state(out: Path, name: str, **arrays) -> None:
    """Write a checkpoint's arrays to ``out/name`` atomically (an ``.npz``)."""
    atomic_savez(Path(out) / name, **arrays)


def load_state(out: Path, name: str) -> dict | None:
    """The arrays of the checkpoint ``out/name``, or None when there is none yet."""
    path = Path(out) / name
    return load_npz(path) if path.exists() else None


def write_rows(out: Path, name: str, rows: list[dict]) -> None:
    """Write metric rows to the CSV ``out/name`` atomically (nothing when there are none)."""
    if rows:
        atomic_write_csv(Path(out) / name, rows)


def read_rows(out: Path, name: str, keep=None) -> list[dict]:
    """The rows of the CSV ``out/name`` ([] when absent), only those ``keep(row)`` accepts."""
    path = Path(out) / name
    rows = read_csv_rows(path) if path.exists() else []
    return [r for r in rows if keep is None or keep(r)]


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A finished (or interrupted) run folder as its manifest describes it, with readers for
    the artifacts it holds: a generate run's datasets and metrics, an offline run's policy,
    dynamics model and learning curve (in the style of d3rlpy's ``load_learnable``)."""

    path: Path
    kind: str
    status: str
    config: dict
    result: dict | None
    git_revision: str

    def _file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise UdgError(f"{self.path} holds no {name} (a {self.status} {self.kind} run)")
        return path

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise UdgError(f"{self.path} holds a {self.kind} run, not {article} {kind} run")

    def dataset_paths(self) -> list[Path]:
        """The Minari dataset folders a generate run wrote under ``<run>/datasets/``, sorted."""
        from udg.data.minari_io import find_datasets

        self._require("generate")
        return sorted(find_datasets([self._file("datasets")]))

    def metrics(self) -> list[dict]:
        """A generate run's per-round rows of ``metrics.csv``."""
        self._require("generate")
        return read_csv_rows(self._file("metrics.csv"))

    def load_agents(self):
        """A generate run's K final SAC agents (``agents.msgpack``), one population with the agent
        axis first, restored into a template made from the run's stored config."""
        import jax

        from udg.agents import sac
        from udg.data.minari_io import env_shapes
        from udg.envs.registry import get_env_spec

        self._require("generate")
        data = self._file("agents.msgpack").read_bytes()
        try:
            c = self.config
            fields = {f.name for f in dataclasses.fields(sac.SACConfig)}
            sac_config = sac.SACConfig(**{k: v for k, v in c["sac"].items() if k in fields})
            sac_config = dataclasses.replace(sac_config, hidden_dims=tuple(sac_config.hidden_dims))
            features = c.get("features") or get_env_spec(c["env"]).feature_columns
            obs_shape, act_shape = env_shapes(c["env"])
            obs_dim = obs_shape[0] + (len(features) if c.get("observe_features") else 0)
            template = sac.create_population(
                sac_config, jax.random.key(0), c["num_agents"], obs_dim, act_shape[0]
            )
            return sac.from_bytes(template, data)
        except (KeyError, TypeError, ValueError) as err:
            raise UdgError(f"cannot load the agents of {self.path}: {err}") from None

    def learning_curve(self) -> list[dict]:
        """An offline run's evaluation rows of ``learning_curve.csv``."""
        self._require("offline")
        return read_csv_rows(self._file("learning_curve.csv"))

    def load_model(self):
        """An offline run's dynamics ensemble (``model.msgpack``)."""
        from udg.offline import dynamics

        self._require("offline")
        try:
            return dynamics.load_model(self._file("model.msgpack"))
        except (ValueError, OSError) as err:
            raise UdgError(f"cannot load dynamics model {err}") from None

    @property
    def algo(self) -> str:
        """An offline run's learner, ``mopo``, ``td3bc`` or ``iql`` (its manifest's ``algo``;
        a run made before udg had other learners is MOPO's)."""
        self._require("offline")
        return str(self.config.get("algo", "mopo"))

    @property
    def schedule(self) -> dict:
        """An offline run's learner settings that every learner has (``epochs``,
        ``steps_per_epoch``, ``eval_every``, ...): its manifest's ``mopo`` block, or its
        ``learner`` block for a model-free learner."""
        block = "mopo" if self.algo == "mopo" else "learner"
        schedule = self.config.get(block)
        if not isinstance(schedule, dict):
            raise UdgError(f"{self.path}/{MANIFEST} has no {block} settings")
        return schedule

    def load_policy(self):
        """An offline run's final policy (``policy.msgpack``): MOPO's SAC agent, or the TD3+BC
        or IQL learner (:attr:`algo`), restored into a template made from the run's stored
        config; it acts on the first ``observation_dims`` entries of the env's observations
        (the result's), and a model-free learner normalises them itself."""
        import jax

        from udg.agents import sac
        from udg.data.minari_io import env_shapes
        from udg.envs.tasks import get_task

        self._require("offline")
        data = self._file("policy.msgpack").read_bytes()
        if not self.result or "observation_dims" not in self.result:
            raise UdgError(f"{self.path} has no result with observation_dims")
        try:
            obs_dim = int(self.result["observation_dims"])
            act_dim = env_shapes(get_task(self.config["task"]).env)[1][0]
            key = jax.random.key(0)
            if self.algo == "mopo":
                config = _stored_config(sac.SACConfig, self.config["mopo"]["sac"])
                template = sac.SAC.create(config, key, obs_dim, act_dim)
            else:
                from udg.offline import learners, model_free

                learner = learners.get_learner(self.algo)
                config = _stored_config(learner.config, self.schedule["learner"])
                # Any stats of the right shape: the stored ones replace them.
                stats = model_free.ObservationStats.identity(obs_dim)
                template = learner.functions.create(
                    key, obs_dim, act_dim, config, stats if config.normalize_observations else None
                )
            return sac.from_bytes(template, data)
        except (KeyError, TypeError, ValueError) as err:
            raise UdgError(f"cannot load the policy of {self.path}: {err}") from None


def _stored_config(config_type: type, stored: dict):
    """``config_type`` from a manifest's dict of it (fields it no longer has are dropped)."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in stored.items() if k in fields})


def load_run(path: str | os.PathLike[str]) -> RunFolder:
    """Read the run folder ``path`` from its manifest; a missing folder, a folder without a
    manifest or a malformed manifest raise UdgError."""
    path = Path(path)
    if not path.is_dir():
        raise UdgError(f"no such run folder: {path}")
    if not (path / MANIFEST).exists():
        raise UdgError(f"{path} is not a udg run folder (no {MANIFEST})")
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict):
        raise UdgError(f"malformed manifest {path / MANIFEST}: not a JSON object")
    kind, status, config = manifest.get("kind"), manifest.get("status"), manifest.get("config")
    result = manifest.get("result")
    if not isinstance(kind, str) or not isinstance(status, str) or not isinstance(config, dict):
        raise UdgError(f"malformed manifest {path / MANIFEST}: needs kind, status and config")
    if result is not None and not isinstance(result, dict):
        raise UdgError(f"malformed manifest {path / MANIFEST}: result is not an object")
    return RunFolder(
        path=path,
        kind=kind,
        status=status,
        config=config,
        result=result,
        git_revision=str(manifest.get("git_revision", "unknown")),
    )

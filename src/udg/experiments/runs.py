"""Run folders: atomic files, manifests, config checks and provenance.

Every long command writes into a run folder. Files are written to a temporary name and moved
into place, so a killed process leaves either the old or the new version, never half of one.
The manifest records the config, seed, git revision, machine and timings; rerunning a command
into a folder that holds a run with a different config is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import subprocess
from pathlib import Path

from udg.errors import UdgError
from udg.files import (  # noqa: F401  (re-exported: the runners import them from here)
    atomic_savez,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    json_default,
    load_npz,
    read_csv_rows,
)

MANIFEST = "manifest.json"


def config_dict(config) -> dict:
    """A config dataclass as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=json_default))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
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


def open_run(
    out: Path,
    kind: str,
    config: dict,
    defaults: dict | None = None,
    may_grow: tuple[str, ...] = (),
) -> dict | None:
    """Prepare ``out`` for a run; return the existing manifest when resuming the same run.

    ``defaults`` fills the fields a run's stored config lacks (fields added to udg after the
    run was made), so such a run resumes when the new field keeps its default. The fields in
    ``may_grow`` may be larger than stored (a run that can be extended, e.g. its steps).
    """
    out = Path(out)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = read_json(manifest_path)
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
    out.mkdir(parents=True, exist_ok=True)
    return None


@functools.cache
def git_revision() -> str:
    """The git revision of the udg source tree ("unknown" outside a checkout).

    Read once per process, at the first call (a run's start): the code a process runs is the
    code it loaded, whatever is committed while it runs.
    """
    try:
        root = Path(__file__).resolve().parents[3]
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if rev.returncode != 0:
            return "unknown"
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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

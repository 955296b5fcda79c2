"""The distribution's metadata: compatible version ranges, and a lock that pins inside them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_runtime_dependencies_are_ranges_not_pins():
    for text in PROJECT["dependencies"]:
        spec = Requirement(text).specifier
        assert spec and not any(s.operator == "==" for s in spec), text
        assert any(s.operator == "<" for s in spec), f"{text} has no upper bound"


def test_the_lock_pins_every_dependency_within_its_range():
    pins = _lock()
    for text in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[name]), (
            f"{req.name} {pins[name]} outside {req.specifier}"
        )


def test_importing_udg_alone_registers_its_gymnasium_ids_and_stays_light():
    # Gymnasium 1.x loads no plugin entry points, so `import udg` is what registers the ids
    # (and Minari's recover_environment relies on it). The heavy stacks (JAX, MuJoCo, Ray,
    # Minari, matplotlib) load only when a command needs them.
    code = (
        "import sys, gymnasium as gym, udg\n"
        "heavy = sorted({'jax', 'mujoco', 'ray', 'minari', 'matplotlib'} & set(sys.modules))\n"
        "env = gym.make('udg/Point-v0', render_mode='rgb_array')\n"
        "env.reset(seed=0)\n"
        "frame = env.render()\n"
        "print(sorted(i for i in gym.registry if i.startswith('udg/')))\n"
        "print(frame.shape[2], frame.dtype, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids, frame = done.stdout.strip().splitlines()
    assert ids == str(["udg/Ant-v5", "udg/HalfCheetah-v5", "udg/Point-v0", "udg/Rooms-v0"])
    assert frame == "3 uint8 []"


def test_python_range_covers_311_to_313():
    spec = SpecifierSet(PROJECT["requires-python"])
    assert all(v in spec for v in ("3.11", "3.12", "3.13")), spec

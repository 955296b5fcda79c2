"""The distribution's metadata: compatible version ranges, and a lock that pins inside them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
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


def test_importing_udg_registers_its_gymnasium_ids():
    import subprocess
    import sys

    code = "import gymnasium as gym, udg; print(gym.make('udg/Point-v0').spec.id)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "udg/Point-v0"

"""Where data and runs come from: udg's version and git revision, and who made a dataset.

Every dataset udg writes names its authors, a permalink to the code, the packages that recover
its environment and the environment to evaluate in, so that Minari's metadata is complete and a
dataset stays usable where udg is not installed. The author and permalink are configurable
(``UDG_AUTHOR``, ``UDG_AUTHOR_EMAIL``, ``UDG_CODE_PERMALINK``, or the export's flags); the
defaults come from git where it knows them. Used by the data layer and every runner.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTION = "udg-rl"
"""The package's name on the package index (the import name is ``udg``)."""

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    """The output of ``git args`` in udg's source tree, or None if git cannot say."""
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), *args], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@functools.cache
def git_revision() -> str:
    """The git revision of the udg source tree ("unknown" outside a checkout), with
    ``-dirty`` when tracked files differ from it.

    Read once per process, at the first call (a run's start): the code a process runs is the
    code it loaded, whatever is committed while it runs.
    """
    revision = _git("rev-parse", "HEAD")
    if revision is None:
        return "unknown"
    return revision + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def version() -> str:
    from udg import __version__

    return __version__


@dataclass(frozen=True)
class Authorship:
    """Who made a dataset and where its code is, as Minari records them."""

    author: str
    author_email: str | None
    """None where nobody said; Minari then warns that contact information is missing."""
    code_permalink: str


@functools.cache
def default_authorship() -> Authorship:
    """``UDG_AUTHOR`` / ``UDG_AUTHOR_EMAIL`` / ``UDG_CODE_PERMALINK``, else git's user name and
    email and the source tree's remote at this revision, else udg's name and version."""
    revision = git_revision()
    remote = _git("config", "--get", "remote.origin.url")
    if remote and revision != "unknown":
        permalink = f"{remote.removesuffix('.git')}/tree/{revision.removesuffix('-dirty')}"
    else:
        permalink = f"{DISTRIBUTION} {version()} (git {revision})"
    return Authorship(
        author=os.environ.get("UDG_AUTHOR") or _git("config", "user.name") or "udg user",
        author_email=os.environ.get("UDG_AUTHOR_EMAIL") or _git("config", "user.email"),
        code_permalink=os.environ.get("UDG_CODE_PERMALINK") or permalink,
    )


def requirements(env: str) -> list[str]:
    """Pip requirements that recover env ``env`` from a dataset (Minari's ``requirements``)."""
    import gymnasium

    packages = [f"{DISTRIBUTION}>={version()}", f"gymnasium>={gymnasium.__version__}"]
    if env in ("ant", "halfcheetah"):
        import mujoco

        packages.append(f"mujoco>={mujoco.__version__}")
    return packages

"""The one error type users see.

Everything that is the user's fault (an unknown name, a file that does not parse, shapes that do
not match, NaN in data, impossible settings) raises :class:`UdgError` with a one-line message at
the boundary where it is detected. The CLI prints that line and exits non-zero; anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UdgError(Exception):
    """A user-facing error whose message is one self-contained line."""


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str = "") -> UdgError:
    """An error for a name not in a registry, listing the known names."""
    known_list = ", ".join(sorted(known))
    extra = f" {hint}" if hint else ""
    return UdgError(f"unknown {kind} {name!r}; known: {known_list}.{extra}")


class ConfigError(UdgError, ValueError):
    """An impossible setting in a config dataclass, its message naming the field.

    Also a ``ValueError``, the type dataclass checks conventionally raise, so callers that
    catch that keep working."""

"""MOPO's presets, kept importable from here: the table is :mod:`udg.experiments.presets`."""

from __future__ import annotations

from udg.experiments.presets import SCALES, mopo_preset

__all__ = ["SCALES", "mopo_preset"]

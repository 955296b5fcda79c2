"""The report's two renderers: the HTML says what the Markdown says, provenance included."""

from __future__ import annotations

import html

from udg.experiments import report

SUMMARY = {
    "git_revision": "abc123",
    "wall_seconds": 61.4,
    "stage_seconds": {"stage 1": 20.0, "MOPO cells": 40.0},
    "machine": {
        "platform": "Linux-x86_64",
        "cpus": 2,
        "python": "3.12.1",
        "jax": "0.10.2",
        "jax_backend": "gpu",
    },
}


def test_machine_and_timings_are_in_both_renderings():
    line = report.provenance_line(SUMMARY)
    for needle in ("abc123", "wall time 61 s", "stage 1 20 s", "2 CPUs", "JAX 0.10.2 on gpu"):
        assert needle in line, needle
    doc = [("h1", "UDG report"), ("p", line)]
    assert line in report._markdown(doc)
    assert f"<p>{html.escape(line)}</p>" in report._html(doc)


def test_a_run_that_recorded_less_of_its_machine_still_reports():
    machine = {"platform": "Linux-x86_64", "cpus": 2}  # runs before the backend was recorded
    assert report.machine_line(machine) == "2 CPUs, Linux-x86_64"

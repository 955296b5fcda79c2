"""Several ``udg offline`` runs' evaluation returns in one figure, with a summary table.

Each OUT folder is one finished (or running) ``udg offline --out OUT``; its learning curve
(``learning_curve.csv``: the deterministic policy's mean return at each evaluation) becomes one
line, named after the folder (with its parents where run folders share a name) and shaded by
the std over the evaluation episodes; the x axis counts SAC updates (epochs times the run's
``steps_per_epoch`` from its ``manifest.json``, or ``--updates-per-epoch``). Prints a Markdown
table of every run's last, best and mean-of-last-quarter evaluation return.

    .venv/bin/python scripts/plot_offline_curves.py OUT [OUT ...] --out FIGURE.png [--title T]
        [--updates-per-epoch N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from udg.errors import UdgError
from udg.experiments.plots import plot_learning_curves
from udg.experiments.runs import MANIFEST, read_json


def updates_per_epoch(folder: Path, given: int | None) -> int:
    """The run's SAC updates per MOPO epoch: ``given`` (--updates-per-epoch), else its
    manifest.json's (the preset sets it)."""
    if given is not None:
        return given
    path = folder / MANIFEST
    try:
        return int(read_json(path)["config"]["mopo"]["steps_per_epoch"])
    except (UdgError, ValueError, KeyError, TypeError):
        sys.exit(
            f"plot_offline_curves: error: {path} is missing or names no steps_per_epoch; "
            "pass --updates-per-epoch"
        )


def read_curve(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(epochs, eval returns, their std over episodes or None) of one run's learning_curve.csv."""
    path = folder / "learning_curve.csv"
    if not path.is_file():
        sys.exit(f"plot_offline_curves: error: {path} not found")
    rows = np.genfromtxt(path, delimiter=",", names=True)
    if rows.size == 0 or "eval_return" not in rows.dtype.names:
        sys.exit(f"plot_offline_curves: error: {path} has no eval_return rows")
    rows = np.atleast_1d(rows)
    keep = ~np.isnan(rows["eval_return"])
    std = rows["eval_std"][keep] if "eval_std" in rows.dtype.names else None
    return rows["epoch"][keep].astype(int), rows["eval_return"][keep], std


def labels(folders: list[Path]) -> list[str]:
    """Each folder's shortest trailing path that tells it from the others (``seed0`` or, when
    several runs end in ``seed0``, ``udg-top2/seed0``)."""
    parts = [folder.resolve().parts for folder in folders]
    if len(set(parts)) < len(parts):
        sys.exit("plot_offline_curves: error: a run folder is given twice")
    for k in itertools.count(1):  # ends by the full paths at the latest: they differ
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="udg offline output folders")
    parser.add_argument("--out", type=Path, required=True, help="figure to write (.png)")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument(
        "--updates-per-epoch",
        type=int,
        help="SAC updates per MOPO epoch (default: each run's manifest.json; needed for folders "
        "holding only learning_curve.csv)",
    )
    args = parser.parse_args()
    if args.updates_per_epoch is not None and args.updates_per_epoch < 1:
        parser.error(f"--updates-per-epoch must be >= 1, got {args.updates_per_epoch}")

    curves = {name: read_curve(run) for name, run in zip(labels(args.runs), args.runs, strict=True)}
    epochs = next(iter(curves.values()))[0]
    if any(not np.array_equal(e, epochs) for e, _, _ in curves.values()):
        sys.exit("plot_offline_curves: error: the runs were evaluated at different epochs")
    updates = {updates_per_epoch(run, args.updates_per_epoch) for run in args.runs}
    if len(updates) > 1:
        sys.exit(
            f"plot_offline_curves: error: the runs' epochs differ in length: {sorted(updates)}"
        )
    plot_learning_curves(
        epochs * updates.pop(),
        {name: returns for name, (_, returns, _) in curves.items()},
        "evaluation return (band: std over episodes)",
        args.out,
        title=args.title,
        spreads={name: std for name, (_, _, std) in curves.items() if std is not None},
    )
    quarter = max(len(epochs) // 4, 1)
    print("| run | last | best (epoch) | mean of the last quarter |")
    print("|---|---|---|---|")
    for name, (e, r, _) in curves.items():
        best = int(np.argmax(r))
        print(f"| {name} | {r[-1]:.1f} | {r[best]:.1f} ({e[best]}) | {np.mean(r[-quarter:]):.1f} |")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()

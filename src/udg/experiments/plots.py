"""Figures: the agents' coverage of feature space, learning curves, bars and scatters.

Matplotlib with the non-interactive Agg backend; every function writes one PNG atomically and
returns its path. Figures read only files a run wrote (datasets, CSVs), never live objects, so
they can be redrawn after the fact (``udg plot-coverage RUN``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from udg.experiments.runs import atomic_write_bytes  # noqa: E402

FINAL_FRACTION = 0.2
"""Share of each agent's episodes (its last ones) the coverage figure draws bold by default."""


def save_figure(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_coverage(
    trajectories: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str],
    feature_names: Sequence[str],
    path: Path,
    title: str = "",
    last: int | None = None,
    walls: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
    colours: Sequence[str] | None = None,
) -> Path:
    """Each agent's episodes in feature space, one colour per agent (``colours``, default
    matplotlib's tab10 in order), over the env's ``walls`` (segments ``((x0, y0), (x1, y1))``,
    drawn black; the rooms world's).

    ``trajectories[i]`` holds agent i's episodes as ``[T, 2]`` feature arrays in collection
    order; its last ``last`` episodes (default: the last ``FINAL_FRACTION``, the final
    policies) are drawn bold, the earlier ones faint, so the figure shows both what was
    explored and where each agent ended up.
    """
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for (x0, y0), (x1, y1) in walls:
        ax.plot([x0, x1], [y0, y1], color="black", lw=1.5, solid_capstyle="butt", zorder=4)
    palette = plt.get_cmap("tab10")
    for i, (episodes, label) in enumerate(zip(trajectories, labels, strict=True)):
        colour = colours[i] if colours is not None else palette(i % 10)
        cut = int(len(episodes) * (1 - FINAL_FRACTION)) if last is None else len(episodes) - last
        for j, episode in enumerate(episodes):
            final = j >= cut
            ax.plot(
                episode[:, 0],
                episode[:, 1],
                color=colour,
                lw=1.0 if final else 0.5,
                alpha=0.8 if final else 0.12,
                label=label if j == len(episodes) - 1 else None,
            )
        if episodes:
            end = np.stack([e[-1] for e in episodes[cut:]])
            ax.scatter(end[:, 0], end[:, 1], color=colour, s=6, zorder=3)
    ax.set_xlabel(feature_names[0])
    ax.set_ylabel(feature_names[1])
    bold = f"last {FINAL_FRACTION:.0%} of episodes" if last is None else f"last {last} episodes"
    ax.set_title(f"{title or 'coverage of feature space'} (bold: {bold})")
    ax.axhline(0, color="grey", lw=0.3)
    ax.axvline(0, color="grey", lw=0.3)
    # Same units on both axes (ant's x, y) keep distances true; features of very different
    # spread (halfcheetah's x and z) get their own scales so the smaller one stays readable.
    points = np.concatenate(
        [e for episodes in trajectories for e in episodes] or [np.zeros((1, 2))]
    )
    spread = np.ptp(points, axis=0)
    if spread.min() * 5 >= spread.max():
        ax.set_aspect("equal", adjustable="datalim")
    # Beside the axes: never over the data (and matplotlib's search for the emptiest corner
    # costs seconds per figure over thousands of points).
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_learning_curves(
    steps: np.ndarray,
    curves: dict[str, np.ndarray],
    ylabel: str,
    path: Path,
    title: str = "",
    spreads: dict[str, np.ndarray] | None = None,
) -> Path:
    """One line per named curve against steps; ``spreads[name]`` (e.g. the std over evaluation
    episodes), when given, is shaded as a band of +- that value around the curve."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        (line,) = ax.plot(steps, values, label=name, lw=1)
        if spreads is not None and name in spreads:
            spread = spreads[name]
            ax.fill_between(
                steps, values - spread, values + spread, color=line.get_color(), alpha=0.2, lw=0
            )
    ax.set_xlabel("steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_bars(
    groups: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    path: Path,
    title: str = "",
    colours: dict[str, str] | None = None,
) -> Path:
    """Grouped bars with error bars: ``series[name] = (means per group, stds per group)``, in
    ``colours[name]`` where given. The figure is at most 11 inches wide, so that a report's
    page shows it near its natural size and its labels stay legible; the legend sits above the
    bars in one row rather than over them."""
    n = max(1, len(series))
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.0, 0.3 * len(groups) * n + 1.5)), 4.2))
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, (means, stds)) in enumerate(series.items()):
        colour = (colours or {}).get(name)
        ax.bar(
            x + j * width - 0.4 + width / 2,
            means,
            width,
            yerr=stds,
            label=name,
            capsize=2,
            color=colour,
            error_kw={"lw": 0.8},
        )
    ax.set_xticks(x, groups, rotation=15 if len(groups) > 4 else 0, fontsize=10)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=11, pad=28)
    ax.legend(
        fontsize=9, ncols=min(n, 5), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False
    )
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_scatter(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    xlabel: str,
    ylabel: str,
    path: Path,
    title: str = "",
    colours: dict[str, str] | None = None,
) -> Path:
    """A scatter coloured by group (e.g. W1 to expert data against offline return), group g in
    ``colours[g]`` where given, else matplotlib's tab10 in order of first appearance."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    palette = plt.get_cmap("tab10")
    for j, group in enumerate(dict.fromkeys(groups)):
        mask = np.array([g == group for g in groups])
        colour = (colours or {}).get(group, palette(j % 10))
        ax.scatter(np.asarray(x)[mask], np.asarray(y)[mask], label=group, color=colour, s=18)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)

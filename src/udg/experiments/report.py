"""Reports of a pipeline run: results tables in the paper's format, figures, Markdown and HTML.

Reads only the summary dict a pipeline wrote to ``results.json`` and the figures beside it, so
a report can be redrawn from a finished run. The headline table puts, for each task, MOPO's
final return on random, supervised and UDG data (top-1, top-2, all) side by side, with the
standard deviation over seeds (or over evaluation episodes when there is one seed).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np

from udg.experiments.grid import cell_name
from udg.experiments.plots import plot_bars, plot_scatter
from udg.experiments.runs import atomic_write_text

LABELS = {
    "random-all": "random",
    "supervised-all": "supervised",
    "udg-top1": "UDG top 1",
    "udg-top2": "UDG top 2 mixed",
    "udg-all": "UDG all mixed",
}


def columns(summary: dict) -> list[tuple[str, str]]:
    """(key, label) of the table's data columns: baselines first, then UDG's selections."""
    keys = ["random-all", "supervised-all"] + [
        c for c in summary["columns"] if c.startswith("udg-")
    ]
    labels = dict(LABELS, **{"supervised-all": f"supervised ({summary['supervised_task']})"})
    return [(k, labels.get(k, k)) for k in keys]


def headline_rows(summary: dict) -> list[list[str]]:
    """Rows of the headline table: task, then mean ± std per column (std over seeds, or over
    evaluation episodes when there is one seed)."""
    if summary["config"].get("seeds", 1) == 1:
        return _with_episode_std(summary, [[t] for t in summary["tasks"]])
    rows = []
    for task in summary["tasks"]:
        cells = summary["table"][task]
        row = [task]
        for key, _ in columns(summary):
            cell = cells.get(key)
            row.append(f"{cell['mean']:.1f} ± {cell['std']:.1f}" if cell else "-")
        rows.append(row)
    return rows


def paper_rows(summary: dict) -> list[list[str]]:
    """The paper's numbers in the same layout ('-' where the paper has none)."""
    paper = summary.get("paper") or {}
    return [
        [task] + [paper.get(task, {}).get(key, "-") for key, _ in columns(summary)]
        for task in summary["tasks"]
    ]


def findings(summary: dict) -> list[str]:
    """The paper's qualitative claims, checked on this run."""
    table, tasks = summary["table"], summary["tasks"]

    def mean(task, key):
        return table[task][key]["mean"]

    lines = []
    beats_random = sum(mean(t, "udg-top1") > mean(t, "random-all") for t in tasks)
    lines.append(f"UDG top-1 beats random data on {beats_random} of {len(tasks)} tasks.")
    others = [t for t in tasks if t != summary["supervised_task"]]
    beats_supervised = sum(mean(t, "udg-top1") > mean(t, "supervised-all") for t in others)
    lines.append(
        f"UDG top-1 beats the supervised ({summary['supervised_task']}) data on "
        f"{beats_supervised} of {len(others)} other tasks."
    )
    if {"udg-top2", "udg-all"} <= set(summary["columns"]):
        ordering = sum(
            mean(t, "udg-top2") >= mean(t, "udg-top1") > mean(t, "udg-all") for t in tasks
        )
        lines.append(f"top-2 >= top-1 > all holds on {ordering} of {len(tasks)} tasks.")
    theory = summary["theory"]
    lines.append(
        f"Spearman correlation of W1(data, expert data) with MOPO's return: "
        f"{theory['spearman']['rho']:.2f} over {theory['spearman']['pairs']} pairs "
        "(the theory predicts < 0)."
    )
    lines.append(
        "Worst-case proxy max over tasks of min over buffers of W1 (lower is better): "
        + ", ".join(f"{k} {v:.2f}" for k, v in theory["worst_case_proxy"].items())
        + "."
    )
    return lines


def timing_line(summary: dict) -> str:
    """The wall time of the invocation that wrote the report, and the stages' own recorded times
    (see ``pipeline._stage_seconds``) when present."""
    line = f"wall time {summary['wall_seconds']:.0f} s"
    stages = summary.get("stage_seconds")
    if stages:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())
        line += f" for this invocation (stages as recorded over all runs: {parts})"
    return line


def data_line(summary: dict) -> str:
    """How the UDG data was generated (agents, steps, the reward they were trained on) and the
    baselines' budget."""
    gen = summary["config"]["generate"]
    expert_steps = summary["config"].get("expert_steps") or gen["steps"]
    reward = f"{gen['w_div']:g} x diversity"
    if gen.get("task") and gen["w_task"] > 0:
        reward += f" + {gen['w_task']:g} x {gen['task']} (a known reward mixed in)"
    if gen.get("observe_features"):
        reward += ", the diversity features observed"
    return (
        f"UDG data: {gen['num_agents']} agents x {gen['steps']} steps, reward {reward}; "
        f"random data: as many transitions; supervised and expert data: one SAC agent per task, "
        f"{expert_steps} steps each"
    )


def write_report(out: Path, summary: dict) -> tuple[Path, Path]:
    """Write figures, ``report.md`` and ``report.html`` into ``out``."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    coverage = out / "udg" / "coverage.png"
    if coverage.exists():
        shutil.copyfile(coverage, figures / "coverage.png")
    tasks = summary["tasks"]
    series = {
        label: (
            [summary["table"][t][key]["mean"] for t in tasks],
            [summary["table"][t][key]["std"] for t in tasks],
        )
        for key, label in columns(summary)
    }
    plot_bars(
        tasks,
        series,
        "MOPO return (last evaluation)",
        figures / "returns.png",
        title="offline return per task and data",
    )
    pairs = summary["theory"]["pairs"]
    plot_scatter(
        np.array([p["w1"] for p in pairs]),
        np.array([p["return"] for p in pairs]),
        [p["data"] for p in pairs],
        "W1(data, expert data)",
        "MOPO return",
        figures / "w1_vs_return.png",
        title=f"Spearman rho = {summary['theory']['spearman']['rho']:.2f}",
    )
    header = ["task"] + [label for _, label in columns(summary)]
    rows = headline_rows(summary)
    seeds = summary["config"].get("seeds", 1)
    spread = "std over seeds" if seeds > 1 else "one seed: ± is the std over evaluation episodes"
    md = [
        f"# UDG report: {summary['experiment']}",
        "",
        f"git revision `{summary['git_revision']}`, {timing_line(summary)}, "
        f"machine: {summary['machine']['cpus']} CPUs, {summary['machine']['platform']}.",
        "",
        data_line(summary) + ".",
        "",
        f"## Offline return (MOPO, last evaluation; {spread})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        *(
            [
                "## The paper's numbers (same layout)",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
                *["| " + " | ".join(r) + " |" for r in paper_rows(summary)],
                "",
            ]
            if summary.get("paper")
            else []
        ),
        "## Findings",
        "",
        *[f"- {f}" for f in findings(summary)],
        "",
        "## Theory check",
        "",
        summary["theory"]["metric"] + ".",
        "",
        "| task | data | W1 to expert | return |",
        "|---|---|---|---|",
        *[f"| {p['task']} | {p['data']} | {p['w1']:.3f} | {p['return']:.1f} |" for p in pairs],
        "",
        "## Figures",
        "",
        "![coverage](figures/coverage.png)",
        "![returns](figures/returns.png)",
        "![W1 vs return](figures/w1_vs_return.png)",
        "",
    ]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md))
    html_path = out / "report.html"
    atomic_write_text(html_path, _html(summary, header, rows, pairs, spread))
    return md_path, html_path


def _with_episode_std(summary: dict, rows: list[list[str]]) -> list[list[str]]:
    """One seed: each cell's return ± its std over evaluation episodes."""
    cells, seed = summary["cells"], summary["config"]["seed"]
    out = []
    for row in rows:
        task = row[0]
        new = [task]
        for key, _ in columns(summary):
            cell = cells.get(cell_name(task, key, seed))
            new.append(f"{cell['last_return']:.1f} ± {cell['last_std']:.1f}" if cell else "-")
        out.append(new)
    return out


def _html(summary, header, rows, pairs, spread) -> str:
    def table(head, body):
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body
        )
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    theory_rows = [[p["task"], p["data"], f"{p['w1']:.3f}", f"{p['return']:.1f}"] for p in pairs]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in findings(summary))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UDG report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
img{{max-width:48%;margin:.5em}}</style></head><body>
<h1>UDG report</h1>
<p>git revision <code>{html.escape(summary["git_revision"])}</code>,
{html.escape(timing_line(summary))}.</p>
<p>{html.escape(data_line(summary))}.</p>
<h2>Offline return (MOPO, last evaluation; {html.escape(spread)})</h2>
{table(header, rows)}
{("<h2>The paper's numbers</h2>" + table(header, paper_rows(summary))) if summary.get("paper") else ""}
<h2>Findings</h2><ul>{items}</ul>
<h2>Theory check</h2><p>{html.escape(summary["theory"]["metric"])}.</p>
{table(["task", "data", "W1 to expert", "return"], theory_rows)}
<h2>Figures</h2>
<img src="figures/coverage.png" alt="coverage"><img src="figures/returns.png" alt="returns">
<img src="figures/w1_vs_return.png" alt="W1 vs return">
</body></html>
"""

"""Reports of a pipeline run: findings, results tables in the paper's format, reference
returns, coverage and the theory check, as Markdown and HTML with figures.

Reads only the summary dict a pipeline wrote to ``results.json`` and the figures beside it, so
a report can be redrawn from a finished run. The report leads with its findings, each counted
over tasks and seeds. Every table gives mean ± std **over seeds** (each seed's value is the mean
over its evaluation episodes; a deterministic env's spread over episodes is not a spread, and it
stays in ``results.json``). The document is a list of blocks that both renderers share, so the
Markdown and the HTML say the same thing. Every table of a learner's returns names the learner
(MOPO, the paper's, or TD3+BC or IQL: the summary's ``algo``).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np

from udg.experiments.plots import plot_bars, plot_coverage, plot_scatter
from udg.experiments.runs import atomic_write_text
from udg.offline import ALGO_LABELS

LABELS = {
    "random-all": "random",
    "supervised-all": "supervised",
    "udg-top1": "UDG top 1",
    "udg-top2": "UDG top 2 mixed",
    "udg-all": "UDG all mixed",
}
COLOURS = {
    "random-all": "tab:blue",
    "supervised-all": "tab:orange",
    "udg-top1": "tab:green",
    "udg-top2": "tab:red",
    "udg-all": "tab:purple",
}
"""One colour per data kind, the same in every figure (bars, scatter, coverage of the
baselines); other UDG selections (top k) take the remaining tab10 colours."""
SPARE_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:grey")
REFERENCE_LABELS = {"zero": "zero action", "random": "random actions", "expert": "expert (SAC)"}


def learner_label(summary: dict) -> str:
    """The name of the run's offline learner (MOPO for a run made before udg had others)."""
    return ALGO_LABELS[summary.get("algo", "mopo")]


def columns(summary: dict) -> list[tuple[str, str]]:
    """(key, label) of the table's data columns: baselines first, then UDG's selections."""
    keys = ["random-all", "supervised-all"] + [
        c for c in summary["columns"] if c.startswith("udg-")
    ]
    labels = dict(LABELS, **{"supervised-all": f"supervised ({summary['supervised_task']})"})
    return [(k, labels.get(k, k)) for k in keys]


def colours(summary: dict) -> dict[str, str]:
    """Each data column's colour, keyed by both its key and its label."""
    spare = iter(SPARE_COLOURS * 4)
    out = {}
    for key, label in columns(summary):
        out[key] = out[label] = COLOURS.get(key) or next(spare)
    return out


def _seeds(summary: dict) -> list:
    return summary.get("seeds") or [summary["config"]["seed"]]


def _spread(cell: dict | None, digits: int = 1) -> str:
    if not cell or cell["mean"] is None:
        return "-"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def _rows(summary: dict, table: dict, mark_best: bool) -> list[list[str]]:
    rows = []
    for task in summary["tasks"]:
        cells = [table.get(task, {}).get(key) for key, _ in columns(summary)]
        means = [c["mean"] if c and c["mean"] is not None else -np.inf for c in cells]
        best = int(np.argmax(means)) if mark_best and np.isfinite(max(means)) else -1
        text = [_spread(c) for c in cells]
        if best >= 0:
            text[best] = f"**{text[best]}**"
        rows.append([task, *text])
    return rows


def headline_rows(summary: dict, mark_best: bool = False) -> list[list[str]]:
    """Rows of the headline table: task, then the learner's return mean ± std over seeds per column
    (with ``mark_best``, the row's highest mean in ``**bold**``)."""
    return _rows(summary, summary["table"], mark_best)


def normalised_rows(summary: dict, mark_best: bool = False) -> list[list[str]]:
    """The headline table as D4RL's normalised scores (0 random policy, 100 expert)."""
    return _rows(summary, summary.get("normalised") or {}, mark_best)


def headline(summary: dict) -> str:
    """The report's opening paragraph: what was compared, over how many seeds, what held."""
    seeds, tasks = len(_seeds(summary)), summary["tasks"]
    table, reference = summary["table"], summary["reference"]
    wins, per_seed = _wins(summary, tasks, lambda u, r: u > r, ("udg-top1", "random-all"))
    learned = sum(table[t]["udg-top1"]["mean"] > reference[t]["zero"]["mean"] for t in tasks)
    theory = summary["theory"]
    negative = sum(v["rho"] < 0 for v in theory["spearman_within"].values())
    return (
        f"{learner_label(summary)} trained on UDG's data (the best-ranked agent's, the top two, "
        "all) and on two "
        f"baselines (uniformly random actions; one SAC agent trained on "
        f"{summary['supervised_task']}) for {len(tasks)} tasks on {summary.get('env', '?')}, "
        f"over {seeds} seed(s). UDG top-1 beats random data on {wins} of {len(tasks)} tasks "
        f"(per seed: {', '.join(map(str, per_seed))}) and beats doing nothing on {learned} of "
        f"{len(tasks)}; W1 to the expert data falls as return rises (Spearman < 0) within "
        f"{negative} of {len(theory['spearman_within'])} tasks. Bold: the best mean of a row."
    )


def reference_rows(summary: dict) -> list[list[str]]:
    """Per task: the online returns of zero action, random actions and the expert, then the
    selected data's own mean return per column (all mean ± std over seeds)."""
    rows = []
    for task in summary["tasks"]:
        ref = summary["reference"][task]
        data = summary["data_returns"][task]
        rows.append(
            [task]
            + [_spread(ref[k]) for k in REFERENCE_LABELS]
            + [_spread(data.get(key)) for key, _ in columns(summary)]
        )
    return rows


def paper_rows(summary: dict) -> list[list[str]]:
    """The paper's numbers in the same layout ('-' where the paper has none)."""
    paper = summary.get("paper") or {}
    return [
        [task] + [paper.get(task, {}).get(key, "-") for key, _ in columns(summary)]
        for task in summary["tasks"]
    ]


def _wins(summary: dict, tasks: list[str], better, cols: tuple[str, ...]) -> tuple[int, list[int]]:
    """How many tasks satisfy ``better(*values)`` on the means over seeds, and per seed."""
    table = summary["table"]
    by_mean = sum(bool(better(*(table[t][c]["mean"] for c in cols))) for t in tasks)
    per_seed = [
        sum(bool(better(*(table[t][c]["values"][i] for c in cols))) for t in tasks)
        for i in range(len(_seeds(summary)))
    ]
    return by_mean, per_seed


def _counted(claim: str, summary: dict, tasks, better, cols) -> str:
    by_mean, per_seed = _wins(summary, tasks, better, cols)
    seeds = len(per_seed)
    every = sum(n == len(tasks) for n in per_seed)
    return (
        f"{claim} on {by_mean} of {len(tasks)} tasks by the mean over {seeds} seed(s); "
        f"per seed on {', '.join(map(str, per_seed))} of {len(tasks)} "
        f"(all {len(tasks)} tasks in {every} of {seeds} seeds)."
    )


def findings(summary: dict) -> list[str]:
    """The paper's claims checked on this run, each counted over tasks and seeds, then whether
    the offline learner beat doing nothing."""
    tasks, sup = summary["tasks"], summary["supervised_task"]
    lines = [
        _counted(
            "UDG top-1 beats random data",
            summary,
            tasks,
            lambda u, r: u > r,
            ("udg-top1", "random-all"),
        )
    ]
    others = [t for t in tasks if t != sup]
    if others:
        lines.append(
            _counted(
                f"UDG top-1 beats the supervised ({sup}) data",
                summary,
                others,
                lambda u, s: u > s,
                ("udg-top1", "supervised-all"),
            )
        )
    if {"udg-top2", "udg-all"} <= set(summary["columns"]):
        lines.append(
            _counted(
                "top-2 >= top-1 > all holds",
                summary,
                tasks,
                lambda t2, t1, a: t2 >= t1 > a,
                ("udg-top2", "udg-top1", "udg-all"),
            )
        )
    theory = summary["theory"]
    within = theory["spearman_within"]
    negative = sum(v["rho"] < 0 for v in within.values())
    line = (
        f"Spearman(W1, return) < 0 within {negative} of {len(within)} tasks in state-action space"
    )
    if theory.get("spearman_within_features"):
        feats = theory["spearman_within_features"]
        line += f", {sum(v['rho'] < 0 for v in feats.values())} of {len(feats)} in feature space"
    line += (
        f" (one point per data column, over seeds); pooled over normalised scores rho = "
        f"{theory['spearman']['rho']:.2f} ({theory['spearman']['pairs']} points; the theory "
        "predicts < 0)."
    )
    lines.append(line)
    lines.append(
        "Worst-case proxy, max over tasks of min over buffers of W1 (lower is better; mean over "
        "seeds): " + ", ".join(f"{k} {v:.2f}" for k, v in theory["worst_case_proxy"].items()) + "."
    )
    reference, table = summary["reference"], summary["table"]
    above = [
        f"{label} {sum(table[t][key]['mean'] > reference[t]['zero']['mean'] for t in tasks)}"
        for key, label in columns(summary)
    ]
    lines.append(
        f"{learner_label(summary)} beats the zero-action policy (doing nothing) on, of "
        f"{len(tasks)} tasks: " + ", ".join(above) + "."
    )
    return lines


def timing_line(summary: dict) -> str:
    """The wall time of the invocation that wrote the report, and the stages' own recorded times
    (see ``pipeline._stage_seconds``) when present."""
    line = f"wall time {summary['wall_seconds']:.0f} s"
    phases = summary.get("phase_seconds")
    if phases:  # recorded since the seeds' data jobs run side by side
        line += " (" + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
        line += f"; the data jobs {summary['data_workers']} at a time)"
    stages = summary.get("stage_seconds")
    if stages:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())
        line += f" for this invocation (stages as recorded over all runs and seeds: {parts})"
    if summary.get("model_fits"):  # recorded since stage 2 shares models; none model-free
        line += (
            f"; {len(summary['cells'])} stage-2 cells on {summary['model_fits']} dynamics "
            "model(s), one per distinct dataset and seed"
        )
    return line


def machine_line(machine: dict) -> str:
    """Where the timings were taken: CPUs, JAX's backend (a wall time means little without it),
    Python and JAX versions, platform. Older runs recorded fewer fields; those are left out."""
    parts = [f"{machine['cpus']} CPUs"]
    if "jax_backend" in machine:  # recorded with JAX's version
        parts.append(f"JAX {machine['jax']} on {machine['jax_backend']}")
    if "python" in machine:
        parts.append(f"Python {machine['python']}")
    return ", ".join(parts + [machine["platform"]])


def provenance_line(summary: dict) -> str:
    """The revision, the timings and the machine that took them, one paragraph of the report."""
    return (
        f"git revision {summary['git_revision']}; {timing_line(summary)}; "
        f"machine: {machine_line(summary['machine'])}."
    )


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


def coverage_rows(summary: dict) -> list[list[str]]:
    """Per seed and buffer: the share of transitions outside the start room and the rooms
    reached (rooms world only)."""
    rows = []
    for seed, buffers in (summary.get("coverage") or {}).items():
        for name, row in buffers.items():
            rooms = ", ".join(map(str, row["rooms"]))
            rows.append([seed, name, f"{100 * row['outside_start']:.1f} %", rooms])
    return rows


def theory_rows(summary: dict) -> list[list[str]]:
    def number(v, fmt):
        return "-" if v is None else format(v, fmt)

    return [
        [
            p["task"],
            p["data"],
            number(p["w1"], ".3f"),
            number(p["w1_features"], ".3f"),
            f"{p['return']:.1f}",
            number(p["normalised"], ".1f"),
        ]
        for p in summary["theory"]["points"]
    ]


def spearman_rows(summary: dict) -> list[list[str]]:
    theory = summary["theory"]
    feats = theory.get("spearman_within_features") or {}
    rows = []
    for task, sa in theory["spearman_within"].items():
        f = feats.get(task)
        rows.append([task, f"{sa['rho']:.2f}", "-" if f is None else f"{f['rho']:.2f}"])
    pooled_f = theory.get("spearman_features")
    rows.append(
        [
            "pooled (normalised scores)",
            f"{theory['spearman']['rho']:.2f}",
            "-" if pooled_f is None else f"{pooled_f['rho']:.2f}",
        ]
    )
    return rows


def _figures(out: Path, summary: dict) -> list[tuple[str, str]]:
    """Draw the report's figures into ``out/figures``; (file, caption) of each."""
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    seed = _seeds(summary)[0]
    drawn = []
    for src in (out / f"seed-{seed}" / "udg" / "coverage.png", out / "udg" / "coverage.png"):
        if src.exists():
            shutil.copyfile(src, figures / "coverage.png")
            drawn.append(("coverage.png", f"Where UDG's agents went (seed {seed})."))
            break
    baseline = _baseline_coverage(out, summary, figures / "coverage_baselines.png")
    if baseline:
        drawn.append(("coverage_baselines.png", f"Where the baselines' data went (seed {seed})."))
    tasks = summary["tasks"]
    series = {
        label: (
            [summary["table"][t][key]["mean"] for t in tasks],
            [summary["table"][t][key]["std"] for t in tasks],
        )
        for key, label in columns(summary)
    }
    learner = learner_label(summary)
    plot_bars(
        tasks,
        series,
        f"{learner} return (last evaluation)",
        figures / "returns.png",
        title=f"offline return per task and data (mean ± std over {len(_seeds(summary))} seeds)",
        colours=colours(summary),
    )
    drawn.append(("returns.png", f"{learner}'s return per task and data, mean ± std over seeds."))
    points = summary["theory"]["points"]
    labels = dict(columns(summary))
    plot_scatter(
        np.array([p["w1"] for p in points]),
        np.array([p["return"] for p in points]),
        [labels.get(p["data"], p["data"]) for p in points],
        "W1(data, expert data), state-action space",
        f"{learner} return",
        figures / "w1_vs_return.png",
        title=f"pooled Spearman rho (normalised) = {summary['theory']['spearman']['rho']:.2f}",
        colours=colours(summary),
    )
    drawn.append(("w1_vs_return.png", f"W1 to the expert data against {learner}'s return."))
    return drawn


def _baseline_coverage(out: Path, summary: dict, path: Path) -> Path | None:
    """The random and supervised data of the first seed in feature space, over the walls."""
    from udg.data.minari_io import load_dataset
    from udg.envs.registry import env_walls, get_env_spec

    env, sources = summary.get("env"), summary.get("sources")
    if env is None or not sources:
        return None
    features = list(get_env_spec(env).feature_columns[:2])
    trajectories, labels = [], []
    for kind in ("random", "supervised"):
        data = load_dataset(sources[str(_seeds(summary)[0])][kind][0])
        trajectories.append(data.feature_episodes(features))
        labels.append(kind)
    palette = colours(summary)
    return plot_coverage(
        trajectories,
        labels,
        features,
        path,
        title=f"{env}: baselines",
        walls=env_walls(env),
        colours=[palette[f"{kind}-all"] for kind in labels],
    )


def _undefined_scale(summary: dict) -> list[tuple]:
    ref = summary["reference"]
    tasks = [t for t in summary["tasks"] if not ref[t]["expert"]["mean"] > ref[t]["random"]["mean"]]
    if not tasks:
        return []
    return [
        (
            "p",
            f"No normalised score on {', '.join(tasks)}: there the expert's return is not above "
            "random actions', so the scale means nothing (the expert did not learn the task).",
        )
    ]


def blocks(summary: dict, figures: list[tuple[str, str]]) -> list[tuple]:
    """The report as blocks: ``("h1"|"h2"|"p", text)``, ``("ul", items)``,
    ``("table", header, rows)``, ``("img", file, caption)``."""
    seeds = _seeds(summary)
    n = len(seeds)
    learner = learner_label(summary)
    head = ["task"] + [label for _, label in columns(summary)]
    ref_head = (
        ["task"]
        + [REFERENCE_LABELS[k] for k in REFERENCE_LABELS]
        + [f"data: {label}" for _, label in columns(summary)]
    )
    out: list[tuple] = [
        ("h1", f"UDG report: {summary['experiment']} ({summary.get('env', '')})"),
        ("p", headline(summary)),
        ("h2", "Findings"),
        ("ul", findings(summary)),
        (
            "p",
            f"Seeds {', '.join(map(str, seeds))}: each seed is the whole pipeline (stage 1, "
            f"baselines, {learner}). Every ± below is the std over the {n} seed(s); the spread over "
            "one seed's evaluation episodes is in results.json.",
        ),
        ("p", data_line(summary) + "."),
        ("p", provenance_line(summary)),
        ("h2", f"Offline return ({learner}, last evaluation; mean ± std over seeds)"),
        ("table", head, headline_rows(summary, mark_best=True)),
        (
            "h2",
            f"Normalised score of {learner}'s return (D4RL: 0 = random actions, 100 = the "
            "expert; over seeds)",
        ),
        (
            "p",
            "The expert is the online SAC agent trained on the task in the baselines stage (one "
            "per seed); its return is that of its last episodes as it collected them. Both "
            "references are means over seeds.",
        ),
        ("table", head, normalised_rows(summary, mark_best=True)),
        *_undefined_scale(summary),
        (
            "h2",
            f"Reference returns (online, real env) and the data's own mean return (the data "
            f"{learner} trained on)",
        ),
        (
            "p",
            "Zero action and random actions run the cells' evaluation episodes from the same "
            "reset states. A learner below the zero-action row has learned nothing.",
        ),
        ("table", ref_head, reference_rows(summary)),
    ]
    if summary.get("paper"):
        out += [
            ("h2", "The paper's numbers (MOPO, the paper's learner; same layout)"),
            ("table", head, paper_rows(summary)),
        ]
    if summary.get("coverage"):
        out += [
            ("h2", f"Coverage of the data {learner} trained on (rooms: 4 is the start room)"),
            (
                "p",
                "Rooms are numbered 0-8 row by row from the south-west; a transition counts "
                "where its step ends.",
            ),
            (
                "table",
                ["seed", "buffer", "outside start room", "rooms reached"],
                coverage_rows(summary),
            ),
        ]
    theory = summary["theory"]
    out += [
        ("h2", f"Theory check (returns: {learner}'s)"),
        ("p", theory["metric"] + "."),
        (
            "table",
            ["task", f"rho(W1, {learner} return), state-action", "rho, feature W1"],
            spearman_rows(summary),
        ),
        (
            "table",
            [
                "task",
                "data",
                "W1 state-action",
                "W1 features",
                f"{learner} return",
                "normalised",
            ],
            theory_rows(summary),
        ),
        ("h2", "Figures"),
        *[("img", file, caption) for file, caption in figures],
    ]
    return out


def _markdown(doc: list[tuple]) -> str:
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            _, header, rows = block
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}](figures/{block[1]})", "", f"*{block[2]}*", ""]
    return "\n".join(lines)


def _td(cell) -> str:
    text = str(cell)
    if len(text) > 4 and text.startswith("**") and text.endswith("**"):
        return f"<td><strong>{html.escape(text[2:-2])}</strong></td>"
    return f"<td>{html.escape(text)}</td>"


def _html(doc: list[tuple]) -> str:
    parts: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            _, header, rows = block
            th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in rows)
            parts.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            file, caption = html.escape(block[1]), html.escape(block[2])
            parts.append(
                f'<figure><img src="figures/{file}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UDG report</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
figure{{margin:1em 0}}img{{max-width:100%}}figcaption{{color:#555}}</style></head><body>
{body}
</body></html>
"""


def write_report(out: Path, summary: dict) -> tuple[Path, Path]:
    """Write figures, ``report.md`` and ``report.html`` into ``out``."""
    out = Path(out)
    doc = blocks(summary, _figures(out, summary))
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, _markdown(doc))
    atomic_write_text(html_path, _html(doc))
    return md_path, html_path

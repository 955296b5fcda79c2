"""The whole pipeline at a tiny size, the grid executors and resuming."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_configs import TINY, TINY_MOPO

from udg.data.minari_io import load_dataset, load_datasets
from udg.data.relabel import select
from udg.envs.tasks import get_task
from udg.errors import UdgError
from udg.evaluation import theory
from udg.experiments.data_stage import FITS_BAR
from udg.experiments.grid import Cell, run_cells
from udg.experiments.offline import OfflineConfig, model_metrics
from udg.experiments.pipeline import EXPERT_EPISODES, PipelineConfig, run_pipeline

TASKS = ("rooms-angle-0", "rooms-angle-120")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A tiny demo on the rooms world end to end, with 2 seeds."""
    out = tmp_path_factory.mktemp("demo")
    config = PipelineConfig(
        experiment="demo",
        generate=dataclasses.replace(TINY, env="rooms", num_agents=3),
        mopo=TINY_MOPO,
        tasks=TASKS,
        expert_steps=300,
        seeds=2,
    )
    logs = []
    # Two workers on any machine (the default follows its cores): the data jobs side by side.
    summary = run_pipeline(config, out, log=logs.append, progress=PROGRESS, data_workers=2)
    return out, config, summary, logs


class RecordingBars:
    """A progress factory that records every bar's total and updates."""

    def __init__(self):
        self.bars = {}

    @contextlib.contextmanager
    def __call__(self, description, total, unit):
        bar = self.bars[description] = {"total": total, "unit": unit, "updates": []}

        class Bar:
            def update(self, completed, **metrics):
                bar["updates"].append((completed, metrics))

        yield Bar()


PROGRESS = RecordingBars()


def test_pipeline_writes_complete_reports(demo_run):
    out, _, summary, _ = demo_run
    assert summary["tasks"] == list(TASKS) and summary["seeds"] == [0, 1]
    columns = {"udg-top1", "udg-top2", "udg-all", "random-all", "supervised-all"}
    assert set(summary["table"]["rooms-angle-0"]) == columns
    assert len(summary["cells"]) == 2 * 2 * 5  # tasks x seeds x columns
    for task in TASKS:
        for col, cell in summary["table"][task].items():  # mean and std are over the seeds
            returns = [summary["cells"][f"{task}/{col}/seed{s}"]["last_return"] for s in (0, 1)]
            assert cell["values"] == returns and cell["n"] == 2
            assert cell["mean"] == pytest.approx(np.mean(returns))
            assert cell["std"] == pytest.approx(np.std(returns))
    stored = json.loads((out / "results.json").read_text())
    assert stored["table"] == summary["table"]
    # One dynamics model per distinct selection and seed, shared by the tasks: per seed at most
    # all, random, supervised and each task's top-1 and top-2 (7), not one per cell (10).
    assert 2 <= summary["model_fits"] <= 2 * 7
    assert (
        f"20 stage-2 cells on {summary['model_fits']} dynamics model(s)"
        in (out / "report.md").read_text()
    )
    # Each seed is the whole pipeline: its own stage 1, experts and random data.
    for seed in (0, 1):
        manifest = json.loads((out / f"seed-{seed}" / "udg" / "manifest.json").read_text())
        assert manifest["config"]["seed"] == seed
        assert summary["sources"][str(seed)]["random"][0].startswith(str(out / f"seed-{seed}"))
    report = (out / "report.md").read_text()
    for needle in (
        "## Findings",
        "Offline return",
        "Normalised score",
        "Reference returns",
        "zero action",
        "random actions",
        "expert (SAC)",
        "data: UDG top 1",
        "UDG top 2 mixed",
        "UDG all mixed",
        "supervised (rooms-angle-0)",
        "Coverage",
        "outside start room",
        "Theory check",
        "rho, feature W1",
        "pooled (normalised scores)",
        "Worst-case proxy",
        "zero-action policy",
        "by the mean over 2 seed(s); per seed on",
        "figures/coverage.png",
        "figures/coverage_baselines.png",
        "figures/returns.png",
        "figures/w1_vs_return.png",
    ):
        assert needle in report, needle
    assert report.index("## Findings") < report.index("## Offline return")  # leads with them
    assert "± is the std over evaluation episodes" not in report
    html = (out / "report.html").read_text()
    tables = sum(line.startswith("|---") for line in report.splitlines())
    assert tables == html.count("<table>") == 6  # Markdown and HTML say the same
    assert html.count("<figcaption>") == 4
    for figure in ("coverage.png", "coverage_baselines.png", "returns.png", "w1_vs_return.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    pairs = summary["theory"]["pairs"]
    assert len(pairs) == 20 and all(p["w1"] >= 0 and p["w1_features"] >= 0 for p in pairs)
    # The solves run on a thread pool; a cell whose selection is one buffer reuses its W1.
    per_buffer = summary["theory"]["per_buffer_w1"]
    for pair in pairs:
        kind = pair["data"].removesuffix("-all")
        if kind in ("random", "supervised"):
            assert pair["w1"] == per_buffer[kind][str(pair["seed"])][pair["task"]][kind]
    pair = next(p for p in pairs if p["data"] == "udg-all" and p["seed"] == 1)
    expert_agent = 0 if pair["task"] == TASKS[0] else 1  # the experts learn TASKS in order
    expert = theory.last_episodes(
        load_dataset(out / "seed-1/experts/datasets/udg/rooms" / f"agent-{expert_agent}-v0"),
        EXPERT_EPISODES,
    )
    udg_all, _ = select(
        load_datasets(summary["sources"]["1"]["udg"]), get_task(pair["task"]), "all"
    )
    assert pair["w1"] == theory.w1_to_expert(udg_all, expert, seed=1)
    assert pair["w1_features"] == theory.w1_features_to_expert(udg_all, expert, 1, (0, 1))
    points = summary["theory"]["points"]
    assert len(points) == 10 and all(p["seeds"] == 2 for p in points)
    assert set(summary["theory"]["spearman_within"]) == set(TASKS)
    assert all(v["pairs"] == 5 for v in summary["theory"]["spearman_within"].values())
    assert set(summary["theory"]["worst_case_proxy"]) == {"udg", "random", "supervised"}
    for task in TASKS:
        ref = summary["reference"][task]
        assert set(ref) == {"zero", "random", "expert"} and ref["zero"]["n"] == 2
        assert ref["zero"]["mean"] == pytest.approx(0.0)  # no push, no displacement, no cost
    for seed in ("0", "1"):
        buffers = summary["coverage"][seed]
        assert set(buffers) == {"agent-0", "agent-1", "agent-2", "random", "supervised"}
        assert all(0 <= b["outside_start"] <= 1 and 4 in b["rooms"] for b in buffers.values())
    stages = summary["stage_seconds"]
    assert list(stages) == ["stage 1", "baselines", "MOPO cells", "model fits in the data workers"]
    assert min(stages.values()) > 0
    assert stages["MOPO cells"] == pytest.approx(
        sum(c["wall_seconds"] for c in summary["cells"].values())
    )
    assert "stages as recorded over all runs and seeds: stage 1" in report
    steps = summary["config"]["generate"]["steps"]
    assert (
        f"UDG data: 3 agents x {steps} steps, reward 1 x diversity; random data: as many "
        "transitions; supervised and expert data: one SAC agent per task, 300 steps each."
    ) in report
    experts = json.loads((out / "seed-0" / "experts" / "manifest.json").read_text())
    assert experts["config"]["steps"] == 300 and steps == 500


def test_the_report_names_the_learner_in_every_table(demo_run):
    from udg.experiments.report import blocks

    _, _, summary, _ = demo_run
    assert summary["algo"] == "mopo"
    for algo, label in (("mopo", "MOPO"), ("iql", "IQL"), ("td3bc", "TD3+BC")):
        doc = blocks({**summary, "algo": algo}, [])
        heading, tables = "", 0
        for block in doc:
            if block[0] == "h2":
                heading = block[1]
            elif block[0] == "table":
                tables += 1
                named = heading if "paper's numbers" not in heading else "MOPO"
                assert label in named or label in " ".join(block[1]), (algo, heading)
        assert tables == 6
    old = {k: v for k, v in summary.items() if k != "algo"}  # a run made before --algo
    assert "Offline return (MOPO," in " ".join(b[1] for b in blocks(old, []) if b[0] == "h2")


def test_a_model_free_pipeline_runs_every_cell_with_its_learner(tmp_path):
    from tiny_configs import TINY

    from udg.offline.iql import IQLConfig
    from udg.offline.learners import ModelFreeConfig

    learner = ModelFreeConfig(
        learner=IQLConfig(hidden_dims=(16, 16), batch_size=32),
        epochs=2,
        steps_per_epoch=20,
        eval_every=1,
        eval_episodes=2,
    )
    config = PipelineConfig(
        experiment="demo",
        generate=dataclasses.replace(TINY, env="rooms", num_agents=2),
        algo="iql",
        learner=learner,
        tasks=TASKS[:1],
        expert_steps=200,
        seeds=1,
    )
    bars = RecordingBars()
    summary = run_pipeline(config, tmp_path / "iql", log=lambda m: None, progress=bars)
    assert summary["algo"] == "iql" and len(summary["cells"]) == 5
    assert bars.bars["stage 2 IQL"]["total"] == 5 * learner.epochs
    for name in summary["cells"]:
        result = json.loads((tmp_path / "iql" / "offline" / name / "result.json").read_text())
        assert result["algo"] == "iql" and result["model"] is None
        assert result["population"]["cells"] == 5  # one population, no dynamics model
    assert not (tmp_path / "iql" / "offline" / "models").exists()
    report = (tmp_path / "iql" / "report.md").read_text()
    assert "## Offline return (IQL, last evaluation" in report and "MOPO return" not in report
    assert list(summary["stage_seconds"]) == ["stage 1", "baselines", "IQL cells"]
    # Another learner into the same folder is another config: refused, nothing changed.
    with pytest.raises(UdgError, match="different config .*algo"):
        run_pipeline(dataclasses.replace(config, algo="mopo", learner=None), tmp_path / "iql")


def test_reference_rows_and_normalised_scores_agree(demo_run):
    _, _, summary, _ = demo_run
    for task in TASKS:
        ref = summary["reference"][task]
        lo, hi = ref["random"]["mean"], ref["expert"]["mean"]
        for col, cell in summary["normalised"][task].items():
            if not hi > lo:
                assert cell["mean"] is None  # no scale where the expert did not beat random
                continue
            raw = summary["table"][task][col]["values"]
            assert cell["values"] == pytest.approx([100 * (r - lo) / (hi - lo) for r in raw])


def test_findings_count_tasks_and_seeds():
    from udg.experiments.report import _counted

    def cell(*values):
        return {"mean": float(np.mean(values)), "values": list(values)}

    summary = {
        "seeds": [0, 1, 2],
        "config": {"seed": 0},
        "table": {
            "a": {"u": cell(2, 2, 2), "r": cell(1, 1, 3)},  # wins by mean, loses seed 2
            "b": {"u": cell(1, 1, 1), "r": cell(0, 2, 0)},  # wins by mean, loses seed 1
        },
    }
    line = _counted("U beats R", summary, ["a", "b"], lambda u, r: u > r, ("u", "r"))
    assert line == (
        "U beats R on 2 of 2 tasks by the mean over 3 seed(s); per seed on 2, 1, 1 of 2 "
        "(all 2 tasks in 1 of 3 seeds)."
    )


def test_each_data_kind_keeps_its_colour_in_every_figure():
    from udg.experiments.report import colours, columns

    def summary(supervised, selections):
        return {"supervised_task": supervised, "columns": ["random-all", *selections]}

    one = colours(summary("rooms-angle-0", ["udg-top1", "udg-top2", "udg-all"]))
    other = colours(summary("ant-angle-90", ["udg-top1", "udg-top:3", "udg-all"]))
    for key in ("random-all", "supervised-all", "udg-top1", "udg-all"):
        assert one[key] == other[key]  # the same kind, the same colour, in any run
    keys = [k for k, _ in columns(summary("t", ["udg-top1", "udg-top2", "udg-top:3", "udg-all"]))]
    palette = colours(summary("t", ["udg-top1", "udg-top2", "udg-top:3", "udg-all"]))
    assert len({palette[k] for k in keys}) == len(keys)  # and no two kinds share one
    for key, label in columns(summary("t", ["udg-top1"])):
        assert palette[label] == palette[key]  # figures labelled by name find it too


def test_report_names_a_mixed_in_reward():
    from udg.experiments.generate_config import GenerateConfig
    from udg.experiments.report import data_line

    mixed = GenerateConfig(
        env="ant", num_agents=6, steps=150_000, task="ant-outward", w_task=1.0,
        observe_features=True,
    )  # fmt: skip
    gen = dataclasses.asdict(mixed)
    assert data_line({"config": {"generate": gen}}) == (
        "UDG data: 6 agents x 150000 steps, reward 1 x diversity + 1 x ant-outward "
        "(a known reward mixed in), the diversity features observed; random data: as many "
        "transitions; supervised and expert data: one SAC agent per task, 150000 steps each"
    )


def test_every_stage_shows_progress_to_its_total(demo_run):
    bars = PROGRESS.bars
    # The last seed's model fits start when the data is done: they get a bar of their own.
    assert sorted(bars) == ["data of 2 seed(s), 2 at a time", "stage 2 MOPO", FITS_BAR]
    assert bars[FITS_BAR]["unit"] == "fits"
    assert bars[FITS_BAR]["total"] == demo_run[2]["model_fits"]  # every fit, the early ones too
    for bar in bars.values():
        completed = [c for c, _ in bar["updates"]]
        assert completed == sorted(completed) and completed[-1] == bar["total"] > 0
    mopo = bars["stage 2 MOPO"]
    assert mopo["unit"] == "epochs" and mopo["total"] == 20 * TINY_MOPO.epochs
    assert any("ret" in m for _, m in mopo["updates"])
    # Each seed's models were fitted in the data workers as soon as its data was there.
    assert not any("model_epoch" in m for _, m in mopo["updates"])


def test_each_seeds_models_are_fitted_with_the_data_jobs(demo_run):
    # One fit per distinct selection and seed, logged when the seed's data is there; stage 2
    # only read them: every model its cells used was fitted in a data worker.
    out, _, summary, logs = demo_run
    fits = [line for line in logs if "dynamics model fit(s) join the data jobs" in line]
    assert len(fits) == 2
    assert sum(int(line.split(": ")[1].split()[0]) for line in fits) == summary["model_fits"]
    models = {json.loads(r.read_text())["model"] for r in (out / "offline").rglob("result.json")}
    assert len(models) == summary["model_fits"]
    assert {model_metrics(m)["fitted_in"] for m in models} == {"data worker"}
    assert summary["stage_seconds"]["model fits in the data workers"] > 0


def test_rerun_skips_finished_work(demo_run, monkeypatch):
    out, config, summary, _ = demo_run
    import udg.experiments.offline as offline

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(offline, "train", must_not_train)
    again = run_pipeline(config, out, log=lambda m: None)
    assert again["table"] == summary["table"]


def test_pipeline_uses_the_dataset_paths_the_stages_return(demo_run, monkeypatch, tmp_path):
    # The stages' datasets are handed back through links, a naming no convention rebuilds;
    # the cells and the theory check must use them, and still find every cell finished.
    out, config, summary, _ = demo_run
    import udg.experiments.data_stage as data_stage
    import udg.experiments.offline as offline
    import udg.experiments.pipeline as pipeline

    def linked(path, stage):
        link = tmp_path / stage
        if not link.exists():
            link.symlink_to(path.parent, target_is_directory=True)
        return link / path.name

    real_generate, real_random = data_stage.run_generate, data_stage.random_dataset

    def run_generate(gen, run_out, on_round=None):
        generator, paths = real_generate(gen, run_out, on_round)
        return generator, [linked(p, f"{run_out.name}{gen.seed}") for p in paths]

    cells = []
    real_run_cells = pipeline.run_cells_with_bar

    def run_cells_with_bar(grid, *args, **kwargs):
        cells.extend(grid)
        return real_run_cells(grid, *args, **kwargs)

    monkeypatch.setattr(data_stage, "run_generate", run_generate)
    monkeypatch.setattr(
        data_stage, "random_dataset", lambda *a: linked(real_random(*a), f"random{a[3]}")
    )
    monkeypatch.setattr(pipeline, "run_cells_with_bar", run_cells_with_bar)
    monkeypatch.setattr(offline, "train", lambda *a, **k: pytest.fail("recomputed"))
    again = run_pipeline(config, out, log=lambda m: None, data_workers=1)  # patched here
    folders: dict[str, set[str]] = {}
    for c in cells:
        folders.setdefault(c.data, set()).update(str(Path(p).parent) for p in c.datasets)
    assert folders == {
        kind: {str(tmp_path / f"{stage}{seed}") for seed in (0, 1)}
        for kind, stage in (("udg", "udg"), ("random", "random"), ("supervised", "experts"))
    }
    assert [len(c.datasets) for c in cells if c.data == "udg"] == [3] * 12
    assert again["table"] == summary["table"] and again["theory"] == summary["theory"]


def test_ray_executor_matches_local(demo_run, tmp_path):
    # The demo trained these two cells in-process, in its population of 20; Ray trains them
    # again, as one population of two in a worker process, from a fresh model folder.
    out, _, summary, _ = demo_run
    data = tuple(str(p) for p in sorted((out / "seed-0" / "udg" / "datasets").rglob("agent-*-v0")))
    cells = [
        Cell(
            data="udg",
            config=OfflineConfig(task="rooms-angle-0", select="top1", seed=0, mopo=TINY_MOPO),
            datasets=data,
            out=str(tmp_path / "ray-a"),
        ),
        Cell(
            data="udg",
            config=OfflineConfig(task="rooms-angle-120", select="top1", seed=0, mopo=TINY_MOPO),
            datasets=data,
            out=str(tmp_path / "ray-b"),
        ),
    ]
    import ray

    # One Ray instance for both grids below (run_cells leaves one it did not start running).
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        _ray_cells_match(summary, cells, tmp_path)
    finally:
        ray.shutdown()


def _ray_cells_match(summary, cells, tmp_path):
    events = []
    remote = run_cells(
        cells,
        tmp_path / "wr",
        executor="ray",
        on_model_epoch=lambda c, e, mse: events.append((c.name, "model", e, mse > 0)),
        on_epoch=lambda c, e, row: events.append((c.name, "policy", e, row["epoch"] == e)),
        on_done=lambda c, r: events.append((c.name, "done", None, True)),
    )
    for name in remote:
        local = summary["cells"][name]
        assert remote[name]["last_return"] == pytest.approx(local["last_return"], rel=1e-4)
    # Ray cells report each model and MOPO epoch to this process too, in order within a cell.
    for cell in cells:
        mine = [ev for ev in events if ev[0] == cell.name]
        kinds = [kind for _, kind, _, _ in mine]
        assert kinds[-1] == "done" and kinds.count("policy") == TINY_MOPO.epochs
        assert kinds.index("policy") > 0 and set(kinds[: kinds.index("policy")]) == {"model"}
        assert [e for _, kind, e, _ in mine if kind == "policy"] == list(
            range(1, TINY_MOPO.epochs + 1)
        )
        assert all(ok for *_, ok in mine)
    # Results come in the cells' order whichever ends first: here a finished cell (read back at
    # once) after one that trains.
    late = dataclasses.replace(cells[0], out=str(tmp_path / "late"))
    assert list(run_cells([late, cells[1]], tmp_path / "wr", executor="ray")) == [
        c.name for c in cells
    ]


def test_unknown_experiment_and_executor(tmp_path):
    with pytest.raises(UdgError, match="unknown experiment 'nope'"):
        run_pipeline(PipelineConfig(experiment="nope"), tmp_path)
    with pytest.raises(UdgError, match="--expert-steps must be positive"):
        run_pipeline(PipelineConfig(expert_steps=0), tmp_path)
    with pytest.raises(UdgError, match="unknown executor"):
        run_cells([], tmp_path, executor="dask")
    # Refused before stage 1 starts: nothing is written.
    with pytest.raises(UdgError, match="unknown executor 'bogus'"):
        run_pipeline(PipelineConfig(), tmp_path / "demo", executor="bogus")
    with pytest.raises(UdgError, match="--population-cells must be at least 1, got 0"):
        run_pipeline(PipelineConfig(), tmp_path / "demo", max_cells=0)
    with pytest.raises(UdgError, match="--data-workers must be at least 1, got 0"):
        run_pipeline(PipelineConfig(), tmp_path / "demo", data_workers=0)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--env", "maze"], "unknown demo env 'maze'; known: point, rooms"),
        (["demo", "--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["experiment", "demo-point"], "use `udg demo` for the demo"),
        (["demo", "--algo", "bogus"], "unknown algo 'bogus'; known: iql, mopo, td3bc."),
        (["experiment", "cheetah", "--algo", "cql"], "unknown algo 'cql'"),
    ],
)
def test_demo_refusals_are_one_line_before_any_folder(tmp_path, capsys, argv, message):
    from udg.cli.main import main

    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("udg: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_data_jobs_side_by_side_equal_one_after_another(demo_run, tmp_path):
    # The fixture's jobs ran in worker processes, one core and one JAX device each; here the
    # same seed's jobs run in this process (every core's device): the datasets are equal.
    from udg.experiments import pipeline
    from udg.experiments.data_stage import make_data

    out, config, summary, _ = demo_run
    assert summary["data_workers"] == 2
    spec = pipeline.get_experiment(config.experiment)
    gens, tasks = pipeline._validated(config, spec)
    jobs = pipeline._seed_jobs(config, spec, 0, gens[0], tasks, tmp_path)
    data, loaded = make_data(jobs, 1, spec.supervised_task, lambda m: None, RecordingBars())
    here = [p for kind in ("udg", "random", "supervised") for p in data[0].sources[kind]]
    there = [p for kind in ("udg", "random", "supervised") for p in summary["sources"]["0"][kind]]
    assert len(here) == len(there) == 5
    for mine, theirs in zip(here, there, strict=True):
        a, b = loaded[Path(mine)], load_dataset(theirs)
        for column in ("observations", "actions", "rewards", "next_observations"):
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column))


def test_a_failing_data_job_stops_the_workers_with_its_error(tmp_path):
    from udg.experiments.data_stage import DataJob, run_jobs

    (tmp_path / "file").write_text("not a run folder")
    gen = dataclasses.replace(TINY, env="rooms", num_agents=2)
    jobs = [
        DataJob(0, "udg", tmp_path / "file", gen, "bad"),
        DataJob(1, "random", tmp_path / "random", gen, "random"),
    ]
    with pytest.raises(UdgError, match="file is a file, not a folder; choose a new or empty"):
        run_jobs(jobs, 2, lambda message: None, lambda job, result: [])

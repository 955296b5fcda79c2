"""The whole pipeline at a tiny size, the grid executors and resuming."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
from tiny_configs import TINY, TINY_MOPO

from udg.errors import UdgError
from udg.experiments.grid import Cell, run_cells
from udg.experiments.offline import OfflineConfig
from udg.experiments.pipeline import PipelineConfig, run_pipeline

TASKS = ("point-angle-0", "point-angle-120")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = PipelineConfig(
        experiment="demo",
        generate=dataclasses.replace(TINY, num_agents=3),
        mopo=TINY_MOPO,
        tasks=TASKS,
        expert_steps=300,
    )
    logs = []
    summary = run_pipeline(config, out, log=logs.append, progress=PROGRESS)
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
    assert summary["tasks"] == list(TASKS)
    assert set(summary["table"]["point-angle-0"]) == {
        "udg-top1",
        "udg-top2",
        "udg-all",
        "random-all",
        "supervised-all",
    }
    assert len(summary["cells"]) == 2 * 5
    stored = json.loads((out / "results.json").read_text())
    assert stored["table"] == summary["table"]
    report = (out / "report.md").read_text()
    for needle in (
        "Offline return",
        "UDG top 1",
        "UDG top 2 mixed",
        "UDG all mixed",
        "random",
        "supervised (point-angle-0)",
        "Findings",
        "Theory check",
        "Spearman",
        "Worst-case proxy",
        "figures/coverage.png",
        "figures/returns.png",
        "figures/w1_vs_return.png",
    ):
        assert needle in report, needle
    html = (out / "report.html").read_text()
    assert html.count("<table>") == 2 and "w1_vs_return.png" in html
    for figure in ("coverage.png", "returns.png", "w1_vs_return.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    pairs = summary["theory"]["pairs"]
    assert len(pairs) == 10 and all(p["w1"] >= 0 for p in pairs)
    assert set(summary["theory"]["worst_case_proxy"]) == {"udg", "random", "supervised"}
    stages = summary["stage_seconds"]
    assert list(stages) == ["stage 1", "baselines", "MOPO cells"] and min(stages.values()) > 0
    assert stages["MOPO cells"] == sum(c["wall_seconds"] for c in summary["cells"].values())
    assert "stages as recorded over all runs: stage 1" in report
    steps = summary["config"]["generate"]["steps"]
    assert (
        f"UDG data: 3 agents x {steps} steps, reward 1 x diversity; random data: as many "
        "transitions; supervised and expert data: one SAC agent per task, 300 steps each."
    ) in report
    experts = json.loads((out / "experts" / "manifest.json").read_text())
    assert experts["config"]["steps"] == 300 and steps == 500


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
    assert sorted(bars) == ["baselines point K=2", "stage 1 point K=3", "stage 2 MOPO"]
    for bar in bars.values():
        completed = [c for c, _ in bar["updates"]]
        assert completed == sorted(completed) and completed[-1] == bar["total"] > 0
    mopo = bars["stage 2 MOPO"]
    assert mopo["unit"] == "epochs" and mopo["total"] == 10 * TINY_MOPO.epochs
    assert any("ret" in m for _, m in mopo["updates"])
    assert any("model_epoch" in m for _, m in mopo["updates"])  # the fit shows on the bar too


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
    import udg.experiments.offline as offline
    import udg.experiments.pipeline as pipeline

    def linked(path, stage):
        link = tmp_path / stage
        if not link.exists():
            link.symlink_to(path.parent, target_is_directory=True)
        return link / path.name

    real_generate, real_random = pipeline.run_generate, pipeline._random_dataset

    def run_generate(gen, run_out, on_round=None):
        generator, paths = real_generate(gen, run_out, on_round)
        return generator, [linked(p, run_out.name) for p in paths]

    cells = []
    real_run_cells = pipeline.run_cells_with_bar

    def run_cells_with_bar(grid, *args, **kwargs):
        cells.extend(grid)
        return real_run_cells(grid, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_generate", run_generate)
    monkeypatch.setattr(pipeline, "_random_dataset", lambda *a: linked(real_random(*a), "random"))
    monkeypatch.setattr(pipeline, "run_cells_with_bar", run_cells_with_bar)
    monkeypatch.setattr(offline, "train", lambda *a, **k: pytest.fail("recomputed"))
    again = run_pipeline(config, out, log=lambda m: None)
    folders = {c.data: {str(Path(p).parent) for p in c.datasets} for c in cells}
    assert folders == {
        "udg": {str(tmp_path / "udg")},
        "random": {str(tmp_path / "random")},
        "supervised": {str(tmp_path / "experts")},
    }
    assert [len(c.datasets) for c in cells if c.data == "udg"] == [3] * 6
    assert again["table"] == summary["table"] and again["theory"] == summary["theory"]


def test_ray_executor_matches_local(demo_run, tmp_path):
    out, _, summary, _ = demo_run
    data = tuple(str(p) for p in sorted((out / "udg" / "datasets").rglob("agent-*-v0")))
    cells = [
        Cell(
            data="udg",
            config=OfflineConfig(task="point-angle-0", select="top1", seed=seed, mopo=TINY_MOPO),
            datasets=data,
            out=str(tmp_path / f"x-{seed}"),
        )
        for seed in (0, 1)
    ]

    def recorder(events):
        return {
            "on_model_epoch": lambda c, e, mse: events.append((c.name, "model", e, mse > 0)),
            "on_epoch": lambda c, e, row: events.append((c.name, "policy", e, row["epoch"] == e)),
            "on_done": lambda c, r: events.append((c.name, "done", None, True)),
        }

    local_events, ray_events = [], []
    local = run_cells(cells, tmp_path / "wl", executor="local", **recorder(local_events))
    ray_cells = [dataclasses.replace(c, out=c.out.replace("x-", "ray-")) for c in cells]
    remote = run_cells(ray_cells, tmp_path / "wr", executor="ray", **recorder(ray_events))
    # Results come in the cells' order whichever ends first: here a finished cell (read back at
    # once) after one that trains.
    late = dataclasses.replace(cells[0], out=str(tmp_path / "late"))
    assert list(run_cells([late, ray_cells[1]], tmp_path / "wr", executor="ray")) == [
        c.name for c in cells
    ]
    for name in local:
        assert remote[name]["last_return"] == pytest.approx(local[name]["last_return"], rel=1e-5)
    # Ray cells report each model and MOPO epoch to this process too, in order within a cell.
    for name in local:
        mine = [ev for ev in local_events if ev[0] == name]
        assert [ev for ev in ray_events if ev[0] == name] == mine
        kinds = [kind for _, kind, _, _ in mine]
        assert kinds[-1] == "done" and kinds.count("policy") == TINY_MOPO.epochs
        assert kinds.index("policy") > 0 and set(kinds[: kinds.index("policy")]) == {"model"}
        assert all(ok for *_, ok in mine)


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
    assert not (tmp_path / "demo").exists()

"""Grid cells: names and table columns made from fields, grouping by fields, shipping to Ray."""

from __future__ import annotations

import pickle

import pytest

from udg.errors import UdgError
from udg.experiments.grid import Cell
from udg.experiments.offline import OfflineConfig
from udg.experiments.pipeline import _table
from udg.experiments.report import headline_rows

# Task names with the characters the old string parsing split on.
TASKS = ("ant/angle-0", "ant-angle/seed1")


def cell(task: str, data: str, selection: str, seed: int) -> Cell:
    config = OfflineConfig(task=task, select=selection, seed=seed)
    return Cell(data=data, config=config, datasets=("a", "b"), out=f"out/{seed}")


KINDS = (("udg", "top1"), ("udg", "top:2"), ("random", "all"))
GRID = [
    cell(task, data, selection, seed)
    for task in TASKS
    for seed in (0, 1)
    for data, selection in KINDS
]


def result(c: Cell) -> dict:
    kind = KINDS.index((c.data, c.selection))
    return {"last_return": 100.0 * TASKS.index(c.task) + 10.0 * c.seed + kind, "last_std": kind}


RESULTS = {c.name: result(c) for c in GRID}


def test_a_cell_derives_its_name_and_column_from_its_fields():
    c = cell("ant/angle-0", "supervised", "all", 3)
    assert (c.task, c.data, c.selection, c.seed) == ("ant/angle-0", "supervised", "all", 3)
    assert c.column == "supervised-all"
    assert c.name == "ant/angle-0/supervised-all/seed3"
    assert pickle.loads(pickle.dumps(c)) == c  # Ray ships cells to its tasks


def test_an_unknown_data_kind_is_refused():
    with pytest.raises(UdgError, match="unknown data kind 'expert'; known: random, supervised"):
        cell("point-angle-0", "expert", "all", 0)


def test_table_groups_cells_by_task_and_column_over_seeds():
    table = _table(GRID, RESULTS)
    assert list(table) == list(TASKS)
    assert list(table["ant/angle-0"]) == ["udg-top1", "udg-top:2", "random-all"]
    assert table["ant/angle-0"]["udg-top1"] == {  # seeds 0 and 1
        "mean": 5.0,
        "std": 5.0,
        "n": 2,
        "values": [0.0, 10.0],
    }
    assert table["ant-angle/seed1"]["random-all"]["mean"] == 107.0


def test_the_headline_spread_is_over_seeds_never_over_episodes():
    one_seed = [c for c in GRID if c.seed == 1]
    summary = {
        "tasks": list(TASKS),
        "columns": ["udg-top1", "random-all", "supervised-all"],
        "supervised_task": TASKS[0],
        "table": _table(one_seed, RESULTS),
    }
    assert headline_rows(summary) == [  # random, supervised (none here), UDG top 1
        ["ant/angle-0", "12.0 ± 0.0", "-", "10.0 ± 0.0"],  # last_std (episodes) is not shown
        ["ant-angle/seed1", "112.0 ± 0.0", "-", "110.0 ± 0.0"],
    ]

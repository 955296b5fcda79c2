"""The rooms demo's criteria for each offline learner, from the runs' results.json files.

    python results/demo-learners/compare.py results/demo results/demo-td3bc results/demo-iql

Prints, per run: the issue's five criteria (counted on the means over seeds, and per seed),
and how many cells (task x seed) of each data column ended with a return no policy confined to
the start room can earn: displacement along the task's angle is bounded there by
(2.5 + 0.1)(|cos| + |sin|) (the start room's half-side plus the reset noise), and the control
cost only lowers the return, so a mean return above the bound means the policy left the start
room through a doorway.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

COLUMNS = ("udg-top1", "udg-top2", "udg-all", "random-all", "supervised-all")


def start_room_bound(task: str) -> float:
    theta = math.radians(float(task.rsplit("-", 1)[1]))
    return (2.5 + 0.1) * (abs(math.cos(theta)) + abs(math.sin(theta)))


def counts(tasks: list[str], supervised: str, value) -> dict[str, int]:
    """The criteria's counts over ``tasks``, with ``value(task, column)`` the number compared
    (the supervised data's own task left out of its comparison)."""
    return {
        "top-1 > random": sum(value(t, "udg-top1") > value(t, "random-all") for t in tasks),
        "top-1 > supervised": sum(
            value(t, "udg-top1") > value(t, "supervised-all") for t in tasks if t != supervised
        ),
        "top-2 >= top-1 > all": sum(
            value(t, "udg-top2") >= value(t, "udg-top1") > value(t, "udg-all") for t in tasks
        ),
    }


def main() -> None:
    for run in map(Path, sys.argv[1:]):
        r = json.loads((run / "results.json").read_text())
        tasks, table, seeds = r["tasks"], r["table"], r["seeds"]
        algo = r.get("algo", "mopo")
        supervised = r["supervised_task"]
        by_mean = counts(tasks, supervised, lambda t, c, r=table: r[t][c]["mean"])
        per_seed = [
            counts(tasks, supervised, lambda t, c, i=i, r=table: r[t][c]["values"][i])
            for i in range(len(seeds))
        ]
        within = r["theory"]["spearman_within"]
        proxy = r["theory"]["worst_case_proxy"]
        print(f"## {run} ({algo}, git {r['git_revision'][:7]}, {len(seeds)} seeds)")
        for name, n in by_mean.items():
            of = len(tasks) - 1 if "supervised" in name else len(tasks)
            seeds_text = ", ".join(str(s[name]) for s in per_seed)
            print(f"- {name}: {n} of {of} by the mean; per seed {seeds_text}")
        negative = sum(v["rho"] < 0 for v in within.values())
        print(
            f"- Spearman(W1, return) < 0 within {negative} of {len(within)} tasks; pooled rho "
            f"{r['theory']['spearman']['rho']:+.2f}"
        )
        print(
            f"- worst-case proxy: udg {proxy['udg']:.2f}, random {proxy['random']:.2f}, "
            f"supervised {proxy['supervised']:.2f}"
        )
        left = {
            c: sum(
                r["cells"][f"{t}/{c}/seed{s}"]["last_return"] > start_room_bound(t)
                for t in tasks
                for s in seeds
            )
            for c in COLUMNS
        }
        total = len(tasks) * len(seeds)
        print(
            f"- cells whose return proves they left the start room, of {total}: "
            + ", ".join(f"{c} {n}" for c, n in left.items())
        )
        print(f"- stage times: {json.dumps({k: round(v) for k, v in r['stage_seconds'].items()})}")
        print()


if __name__ == "__main__":
    main()

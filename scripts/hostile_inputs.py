"""A battery of hostile inputs to the ``udg`` CLI (a one-off analysis script).

The promise checked: every bad input gets exit status 2 and exactly one stderr line starting
``udg: error: `` (tyro's own parsing-error box is accepted too, counted apart), quickly, with no
traceback and nothing left behind in the folder it ran in.

Each case runs in a fresh folder under /tmp/udg_hostile/cases; the files there are snapshotted
before and after. Cheap valid fixtures (a random dataset, a tiny generate run, a tiny offline
run) are built once under /tmp/udg_hostile/fixtures and copied into the cases that may write.

    .venv/bin/python scripts/hostile_inputs.py            # the whole battery
    .venv/bin/python scripts/hostile_inputs.py --only poison --workers 1

Results: a summary on stdout and every case in /tmp/hostile_results.json. Needs root for the
read-only and full-disk cases (tmpfs mounts); without it they fall back or are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UDG = str(REPO / ".venv" / "bin" / "udg")
BASE = Path("/tmp/udg_hostile")
FIXTURES = BASE / "fixtures"
CASES_DIR = BASE / "cases"
RESULTS = Path("/tmp/hostile_results.json")
TIMEOUT_S = 60.0
LATE_S = 15.0
NINES = "9" * 400
LONG = "a" * 300  # one path component over 255 bytes

FIX = {
    "ds": str(FIXTURES / "ds"),  # a Minari root holding one random point dataset
    "dsd": str(FIXTURES / "ds" / "udg" / "point" / "r1-v0"),  # that dataset's folder
    "gen": str(FIXTURES / "gen"),  # a finished tiny generate run (2 agents)
    "off": str(FIXTURES / "off"),  # a finished tiny offline run
}

# ---------------------------------------------------------------------------------------------
# Argument builders: a valid, cheap command whose flags a case overrides (None drops a flag).


def _flags(defaults: dict, overrides: dict) -> list[str]:
    merged = {**defaults, **overrides}
    out: list[str] = []
    for key, value in merged.items():
        if value is None:
            continue
        out.append("--" + key.replace("_", "-"))
        out.extend(value if isinstance(value, (list, tuple)) else [str(value)])
    return out


def cr(**kw) -> list[str]:
    return [
        "collect-random",
        *_flags(dict(env="point", steps=200, seed=0, name="c1", out="{t}/root"), kw),
    ]


def gen(**kw) -> list[str]:
    return [
        "generate",
        *_flags(
            dict(
                out="{t}/g", env="point", agents=2, steps=400, episode_length=50, warmup_steps=100
            ),
            kw,
        ),
    ]


def off(**kw) -> list[str]:
    return [
        "offline",
        *_flags(
            dict(
                data="{gen}",
                task="point-angle-60",
                out="{t}/o",
                epochs=1,
                model_epochs=2,
                eval_episodes=1,
                eval_episode_length=20,
            ),
            kw,
        ),
    ]


def demo(**kw) -> list[str]:
    return ["demo", *_flags(dict(out="{t}/d", env="point", seeds=1), kw)]


def exp(name: str = "cheetah", **kw) -> list[str]:
    return ["experiment", name, *_flags(dict(out="{t}/e", scale="demo", seeds=1), kw)]


def plot(*runs: str, **kw) -> list[str]:
    return ["plot", *(runs or ("{t}/o",)), *_flags(dict(out="{t}/fig.png"), kw)]


def cov(run: str = "{t}/g", **kw) -> list[str]:
    return ["plot-coverage", run, *_flags({}, kw)]


def ev(run: str = "{t}/o", **kw) -> list[str]:
    return ["evaluate", run, *_flags(dict(episodes=1, episode_length=20), kw)]


def div(run: str = "{t}/g", **kw) -> list[str]:
    return ["diversity", run, *_flags(dict(episodes=2), kw)]


# ---------------------------------------------------------------------------------------------
# Setup steps: each takes the case folder; Skip says the case cannot run on this machine.


class Skip(Exception):
    """The case cannot be set up here (the message says why)."""


Setup = Callable[[Path], None]


def junk(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible garbage bytes."""
    return random.Random(seed).randbytes(n)


def chain(*steps: Setup) -> Setup:
    def run(t: Path) -> None:
        for step in steps:
            step(t)

    return run


def copy(key: str, dst: str) -> Setup:
    return lambda t: shutil.copytree(FIX[key], t / dst, symlinks=True)


def write(rel: str, data: bytes | str) -> Setup:
    def run(t: Path) -> None:
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return run


def truncate(rel: str, fraction: float = 0.5) -> Setup:
    def run(t: Path) -> None:
        p = t / rel
        os.truncate(p, int(p.stat().st_size * fraction))

    return run


def remove(rel: str) -> Setup:
    return lambda t: (t / rel).unlink()


def symlink(rel: str, target: str) -> Setup:
    return lambda t: (t / rel).symlink_to(target)


def mkdirs(rel: str) -> Setup:
    return lambda t: (t / rel).mkdir(parents=True, exist_ok=True)


def _mount(args: list[str], where: Path) -> bool:
    return subprocess.run(["mount", *args, str(where)], capture_output=True).returncode == 0


def readonly(rel: str) -> Setup:
    """A read-only folder: chmod 555 for a normal user; as root (which chmod does not stop) a
    read-only tmpfs, else Skip."""

    def run(t: Path) -> None:
        d = t / rel
        d.mkdir(parents=True)
        if os.geteuid() != 0:
            d.chmod(0o555)
            return
        if not _mount(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"], d):
            raise Skip("running as root and `mount -t tmpfs -o ro` is not allowed")
        try:
            (d / ".probe").write_text("x")
        except OSError:
            return
        raise Skip("the read-only mount accepted a write")

    return run


def small_disk(rel: str, fill: bool) -> Setup:
    """A 400 KiB tmpfs; ``fill`` fills it to the last byte first (the filler file is part of
    the before-snapshot, so it is not a leftover)."""

    def run(t: Path) -> None:
        d = t / rel
        d.mkdir(parents=True)
        if not _mount(["-t", "tmpfs", "-o", "size=400k", "tmpfs"], d):
            raise Skip("`mount -t tmpfs -o size=400k` is not allowed here")
        if fill:
            fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                for size in (65536, 4096, 512, 1):
                    while True:
                        try:
                            os.write(fd, b"\0" * size)
                        except OSError:
                            break
            finally:
                os.close(fd)
            if os.statvfs(d).f_bavail != 0:
                raise Skip("could not fill the small disk")

    return run


def unmount_below(t: Path) -> None:
    prefix = str(t) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


# ---------------------------------------------------------------------------------------------
# Cases.


@dataclass(frozen=True)
class Case:
    klass: str  # outputs, numbers, poison, damaged, concurrency, names, kinds, control
    name: str
    argv: tuple[str, ...]  # udg's arguments; {t} is the case folder, {ds} {dsd} {gen} {off}
    setup: Setup | None = None
    expect: str = "refuse"  # refuse, any (exit 0 legitimate too) or succeed
    then: tuple[str, ...] | None = None  # poison: the corrected command, which must succeed
    parallel: int = 1  # concurrency: copies run at once, argv's {i} their index
    note: str = ""


def C(klass: str, name: str, argv, setup: Setup | None = None, **kw) -> Case:
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    then = kw.pop("then", None)
    if isinstance(then, str):
        then = shlex.split(then)
    return Case(klass, name, tuple(argv), setup, then=tuple(then) if then else None, **kw)


G, OFF = copy("gen", "g"), copy("off", "o")  # writable copies of the fixture runs
FILE = write("file.txt", "not a folder\n")
JUNK = write("stuff/notes.txt", "somebody's files\n")
RO, SMALL, FULL = readonly("ro"), small_disk("disk", False), small_disk("disk", True)

# The output-location variants: (label, the --out value, setup).
OUT_VARIANTS = [
    ("proc", "/proc/udg-hostile/x", None),
    ("readonly", "{t}/ro/x", RO),
    ("existing-file", "{t}/file.txt", FILE),
    ("nonudg-folder", "{t}/stuff", JUNK),
    ("long-component", "{t}/" + LONG + "/x", None),
    ("small-disk", "{t}/disk/x", SMALL),
    ("full-disk", "{t}/disk/x", FULL),
]


def output_cases() -> list[Case]:
    cases = []
    for label, out, setup in OUT_VARIANTS:
        cr_kw = dict(out=out, steps=20000) if label == "small-disk" else dict(out=out)
        # A Minari root may hold other files: adding a dataset to one is legitimate.
        cases.append(
            C(
                "outputs",
                f"collect-random/{label}",
                cr(**cr_kw),
                setup,
                expect="any" if label == "nonudg-folder" else "refuse",
            )
        )
        cases.append(C("outputs", f"generate/{label}", gen(out=out), setup))
        cases.append(C("outputs", f"offline/{label}", off(out=out), setup))
        if label != "small-disk":  # demo/experiment run minutes before their first big write
            cases.append(C("outputs", f"demo/{label}", demo(out=out), setup))
            cases.append(C("outputs", f"experiment/{label}", exp(out=out), setup))
        png = out if label in ("existing-file", "nonudg-folder") else out + ".png"
        pre = chain(setup, OFF) if setup else OFF
        fits = label in ("existing-file", "small-disk")  # a PNG fits in 400 KiB
        cases.append(
            C("outputs", f"plot/{label}", plot(out=png), pre, expect="any" if fits else "refuse")
        )
        pre = chain(setup, G) if setup else G
        cases.append(
            C(
                "outputs",
                f"plot-coverage/{label}",
                cov(out=png),
                pre,
                expect="any" if fits else "refuse",
            )
        )
    # --out into an existing run of another kind, or of the same kind with another config.
    cases += [
        C("outputs", "demo/into-generate-run", demo(out="{t}/g"), G),
        C("outputs", "experiment/into-generate-run", exp(out="{t}/g"), G),
        C("outputs", "generate/into-offline-run", gen(out="{t}/o"), OFF),
        C("outputs", "offline/into-generate-run", off(out="{t}/g"), G),
        C("outputs", "generate/into-run-datasets-root", gen(out="{t}/g/datasets"), G),
        C("outputs", "offline/into-generate-run-datasets", off(out="{t}/g/datasets"), G),
        C("outputs", "collect-random/into-offline-run", cr(out="{t}/o"), OFF, expect="any"),
        C("outputs", "generate/same-run-other-seed", gen(out="{t}/g", seed=1), G),
        C("outputs", "generate/same-run-other-agents", gen(out="{t}/g", agents=3), G),
        C("outputs", "offline/same-run-other-task", off(out="{t}/o", task="point-angle-0"), OFF),
        C("outputs", "plot/out-is-a-run-folder", plot(out="{t}/g"), chain(OFF, G)),
        C("outputs", "plot-coverage/out-is-a-run-folder", cov(out="{t}/o"), chain(OFF, G)),
        C(
            "outputs",
            "plot/out-missing-parent",
            plot(out="{t}/no/such/dir/fig.png"),
            OFF,
            expect="any",
        ),
        C("outputs", "plot/out-not-png", plot(out="{t}/fig.txt"), OFF, expect="any"),
    ]
    return cases


def number_cases() -> list[Case]:
    big, nan, inf = str(10**12), "nan", "inf"
    n = []
    # collect-random
    for label, kw in [
        ("seed-negative", dict(seed=-1)),
        ("seed-2**64", dict(seed=2**64)),
        ("steps-0", dict(steps=0)),
        ("steps-negative", dict(steps=-1)),
        ("steps-1e12", dict(steps=big)),
        ("max-episode-steps-0", dict(max_episode_steps=0)),
        ("max-episode-steps-negative", dict(max_episode_steps=-3)),
        ("env-bogus", dict(env="bogus")),
        ("env-uppercase", dict(env="POINT")),
        ("env-empty", dict(env="")),
    ]:
        n.append(C("numbers", f"collect-random/{label}", cr(**kw)))
    # generate
    for label, kw in [
        ("seed-negative", dict(seed=-1)),
        ("seed-2**64", dict(seed=2**64)),
        ("agents-0", dict(agents=0)),
        ("agents-negative", dict(agents=-2)),
        ("agents-10000", dict(agents=10000)),
        ("steps-0", dict(steps=0)),
        ("steps-negative", dict(steps=-1)),
        ("steps-1e12", dict(steps=big)),
        ("episode-length-0", dict(episode_length=0)),
        ("episode-length-negative", dict(episode_length=-1)),
        ("episode-length-1e8", dict(episode_length=10**8)),
        ("warmup-negative", dict(warmup_steps=-1)),
        ("warmup-1e12", dict(warmup_steps=big)),
        ("w-div-nan", dict(w_div=nan)),
        ("w-div-inf", dict(w_div=inf)),
        ("w-div-neg-inf", dict(w_div="-inf")),
        ("w-task-nan", dict(w_task=nan)),
        ("w-task-inf", dict(w_task=inf)),
        ("reward-scale-nan", dict(reward_scale=nan)),
        ("reward-scale-inf", dict(reward_scale=inf)),
        ("reward-scale-neg-inf", dict(reward_scale="-inf")),
        ("temperature-nan", dict(temperature=nan)),
        ("temperature-inf", dict(temperature=inf)),
        ("temperature-negative", dict(temperature="-0.2")),
        ("temperature-word", dict(temperature="hot")),
        ("final-rollouts-negative", dict(final_rollouts=-1)),
        ("final-rollouts-1e9", dict(final_rollouts=10**9)),
        ("env-bogus", dict(env="bogus")),
        ("scale-bogus", dict(scale="huge")),
        ("task-bogus", dict(task="nope")),
        ("task-other-env", dict(task="ant-angle-0")),
        ("task-angle-400-nines", dict(task="point-angle-" + NINES)),
        ("task-angle-nan", dict(task="point-angle-nan")),
        ("task-angle-inf", dict(task="point-angle-inf")),
        ("task-angle-bad-exponent", dict(task="point-angle-6e")),  # 6e1 is valid
        ("agent-tasks-count-mismatch", dict(agent_tasks=["point-angle-0"])),
        ("agent-tasks-bogus", dict(agent_tasks=["nope", "point-angle-0"])),
        ("agent-tasks-other-env", dict(agent_tasks=["ant-angle-0", "point-angle-0"])),
        ("features-bogus", dict(features=["no_such_column"])),
        ("features-duplicate", dict(features=["x_position", "x_position"])),
    ]:
        n.append(C("numbers", f"generate/{label}", gen(**kw)))
    n.append(
        C(
            "numbers",
            "generate/cheetah-cz-bad-exponent",
            gen(env="halfcheetah", task="cheetah-cz-1e"),
        )
    )
    n.append(
        C(
            "numbers",
            "generate/cheetah-cz-400-nines",
            gen(env="halfcheetah", task="cheetah-cz-" + NINES),
        )
    )
    # offline
    for label, kw in [
        ("seed-negative", dict(seed=-1)),
        ("epochs-0", dict(epochs=0)),
        ("epochs-negative", dict(epochs=-1)),
        ("epochs-1e12", dict(epochs=big)),
        ("rollout-length-0", dict(rollout_length=0)),
        ("rollout-length-negative", dict(rollout_length=-1)),
        ("rollout-length-1e9", dict(rollout_length=10**9)),
        ("penalty-coef-nan", dict(penalty_coef=nan)),
        ("penalty-coef-inf", dict(penalty_coef=inf)),
        ("penalty-coef-negative", dict(penalty_coef=-1)),
        ("penalty-bogus", dict(penalty="bogus")),
        ("reward-bogus", dict(reward="bogus")),
        ("eval-episodes-0", dict(eval_episodes=0)),
        ("eval-episodes-negative", dict(eval_episodes=-1)),
        ("eval-episodes-1e9", dict(eval_episodes=10**9)),
        ("observation-dims-0", dict(observation_dims=0)),
        ("observation-dims-negative", dict(observation_dims=-1)),
        ("observation-dims-999", dict(observation_dims=999)),
        ("eval-episode-length-0", dict(eval_episode_length=0)),
        ("eval-episode-length-negative", dict(eval_episode_length=-1)),
        ("eval-episode-length-1e8", dict(eval_episode_length=10**8)),
        ("model-epochs-0", dict(model_epochs=0)),
        ("model-epochs-negative", dict(model_epochs=-1)),
        ("model-batches-negative", dict(model_batches=-1)),
        ("select-bogus", dict(select="best")),
        ("select-top0", dict(select="top:0")),
        ("select-top-negative", dict(select="top:-1")),
        ("select-top-word", dict(select="top:x")),
        ("select-top-999", dict(select="top:999")),
        ("scale-bogus", dict(scale="huge")),
        ("task-bogus", dict(task="nope")),
        ("task-other-env", dict(task="ant-angle-0")),
        ("task-angle-400-nines", dict(task="point-angle-" + NINES)),
        ("task-angle-nan", dict(task="point-angle-nan")),
        ("task-angle-inf", dict(task="point-angle-inf")),
        ("task-angle-bad-exponent", dict(task="point-angle-1e+")),  # 1e5 is valid
        ("data-missing", dict(data="{t}/nothing-here")),
        ("model-missing", dict(model="{t}/no-model.msgpack")),
    ]:
        n.append(C("numbers", f"offline/{label}", off(**kw)))
    # demo and experiment (a valid one runs for minutes: accepting shows as a hang)
    for label, kw in [
        ("seeds-0", dict(seeds=0)),
        ("seeds-negative", dict(seeds=-1)),
        ("seeds-1e6", dict(seeds=10**6)),
        ("seed-negative", dict(seed=-1)),
        ("executor-bogus", dict(executor="slurm")),
        ("env-bogus", dict(env="bogus")),
        ("env-ant", dict(env="ant")),
        ("scale-bogus", dict(scale="huge")),
        ("expert-steps-0", dict(expert_steps=0)),
        ("expert-steps-negative", dict(expert_steps=-1)),
        ("expert-steps-1e12", dict(expert_steps=big)),
        ("population-cells-0", dict(population_cells=0)),
        ("population-cells-negative", dict(population_cells=-1)),
        ("address-without-ray", dict(address="10.0.0.1:6379")),
    ]:
        n.append(C("numbers", f"demo/{label}", demo(**kw)))
    n.append(C("numbers", "experiment/name-bogus", exp("walker")))
    n.append(C("numbers", "experiment/name-empty", exp("")))
    for label, kw in [
        ("scale-bogus", dict(scale="huge")),
        ("seeds-0", dict(seeds=0)),
        ("seed-negative", dict(seed=-1)),
        ("executor-bogus", dict(executor="slurm")),
        ("population-cells-0", dict(population_cells=0)),
        ("expert-steps-negative", dict(expert_steps=-1)),
    ]:
        n.append(C("numbers", f"experiment/{label}", exp(**kw)))
    # evaluate, diversity, plot-coverage, rank on the fixtures
    for label, kw in [
        ("episodes-0", dict(episodes=0)),
        ("episodes-negative", dict(episodes=-1)),
        ("episodes-1e9", dict(episodes=10**9)),
        ("seed-negative", dict(seed=-1)),
        ("episode-length-0", dict(episode_length=0)),
        ("episode-length-negative", dict(episode_length=-1)),
        ("episode-length-1e8", dict(episode_length=10**8)),
        ("task-bogus", dict(task="nope")),
        ("task-other-env", dict(task="ant-angle-0")),
        ("task-angle-nan", dict(task="point-angle-nan")),
        ("task-angle-400-nines", dict(task="point-angle-" + NINES)),
    ]:
        n.append(C("numbers", f"evaluate/{label}", ev(**kw), OFF))
    for label, kw in [
        ("episodes-0", dict(episodes=0)),
        ("episodes-negative", dict(episodes=-1)),
        ("episodes-1e9", dict(episodes=10**9)),
        ("columns-bogus", dict(columns=["nope"])),
    ]:
        n.append(C("numbers", f"diversity/{label}", div(**kw), G))
    n.append(C("numbers", "diversity/columns-one", div(columns=["x_position"]), G, expect="any"))
    for label, kw in [("last-0", dict(last=0)), ("last-negative", dict(last=-1))]:
        n.append(C("numbers", f"plot-coverage/{label}", cov(**kw), G))
    n.append(C("numbers", "plot-coverage/last-1e9", cov(last=10**9), G, expect="any"))
    for label, task in [
        ("bogus", "nope"),
        ("other-env", "rooms-angle-0"),
        ("angle-nan", "point-angle-nan"),
        ("angle-400-nines", "point-angle-" + NINES),
        ("empty", ""),
    ]:
        n.append(C("numbers", f"rank/task-{label}", ["rank", "{ds}", "--task", task]))
    return n


POISON_PAIRS = [  # (label, bad command, corrected command into the same --out)
    ("collect-random/steps-negative", cr(steps=-5), cr()),
    ("collect-random/env-bogus", cr(env="bogus"), cr()),
    ("collect-random/max-episode-steps-0", cr(max_episode_steps=0), cr()),
    ("generate/w-div-nan", gen(w_div="nan"), gen()),
    ("generate/features-bogus", gen(features=["no_such_column"]), gen()),
    ("generate/agent-tasks-other-env", gen(agent_tasks=["ant-angle-0", "point-angle-0"]), gen()),
    ("generate/temperature-word", gen(temperature="hot"), gen()),
    ("generate/steps-1e12", gen(steps=10**12), gen()),
    ("offline/epochs-0", off(epochs=0), off()),
    ("offline/task-other-env", off(task="ant-angle-0"), off()),
    ("offline/model-garbage", off(model="{t}/junk.msgpack"), off()),
    ("offline/select-top-999", off(select="top:999"), off()),
    ("offline/observation-dims-999", off(observation_dims=999), off()),
]


def poison_cases() -> list[Case]:
    garbage = write("junk.msgpack", junk(2048))
    return [C("poison", label, bad, garbage, then=good) for label, bad, good in POISON_PAIRS]


DS = "root/udg/point/r1-v0"  # the dataset inside a copied root


def damaged_cases() -> list[Case]:
    R = copy("ds", "root")
    readers = [  # (label, argv reading the root {t}/root)
        ("datasets-list", ["datasets", "list", "{t}/root"]),
        ("datasets-show", ["datasets", "show", "{t}/" + DS]),
        ("rank", ["rank", "{t}/root", "--task", "point-angle-0"]),
        ("offline", off(data="{t}/root")),
    ]
    damages = [
        ("missing-metadata", chain(R, remove(DS + "/data/metadata.json"))),
        ("truncated-hdf5", chain(R, truncate(DS + "/data/main_data.hdf5"))),
        ("garbage-hdf5", chain(R, write(DS + "/data/main_data.hdf5", junk(4096)))),
        ("garbage-metadata", chain(R, write(DS + "/data/metadata.json", "{not json"))),
        ("metadata-wrong-schema", chain(R, write(DS + "/data/metadata.json", '{"hello": 1}'))),
        (
            "dangling-namespace-symlink",
            chain(
                R,
                remove("root/udg/namespace_metadata.json"),
                symlink("root/udg/namespace_metadata.json", "/nonexistent/ns.json"),
            ),
        ),
        ("empty-hdf5", chain(R, write(DS + "/data/main_data.hdf5", b""))),
    ]
    # Reading needs no namespace file: a dangling link there is refused by writers only.
    cases = [
        C("damaged", f"{r}/{d}", argv, setup, expect="any" if "namespace" in d else "refuse")
        for d, setup in damages
        for r, argv in readers
    ]
    # A garbage file named like a dataset, next to nothing else.
    fake = chain(
        write("root/udg/point/fake-v0/data/main_data.hdf5", junk(4096)),
        write("root/udg/point/fake-v0/data/metadata.json", "garbage"),
    )
    fake_file = write("root/udg/point/junk-v0", junk(512))
    for label, setup in [("garbage-dataset", fake), ("file-named-like-dataset", fake_file)]:
        for r, argv in readers:
            argv = (
                [
                    "datasets",
                    "show",
                    "{t}/root/udg/point/"
                    + ("fake-v0" if label == "garbage-dataset" else "junk-v0"),
                ]
                if r == "datasets-show"
                else argv
            )
            cases.append(C("damaged", f"{r}/{label}", argv, setup))
    # An empty folder given as a dataset / root.
    E = mkdirs("empty")
    cases += [
        C(
            "damaged",
            "datasets-list/empty-folder",
            ["datasets", "list", "{t}/empty"],
            E,
            expect="any",
        ),
        C("damaged", "datasets-show/empty-folder", ["datasets", "show", "{t}/empty"], E),
        C("damaged", "rank/empty-folder", ["rank", "{t}/empty", "--task", "point-angle-0"], E),
        C("damaged", "offline/empty-folder", off(data="{t}/empty"), E),
        C("damaged", "rank/no-paths", ["rank", "--task", "point-angle-0"]),
        C("damaged", "plot/no-paths", ["plot", "--out", "{t}/fig.png"]),
        C(
            "damaged",
            "collect-random/into-dangling-namespace-root",
            cr(out="{t}/root", name="new"),
            chain(
                R,
                remove("root/udg/namespace_metadata.json"),
                symlink("root/udg/namespace_metadata.json", "/nonexistent/ns.json"),
            ),
        ),
    ]
    # Damaged generate runs.
    for label, damage in [
        ("corrupt-manifest", write("g/manifest.json", "{garbage")),
        ("empty-manifest", write("g/manifest.json", "")),
        ("manifest-is-list", write("g/manifest.json", "[1, 2]")),
        (
            "manifest-wrong-kind",
            write("g/manifest.json", '{"kind": "offline", "status": "complete"}'),
        ),
        ("garbage-agents", write("g/agents.msgpack", junk(1024))),
        ("garbage-metrics", write("g/metrics.csv", "\x00\x01garbage,,\n1,2\n")),
        ("garbage-checkpoint", write("g/checkpoint/state.npz", junk(1024))),
    ]:
        setup = chain(G, damage)
        # The rerun of a finished run reads its manifest and metrics, the figures its manifest
        # and datasets: a damaged file none of them reads is no reason to refuse.
        unread = label in ("garbage-agents", "garbage-checkpoint")
        read_by_figures = "manifest" in label
        cases += [
            C(
                "damaged",
                f"generate-resume/{label}",
                gen(),
                setup,
                expect="any" if unread else "refuse",
            ),  # fmt: skip
            C(
                "damaged",
                f"plot-coverage/{label}",
                cov(),
                setup,
                expect="refuse" if read_by_figures else "any",
            ),  # fmt: skip
            C(
                "damaged",
                f"diversity/{label}",
                div(),
                setup,
                expect="refuse" if read_by_figures else "any",
            ),  # fmt: skip
        ]
    # Damaged offline runs and model files.
    for label, damage in [
        ("corrupt-manifest", write("o/manifest.json", "{garbage")),
        (
            "manifest-wrong-kind",
            write("o/manifest.json", '{"kind": "generate", "status": "complete"}'),
        ),
        ("corrupt-result", write("o/result.json", "{garbage")),
        ("result-wrong-schema", write("o/result.json", '{"task": 5}')),
        ("garbage-policy", write("o/policy.msgpack", junk(1024))),
        ("garbage-curve", write("o/learning_curve.csv", "\x00garbage\n,,,\n")),
        ("garbage-checkpoint", write("o/checkpoint.npz", junk(1024))),
    ]:
        setup = chain(OFF, damage)
        cases += [
            C(
                "damaged",
                f"offline-resume/{label}",
                off(),
                setup,
                # a finished run's rerun returns the manifest's result: it reads no other file
                expect="refuse" if "manifest" in label else "any",
            ),
            C(
                "damaged",
                f"evaluate/{label}",
                ev(),
                setup,
                # result.json is a copy of the manifest's result, which the verbs read
                expect="any"
                if label in ("garbage-curve", "garbage-checkpoint") or "result" in label
                else "refuse",
            ),
            C(
                "damaged",
                f"plot/{label}",
                plot(),
                setup,
                expect="any"
                if label in ("garbage-policy", "garbage-checkpoint") or "result" in label
                else "refuse",
            ),
        ]
    cases += [
        C(
            "damaged",
            "offline/model-garbage",
            off(model="{t}/m.msgpack"),
            write("m.msgpack", junk(4096)),
        ),
        C("damaged", "offline/model-empty", off(model="{t}/m.msgpack"), write("m.msgpack", b"")),
        C("damaged", "offline/model-is-folder", off(model="{t}/m"), mkdirs("m")),
        C(
            "damaged",
            "offline/model-truncated",
            off(model="{t}/m.msgpack", out="{t}/o2"),  # a new run: the model is read
            chain(
                OFF,
                lambda t: shutil.copy(t / "o/model.msgpack", t / "m.msgpack"),
                truncate("m.msgpack", 0.3),
            ),
        ),
        C(
            "damaged",
            "offline/model-of-other-task",
            off(task="point-angle-0", model="{t}/o/model.msgpack", out="{t}/o2"),
            OFF,
            expect="any",
        ),
    ]
    # Wrong kinds of run folder.
    cases += [
        C("kinds", "evaluate/generate-run", ev("{t}/g"), G),
        C("kinds", "diversity/offline-run", div("{t}/o"), OFF),
        C("kinds", "plot-coverage/offline-run", cov("{t}/o"), OFF),
        C("kinds", "plot/generate-run", plot("{t}/g"), G),
        C("kinds", "evaluate/missing", ev("{t}/nothing")),
        C("kinds", "diversity/missing", div("{t}/nothing")),
        C("kinds", "plot-coverage/missing", cov("{t}/nothing")),
        C("kinds", "plot/missing", plot("{t}/nothing")),
        C("kinds", "datasets-show/missing", ["datasets", "show", "{t}/nothing"]),
        C("kinds", "datasets-list/missing", ["datasets", "list", "{t}/nothing"]),
        C("kinds", "datasets-show/root-not-dataset", ["datasets", "show", "{ds}"], expect="any"),
        C("kinds", "datasets-show/a-file", ["datasets", "show", "{t}/file.txt"], FILE),
        C("kinds", "rank/a-file", ["rank", "{t}/file.txt", "--task", "point-angle-0"], FILE),
        C(
            "kinds",
            "evaluate/interrupted-offline",
            ev(),
            chain(OFF, remove("o/policy.msgpack"), remove("o/result.json")),
        ),
    ]
    return cases


def name_cases() -> list[Case]:
    names = [
        ("slashes", "a/b/c"),
        ("dotdot", "../escape"),
        ("dotdot-only", ".."),
        ("dot", "."),
        ("empty", ""),
        ("space", "with space"),
        ("newline", "new\nline"),
        ("tab", "a\tb"),
        ("absolute", "/tmp/abs"),
        ("backslash", "a\\b"),
        ("long", LONG),
        ("dash-leading", "-x"),
        ("v0-suffix", "x-v0"),
        ("colon", "a:b"),
        ("unicode", "größe"),
    ]
    cases = [
        C(
            "names",
            f"collect-random/name-{label}",
            cr(name=value),
            expect="any" if label in ("space", "v0-suffix", "unicode") else "refuse",
        )
        for label, value in names
    ]
    cases += [
        C("names", "collect-random/out-empty", cr(out="")),
        C("names", "generate/out-empty", gen(out="")),
        C("names", "offline/out-empty", off(out="")),
        C("names", "demo/out-empty", demo(out="")),
        C("names", "plot/out-empty", plot(out=""), OFF),
        C("names", "collect-random/env-path", cr(env="../point")),
        C("names", "offline/data-empty-string", off(data="")),
    ]
    return cases


def concurrency_cases() -> list[Case]:
    argv = cr(out="{t}/root", name="same", steps=3000, seed="{i}")
    return [
        C("concurrency", f"collect-random/same-name-trial-{k}", argv, parallel=2, expect="any")
        for k in range(1, 5)
    ]


def control_cases() -> list[Case]:
    return [
        C("control", "collect-random/valid", cr(), expect="succeed"),
        C("control", "rank/valid", ["rank", "{ds}", "--task", "point-angle-0"], expect="succeed"),
        C("control", "datasets-show/valid", ["datasets", "show", "{dsd}"], expect="succeed"),
    ]


CASES: list[Case] = (
    control_cases()
    + output_cases()
    + number_cases()
    + poison_cases()
    + damaged_cases()
    + name_cases()
    + concurrency_cases()
)

# ---------------------------------------------------------------------------------------------
# Running and classifying.


@dataclass
class Run:
    argv: list[str]
    rc: int | None
    seconds: float
    stdout: str
    stderr: str
    timed_out: bool


@dataclass
class Result:
    klass: str
    name: str
    expect: str
    outcome: str
    detail: str
    runs: list[Run] = field(default_factory=list)
    new_paths: list[str] = field(default_factory=list)
    changed_paths: list[str] = field(default_factory=list)
    note: str = ""


def expand(argv: tuple[str, ...], t: Path, i: int = 0) -> list[str]:
    subs = {"t": str(t), "i": str(i), **FIX}
    out = []
    for arg in argv:
        for key, value in subs.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.Popen(
        [UDG, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, argv: list[str], t0: float, timeout: float) -> Run:
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the one process this script started
        out, err = proc.communicate()
        timed_out = True
    return Run(argv, proc.returncode, round(time.monotonic() - t0, 2), out, err, timed_out)


def run_udg(argv: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> Run:
    t0 = time.monotonic()
    return finish(start(argv, cwd), argv, t0, timeout)


def snapshot(root: Path) -> dict[str, tuple]:
    files: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            files[str(p.relative_to(root))] = (
                kind,
                0 if kind == "dir" else st.st_size,
                0 if kind == "dir" else st.st_mtime_ns,
            )
    return files


def diff(before: dict, after: dict) -> tuple[list[str], list[str]]:
    new = sorted(set(after) - set(before))
    changed = sorted(p for p in before if p in after and before[p] != after[p])
    changed += sorted("(deleted) " + p for p in set(before) - set(after))
    return new, changed


def stderr_verdict(stderr: str) -> str:
    """'ok' (exactly one line, a udg error), 'tyro' (tyro's box, no udg line) or why not."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("udg: error: ")]
    if len(lines) == 1 and len(errors) == 1:
        return "ok"
    if not errors and any(line.lstrip().startswith("╭") for line in lines):
        return "tyro"
    if not errors:
        return "exit 2 without a `udg: error:` line"
    return f"{len(errors)} `udg: error:` line(s) among {len(lines)} stderr lines"


def classify_refusal(run: Run, expect: str, new: list[str], changed: list[str]) -> tuple[str, str]:
    if run.timed_out:
        return "hang", f"killed after {TIMEOUT_S:.0f} s"
    if run.rc is not None and (run.rc < 0 or run.rc >= 128):
        return "segfault", f"rc {run.rc}"
    if "Traceback (most recent call last)" in run.stderr:
        return "traceback", ""
    if run.rc == 0:
        if expect == "refuse":
            return "wrong-exit0", "exit 0 where a refusal was expected"
        return "accepted", "exit 0 (acceptance is legitimate here)"
    if run.rc != 2:
        return "other", f"rc {run.rc}"
    verdict = stderr_verdict(run.stderr)
    if verdict not in ("ok", "tyro"):
        return "other", verdict
    if new or changed:
        return "leftover", f"{len(new)} new, {len(changed)} changed path(s) after the refusal"
    if run.seconds > LATE_S:
        return "late", f"refused after {run.seconds:.1f} s"
    if expect == "succeed":
        return "other", "a valid command was refused"
    return verdict, ""


def run_case(case: Case, index: int) -> Result:
    t = CASES_DIR / f"{index:03d}"
    t.mkdir(parents=True)
    result = Result(case.klass, case.name, case.expect, "other", "", note=case.note)
    try:
        if case.setup:
            case.setup(t)
    except Skip as why:
        result.outcome, result.detail = "skipped", str(why)
        unmount_below(t)
        return result
    except OSError as why:
        result.outcome, result.detail = "skipped", f"setup failed: {why}"
        unmount_below(t)
        return result
    before = snapshot(t)
    try:
        if case.parallel > 1:
            _run_concurrent(case, t, before, result)
        else:
            run = run_udg(expand(case.argv, t), t)
            result.runs.append(run)
            result.new_paths, result.changed_paths = diff(before, snapshot(t))
            result.outcome, result.detail = classify_refusal(
                run, case.expect, result.new_paths, result.changed_paths
            )
            if case.then and result.outcome in ("ok", "tyro"):
                _run_corrected(case, t, result)
    finally:
        unmount_below(t)
    if result.outcome in ("ok", "tyro", "accepted", "skipped"):
        shutil.rmtree(t, ignore_errors=True)
    return result


def _run_corrected(case: Case, t: Path, result: Result) -> None:
    """Poisoning: the corrected command into the same --out must not be refused."""
    good = run_udg(expand(case.then, t), t, timeout=150.0)
    result.runs.append(good)
    if good.rc == 0:
        result.detail = "corrected command then succeeded"
        return
    result.outcome = "poisoned" if good.rc == 2 and not good.timed_out else "other"
    result.detail = f"the corrected command got rc {good.rc}" + (
        " (timed out)" if good.timed_out else ""
    )
    if "Traceback (most recent call last)" in good.stderr:
        result.outcome = "traceback"


def _run_concurrent(case: Case, t: Path, before: dict, result: Result) -> None:
    """Concurrency: the copies write one dataset; exactly one may win, the others must refuse
    cleanly, and the dataset left must be whole."""
    t0 = time.monotonic()
    argvs = [expand(case.argv, t, i) for i in range(case.parallel)]
    procs = [start(a, t) for a in argvs]
    result.runs = [finish(p, a, t0, TIMEOUT_S) for p, a in zip(procs, argvs, strict=True)]
    verdicts = []
    for run in result.runs:
        outcome, _ = classify_refusal(run, "any", [], [])
        verdicts.append(outcome)
    for bad in ("hang", "segfault", "traceback", "other"):
        if bad in verdicts:
            result.outcome, result.detail = bad, f"per-process outcomes {verdicts}"
            return
    winners = verdicts.count("accepted")
    ds = t / "root/udg/point/same-v0"
    check = run_udg(["datasets", "show", str(ds), "--json"], t)
    whole = check.rc == 0 and json.loads(check.stdout or "{}").get("transitions") == 3000
    expected = {
        "root",
        "root/udg",
        "root/udg/namespace_metadata.json",
        "root/udg/point",
        "root/udg/point/same-v0",
        "root/udg/point/same-v0/data",
        "root/udg/point/same-v0/data/main_data.hdf5",
        "root/udg/point/same-v0/data/metadata.json",
    }
    result.new_paths, result.changed_paths = diff(before, snapshot(t))
    stray = sorted(set(result.new_paths) - expected)
    if winners != 1:
        result.outcome = "other"
        result.detail = f"{winners} processes succeeded (want exactly 1): {verdicts}"
    elif not whole:
        result.outcome, result.detail = (
            "other",
            f"the dataset left is not whole: {check.stderr[-300:]}",
        )
    elif stray:
        result.outcome, result.detail = "leftover", f"stray paths {stray}"
    else:
        result.outcome, result.detail = "ok", f"one winner, the other refused cleanly: {verdicts}"


# ---------------------------------------------------------------------------------------------
# Fixtures, reporting, main.


def build_fixtures() -> None:
    stamp = FIXTURES / ".complete"
    if stamp.exists():
        return
    shutil.rmtree(FIXTURES, ignore_errors=True)
    FIXTURES.mkdir(parents=True)
    steps = [
        ["collect-random", "--env", "point", "--steps", "300", "--out", FIX["ds"], "--name", "r1"],
        gen(out=FIX["gen"]),
        off(out=FIX["off"], data=FIX["gen"]),
    ]
    for argv in steps:
        argv = expand(tuple(argv), FIXTURES)
        print("fixture:", shlex.join(argv), flush=True)
        run = run_udg(argv, FIXTURES, timeout=300.0)
        if run.rc != 0:
            sys.exit(f"fixture failed (rc {run.rc}):\n{run.stderr[-2000:]}")
    stamp.write_text("ok\n")


def tail(text: str, n: int = 3) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-n:]


GOOD = ("ok", "tyro", "accepted", "skipped")


def report(results: list[Result], wall: float) -> None:
    by_outcome = Counter(r.outcome for r in results)
    by_class: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_class[r.klass][r.outcome] += 1
    outcomes = sorted(by_outcome, key=lambda o: (o not in GOOD, o))
    print(f"\n{len(results)} cases in {wall:.0f} s\n")
    print("outcome counts: " + ", ".join(f"{o} {by_outcome[o]}" for o in outcomes))
    width = max(len(c) for c in by_class) + 2
    print("\n" + "class".ljust(width) + "".join(o.rjust(13) for o in outcomes) + "   total")
    for klass, counts in by_class.items():
        print(
            klass.ljust(width)
            + "".join(str(counts[o]).rjust(13) for o in outcomes)
            + str(sum(counts.values())).rjust(8)
        )
    failing = [r for r in results if r.outcome not in GOOD]
    print(f"\n{len(failing)} failing cases\n")
    for r in failing:
        print(f"[{r.outcome}] {r.klass} / {r.name}: {r.detail}")
        for run in r.runs:
            print(f"    $ udg {shlex.join(run.argv)}")
            print(
                f"      rc={run.rc} seconds={run.seconds}" + (" TIMED OUT" if run.timed_out else "")
            )
            for line in tail(run.stderr):
                print(f"      | {line[:300]}")
            if run.rc == 0 and not tail(run.stderr):
                for line in tail(run.stdout, 2):
                    print(f"      > {line[:300]}")
        if r.new_paths or r.changed_paths:
            shown = r.new_paths[:6] + r.changed_paths[:4]
            print(
                f"    left: {shown}{' ...' if len(r.new_paths) + len(r.changed_paths) > 10 else ''}"
            )
    skipped = [r for r in results if r.outcome == "skipped"]
    for r in skipped:
        print(f"[skipped] {r.klass} / {r.name}: {r.detail}")
    accepted = [r for r in results if r.outcome == "accepted"]
    if accepted:
        print(
            "\naccepted (exit 0 where that is legitimate): " + ", ".join(r.name for r in accepted)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose class/name contains this")
    parser.add_argument("--workers", type=int, default=2, help="cases at once (at most 2)")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in f"{c.klass}/{c.name}"]
    if args.list:
        for c in cases:
            print(f"{c.klass:12} {c.name:45} {shlex.join(c.argv)[:100]}")
        print(len(cases), "cases")
        return
    if CASES_DIR.exists():
        unmount_below(CASES_DIR)
        shutil.rmtree(CASES_DIR)
    build_fixtures()
    fixtures_before = snapshot(FIXTURES)
    t0 = time.monotonic()
    solo = [(i, c) for i, c in enumerate(cases) if c.parallel == 1]
    together = [(i, c) for i, c in enumerate(cases) if c.parallel > 1]
    results: dict[int, Result] = {}

    def one(item: tuple[int, Case]) -> None:
        i, case = item
        results[i] = run_case(case, i)
        r = results[i]
        secs = sum(run.seconds for run in r.runs)
        print(
            f"{len(results):4d}/{len(cases)} {r.outcome:12} {secs:6.1f}s  {r.klass}/{r.name}",
            flush=True,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(2, args.workers))) as pool:
        list(pool.map(one, solo))
    for item in together:  # each runs two processes itself: nothing else alongside
        one(item)
    ordered = [results[i] for i in sorted(results)]
    new, changed = diff(fixtures_before, snapshot(FIXTURES))
    if new or changed:
        print(f"\nWARNING: the fixtures changed: {new[:5]} {changed[:5]}")
    RESULTS.write_text(json.dumps([asdict(r) for r in ordered], indent=1))
    report(ordered, time.monotonic() - t0)
    print(f"\nfull results: {RESULTS}")


if __name__ == "__main__":
    main()

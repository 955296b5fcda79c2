"""The preset table (issue 20 item 3): every preset pinned, each value written once, unknown
names refused in one line, and the configs' own checks naming their fields."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from udg.agents.sac import SACConfig
from udg.diversity.wasserstein import DiversityConfig
from udg.envs.registry import get_env_spec
from udg.errors import UdgError
from udg.experiments import presets
from udg.experiments.generate_config import GenerateConfig
from udg.offline.ensemble import DynamicsConfig
from udg.offline.mopo import MOPOConfig

PINNED = Path(__file__).parent / "data" / "presets.json"
"""Every preset as the code returned it before the table existed (commit ee0de81), with the
rooms world's K changed on purpose since (6 -> 8 at demo and small: one agent per outer room)."""

COINCIDENCES = {("max_batches_per_epoch", 100)}
"""(field, value) pairs that two presets share by coincidence, not by derivation: demo's model
epochs of 100 minibatches and ant small's (sized from ant-angle's cell time) are separate
choices, so neither is written as the other."""


def _dump(preset: presets.Preset) -> str:
    value = {
        "generate": dataclasses.asdict(preset.generate),
        "mopo": dataclasses.asdict(preset.mopo),
    }
    return json.dumps(value, indent=1, sort_keys=True)


def test_every_preset_equals_the_pinned_one():
    pinned = json.loads(PINNED.read_text())
    table = {f"{env}/{scale}" for env, scale in presets.PRESETS}
    assert table == set(pinned)
    for (env, scale), preset in presets.PRESETS.items():
        # The dumped text also tells 1 from 1.0.
        assert _dump(preset) == json.dumps(pinned[f"{env}/{scale}"], indent=1, sort_keys=True), (
            env,
            scale,
        )


def test_the_old_import_paths_return_the_table():
    from udg.experiments.generate_config import generate_preset
    from udg.experiments.offline_config import SCALES, mopo_preset

    assert SCALES == presets.SCALES
    for (env, scale), preset in presets.PRESETS.items():
        assert generate_preset(env, scale) is preset.generate
        assert mopo_preset(env, scale) is preset.mopo


def test_every_env_has_every_scale_and_its_rows_name_it():
    envs = {env for env, _ in presets.PRESETS}
    assert set(presets.PRESETS) == {(env, s) for env in envs for s in presets.SCALES}
    for (env, _), preset in presets.PRESETS.items():
        get_env_spec(env)
        assert preset.generate.env == env
        preset.generate.validated()  # also passes the checks made at run time


def duplicated_literals(source: str) -> tuple[Counter, Counter]:
    """In ``source``, how often each ``field=literal`` pair is written (the pairs written more
    than once) and how often each bare number is written. ``env=...`` restates the row's key
    and is left out (a test checks that they agree)."""
    pairs: Counter = Counter()
    numbers: Counter = Counter()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg not in (None, "env"):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            pairs[node.arg, value] += 1
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            if not isinstance(node.value, bool):
                numbers[node.value] += 1
    return Counter({k: n for k, n in pairs.items() if n > 1}), numbers


def test_each_preset_value_is_written_once():
    repeated, _ = duplicated_literals(Path(presets.__file__).read_text())
    assert set(repeated) == COINCIDENCES


def test_model_free_budgets_follow_their_principle():
    # Below paper: as many updates as the row's MOPO makes with SAC, at the same epochs and
    # evaluations, with SAC's widths and batch; at paper: both papers' 1M updates, 2x256.
    for (env, scale), preset in presets.PRESETS.items():
        for algo in ("td3bc", "iql"):
            learner = preset.learner(algo)
            assert learner.algo == algo and learner.reward_scale == "none"
            assert learner.observation_dims == preset.mopo.observation_dims
            if scale == "paper":
                assert learner.updates == 1_000_000 and learner.eval_every * 1000 == 5000
                assert learner.learner.hidden_dims == (256, 256)
                assert learner.learner.batch_size == 256 and learner.eval_episodes == 10
            else:
                mopo = preset.mopo
                assert learner.updates == mopo.epochs * mopo.steps_per_epoch, (env, scale)
                assert (learner.epochs, learner.eval_every) == (mopo.epochs, mopo.eval_every)
                assert learner.eval_episodes == mopo.eval_episodes
                assert learner.learner.hidden_dims == mopo.sac.hidden_dims
                assert learner.learner.batch_size == mopo.sac.batch_size
            if algo == "iql":  # the actor's cosine schedule spans the run
                assert learner.learner.num_updates == learner.updates
    assert presets.learner_preset("point", "demo", "mopo") is presets.mopo_preset("point", "demo")
    with pytest.raises(UdgError, match="unknown algo 'cql'; known: iql, mopo, td3bc"):
        presets.learner_preset("point", "demo", "cql")


def test_unknown_names_are_refused_in_one_line(monkeypatch):
    with pytest.raises(UdgError, match="unknown env 'hopper'; known: ant, halfcheetah"):
        presets.generate_preset("hopper", "demo")
    with pytest.raises(UdgError, match="unknown scale 'huge'; known: demo, paper, small"):
        presets.mopo_preset("point", "huge")
    # An env udg knows but the table has no row for (as an env's rows are being added).
    monkeypatch.delitem(presets.PRESETS, ("point", "paper"))
    with pytest.raises(UdgError) as err:
        presets.preset("point", "paper")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no preset for env point at scale paper; presets: point at demo")


def test_the_scale_table_has_a_row_per_preset():
    table = presets.scale_table()
    rows = table.splitlines()[2:]
    assert len(rows) == len(presets.PRESETS)
    assert rows[0].startswith("| `demo` | point | K=6, 8k steps per agent")
    ant_small = next(r for r in rows if r.startswith("| `small` | ant |"))
    assert "ant-outward mixed in" in ant_small and "at most 20 epochs of 100" in ant_small
    assert "TD3+BC (alpha=2.5) and IQL (expectile 0.7, beta=3): 8k updates" in ant_small
    assert "1M updates (1000 epochs x 1000)" in rows[-1]
    help_text = presets.scale_help()
    assert "\n" not in help_text
    assert all(f"{scale} ({presets.SCALE_PURPOSE[scale]})" in help_text for scale in presets.SCALES)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_agents": 0}, "num_agents must be at least 1, got 0"),
        ({"steps": 0}, "steps must be positive, got 0"),
        ({"episode_length": -1}, "episode_length must be positive, got -1"),
        ({"w_task": -1.0}, "w_task must be a finite number >= 0, got -1.0"),
        ({"w_div": math.nan}, "w_div must be a finite number >= 0, got nan"),
        ({"updates_per_step": math.inf}, "updates_per_step must be a finite number >= 0"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
        ({"updates_per_call": 0}, "updates_per_call must be at least 1, got 0"),
        ({"checkpoint_every": 0}, "checkpoint_every must be at least 1, got 0"),
        ({"final_rollouts": -2}, "final_rollouts must be >= 0, got -2"),
        ({"w_div": 0.0}, "nothing to learn: w_task and w_div are both 0"),
        ({"w_task": 1.0}, r"w_task > 0 needs a task \(task or agent_tasks\)"),
        ({"agent_tasks": ("point-angle-0",)}, "agent_tasks names 1 tasks for num_agents=3"),
        ({"task": "ant-angle-0"}, "task ant-angle-0 is for env ant, not point"),
        ({"features": ("height",)}, "feature column.s. height not stored by env point"),
        ({"env": "hopper"}, "unknown env 'hopper'"),  # the registry's error
    ],
)
def test_generate_config_names_the_field_when_made(changes, message):
    base = dataclasses.asdict(GenerateConfig(num_agents=3)) | {
        "sac": GenerateConfig().sac,
        "diversity": DiversityConfig(),
    }
    with pytest.raises(UdgError, match=message) as err:
        GenerateConfig(**(base | changes))
    assert "\n" not in str(err.value) and "--" not in str(err.value)  # fields, not flags


def test_the_checks_across_fields_the_cli_sets_in_turn_wait_for_validated():
    # The CLI gives --agents 1 before it turns the preset's diversity weight off, and
    # --agent-tasks before it drops the preset's task: both steps must construct.
    one = GenerateConfig(num_agents=1, task="point-angle-0", w_task=1.0)
    with pytest.raises(UdgError, match="needs at least 2 agents, got num_agents=1"):
        one.validated()
    assert dataclasses.replace(one, w_div=0.0).validated().w_div == 0.0
    both = dataclasses.replace(one, agent_tasks=("point-angle-90",), w_div=0.0)
    with pytest.raises(UdgError, match=r"one task per agent \(task or agent_tasks\), not both"):
        both.validated()
    assert dataclasses.replace(both, task=None).validated().task_names == ("point-angle-90",)
    config = GenerateConfig(episode_length=50).validated()
    assert config.diversity.cache_size == 50


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SACConfig(actor_lr=math.nan), "actor_lr must be a finite number > 0, got nan"),
        (lambda: SACConfig(init_temperature=0.0), "init_temperature must be a finite number > 0"),
        (lambda: SACConfig(target_entropy=math.nan), "target_entropy must be finite or None"),
        (lambda: SACConfig(gamma=math.nan), r"gamma must be in \[0, 1\], got nan"),
        (lambda: DiversityConfig(reward_scale=math.nan), "reward_scale must be a finite number"),
        (lambda: DiversityConfig(reward_scale=-1.0), "reward_scale must be a finite number >= 0"),
        (lambda: MOPOConfig(penalty_coef=math.nan), "penalty_coef must be a finite number >= 0"),
        (lambda: MOPOConfig(real_ratio=math.nan), r"real_ratio must be in \[0, 1\], got nan"),
        (lambda: MOPOConfig(epochs=0), "epochs must be >= 1, got 0"),
        (lambda: MOPOConfig(penalty="bogus"), "unknown penalty 'bogus'"),
        (
            lambda: DynamicsConfig(weight_decay=(2.5e-5, math.nan, 7.5e-5, 7.5e-5, 1e-4)),
            "weight_decay must be finite numbers >= 0",
        ),
        (lambda: DynamicsConfig(learning_rate=-1e-3), "learning_rate must be a finite number > 0"),
        (lambda: DynamicsConfig(ensemble_size=0), "ensemble_size must be >= 1, got 0"),
        (lambda: DynamicsConfig(hidden_dims=()), "hidden_dims must be positive widths"),
        (lambda: DynamicsConfig(batch_size=0), "batch_size must be >= 1, got 0"),
        (lambda: DynamicsConfig(logvar_bound_penalty=math.nan), "logvar_bound_penalty must be"),
        (
            lambda: DynamicsConfig(min_logvar_init=1.0, max_logvar_init=0.5),
            "min_logvar_init must be below max_logvar_init",
        ),
    ],
)
def test_component_configs_name_the_field_and_refuse_nan(make, message):
    with pytest.raises(UdgError, match=message) as err:
        make()
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_the_readme_scale_table_is_the_generated_one():
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    command = [sys.executable, "-m", "udg.experiments.presets"]
    table = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert table.strip() in readme, "regenerate it: python -m udg.experiments.presets"

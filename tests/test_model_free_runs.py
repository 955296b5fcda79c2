"""Stage 2 with the model-free learners (``--algo td3bc|iql``): end to end in-process and from
the command line, resuming, a grid's population against its cells one by one, one compilation
per run, refusals in one line, and (slow) learning from a point expert's replay."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from udg.cli.main import main
from udg.errors import UdgError
from udg.experiments import offline
from udg.experiments.grid import Cell, run_cells
from udg.experiments.offline import OfflineConfig, run_offline
from udg.offline import iql, learners, td3bc
from udg.offline.learners import ModelFreeConfig


def tiny(algo: str, **changes) -> ModelFreeConfig:
    """A model-free run of 4 epochs x 20 updates of 16-wide networks, evaluated twice."""
    config = {"td3bc": td3bc.TD3BCConfig, "iql": iql.IQLConfig}[algo]
    schedule = {
        "epochs": 4,
        "steps_per_epoch": 20,
        "eval_every": 2,
        "eval_episodes": 2,
        "checkpoint_every": 2,
    }
    learner = config(hidden_dims=(16, 16), batch_size=32)
    return ModelFreeConfig(learner=learner, **(schedule | changes))


def _config(algo: str, task="point-angle-0", select="top2", seed=0, **changes) -> OfflineConfig:
    return OfflineConfig(
        task=task, select=select, seed=seed, eval_episode_length=20, learner=tiny(algo, **changes)
    )


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_a_model_free_run_writes_moposs_files_but_the_model(tmp_path, point_root, algo):
    result = run_offline(_config(algo), [point_root], tmp_path / "run")
    assert result["algo"] == algo and result["selected_transitions"] == 1000
    assert [r["name"] for r in result["ranking"]][:2] == ["udg/point/b-v0", "udg/point/a-v0"]
    assert np.isfinite(result["last_return"]) and result["best_return"] >= result["last_return"]
    assert result["updates"] == 80 and result["reward_scale"] == 1.0
    # MOPO's schema: the model's fields are there, null, each with its reason.
    for field in ("reward", "model", "dynamics"):
        assert result[field] is None and "model" in result["null_reasons"][field]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"policy.msgpack", "learning_curve.csv", "learning_curve.png", "result.json"} <= files
    assert "model.msgpack" not in files and "model_metrics.json" not in files
    curve = (tmp_path / "run" / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,eval_return,eval_std,q,")
    assert [row.split(",")[0] for row in curve[1:]] == ["2", "4"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["algo"] == algo
    assert "mopo" not in manifest["config"]  # the learner's settings, never MOPO's beside them
    # A second call returns the stored result without recomputing.
    assert run_offline(_config(algo), [point_root], tmp_path / "run") == result


def test_another_learner_into_a_finished_run_is_refused(tmp_path, point_root):
    run_offline(_config("td3bc", epochs=1, eval_every=1), [point_root], tmp_path / "run")
    with pytest.raises(UdgError, match="different config .*algo"):
        run_offline(_config("iql", epochs=1, eval_every=1), [point_root], tmp_path / "run")


def test_an_interrupted_model_free_run_resumes_to_the_same_result(tmp_path, point_root):
    # TD3+BC: its delayed actor steps on the restored step count too.
    config = _config("td3bc", task="point-angle-90", select="top1", seed=3)
    straight = run_offline(config, [point_root], tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_after_epoch_3(epoch, _row):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        run_offline(config, [point_root], tmp_path / "b", on_epoch=stop_after_epoch_3)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "running"
    resumed = run_offline(config, [point_root], tmp_path / "b")  # from epoch 2's checkpoint
    assert resumed["last_return"] == pytest.approx(straight["last_return"], rel=1e-6)
    policies = [(tmp_path / run / "policy.msgpack").read_bytes() for run in "ab"]
    assert policies[0] == policies[1]
    curves = [(tmp_path / run / "learning_curve.csv").read_text() for run in "ab"]
    assert curves[0] == curves[1]


GRID = [("point-angle-0", "top1", 0), ("point-angle-90", "top1", 0), ("point-angle-90", "all", 1)]


# IQL's in the slow set: its population update equals single updates in tests/test_iql.py, and
# the grid plumbing is the learners' shared code.
@pytest.mark.parametrize("algo", ["td3bc", pytest.param("iql", marks=pytest.mark.slow)])
def test_a_grids_population_gives_the_numbers_of_its_cells_run_one_by_one(
    tmp_path, point_root, algo
):
    def grid(folder):
        return [
            Cell(
                data="udg",
                config=_config(algo, task=task, select=rule, seed=seed),
                datasets=(str(point_root),),
                out=str(tmp_path / folder / f"{task}-{rule}-{seed}"),
            )
            for task, rule, seed in GRID
        ]

    together = run_cells(grid("pop"), tmp_path / "pop")
    alone = run_cells(grid("one"), tmp_path / "one", max_cells=1)
    for name, a in together.items():
        b = alone[name]
        assert a["population"]["cells"] == 3 and b["population"]["cells"] == 1
        assert a["last_return"] == pytest.approx(b["last_return"], rel=1e-4, abs=1e-3)
        assert a["data_mean_return"] == b["data_mean_return"]
        # Every evaluation of the curve, not just the last.
        curves = [
            np.genfromtxt(f"{c.out}/learning_curve.csv", delimiter=",", names=True)
            for c in (next(c for c in grid(f) if c.name == name) for f in ("pop", "one"))
        ]
        np.testing.assert_allclose(curves[0]["eval_return"], curves[1]["eval_return"], rtol=1e-4)
        np.testing.assert_allclose(curves[0]["q"], curves[1]["q"], rtol=1e-4, atol=1e-5)


def test_the_epoch_kernel_compiles_once_for_a_whole_run(tmp_path, point_root, monkeypatch):
    kernels = []
    real = learners.epoch_kernel

    def recording(config, vectorize=None):
        kernels.append(real(config, vectorize))
        return kernels[-1]

    monkeypatch.setattr(learners, "epoch_kernel", recording)
    # Four epochs, two evaluations and a checkpoint between them: one compilation.
    run_offline(_config("iql"), [point_root], tmp_path / "run")
    (kernel,) = kernels
    assert kernel._cache_size() == 1


def test_the_population_starts_from_each_seeds_init_stream(tmp_path, point_root):
    import jax

    from udg.experiments import offline_learners
    from udg.offline import model_free
    from udg.seeds import jax_key

    jobs = [
        offline.CellJob(
            config=_config("td3bc", task=t, select=r, seed=s),
            data_paths=(str(point_root),),
            out=str(tmp_path / f"{t}-{r}-{s}"),
        )
        for t, r, s in GRID
    ]
    cells = [offline.prepare_cell(job) for job in jobs]
    pop = offline_learners.start_population(cells, [1.0] * 3, tmp_path / "checkpoint.npz")
    for c, (cell, seed) in enumerate(zip(cells, [0, 0, 1], strict=True)):
        stats = model_free.observation_stats(cell.data.observations)
        expected = td3bc.TD3BC.create(
            jax_key(seed, "init"), 4, 2, cell.config.learner.learner, stats
        )
        mine = jax.tree.map(lambda leaf, c=c: leaf[c], pop.state.learner)
        for got, want in zip(jax.tree.leaves(mine), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    # The data is stored once per distinct selection; rewards once per cell.
    assert pop.data.rewards.shape[0] == sum(c.data.num_transitions for c in cells)
    assert pop.data.observations.shape[0] == sum(
        {c.sources: c.data.num_transitions for c in cells}.values()
    )


def test_the_return_range_scale_multiplies_the_rewards(tmp_path, point_root):
    from udg.offline.model_free import return_range_scale

    config = _config("iql", select="top1", reward_scale="return_range", epochs=1, eval_every=1)
    result = run_offline(config, [point_root], tmp_path / "run")
    cell = offline.prepare_cell(offline.CellJob(config, (str(point_root),), str(tmp_path / "x")))
    returns = cell.data.episode_returns(cell.rewards)
    assert result["reward_scale"] == pytest.approx(return_range_scale(returns, 50))
    with pytest.raises(UdgError, match="unknown reward_scale 'bogus'"):
        tiny("iql", reward_scale="bogus")


def test_iqls_schedule_spans_the_run_whatever_its_epochs():
    config = tiny("iql")
    assert config.learner.num_updates == config.updates == 80
    assert dataclasses.replace(config, epochs=10).learner.num_updates == 200


def _offline_cli(data, out, *flags: str) -> int:
    return main(
        ["offline", "--data", str(data), "--task", "point-angle-0", "--out", str(out), *flags]
    )


def test_cli_offline_td3bc_end_to_end_improves_on_the_data(tmp_path, point_root, capsys):
    # The demo preset's TD3+BC (2x64, batch 256) for 2 epochs of 250 updates; evaluated on the
    # data's own 50-step episodes, so that the two returns compare.
    flags = ["--algo", "td3bc", "--select", "top1", "--epochs", "2", "--eval-episodes", "2"]
    assert _offline_cli(point_root, tmp_path / "o", *flags, "--eval-episode-length", "50") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "TD3+BC last" in out and "dynamics model" not in out
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["algo"] == "td3bc" and result["updates"] == 500
    assert result["last_return"] > result["data_mean_return"] + 10  # random data: about 2
    assert (tmp_path / "o" / "learning_curve.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--algo", "bogus"], "unknown algo 'bogus'; known: iql, mopo, td3bc."),
        (
            ["--algo", "td3bc", "--penalty-coef", "2"],
            "--penalty-coef is MOPO's; --algo td3bc (TD3+BC) fits no dynamics model",
        ),
        (
            ["--algo", "iql", "--rollout-length", "3", "--model-epochs", "2"],
            "--rollout-length, --model-epochs are MOPO's; --algo iql (IQL)",
        ),
        (["--algo", "iql", "--model", "m.msgpack"], "--model is MOPO's; --algo iql"),
        (["--algo", "td3bc", "--epochs", "0"], "epochs must be >= 1, got 0"),
    ],
)
def test_cli_offline_refusals_are_one_line_before_any_folder(
    tmp_path, point_root, capsys, flags, message
):
    assert _offline_cli(point_root, tmp_path / "o", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("udg: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists()


def _expert_root(tmp_path, episodes: int = 20, noise: float = 0.3):
    """A point expert's replay: ``episodes`` of the scripted expert of point-angle-0 (full
    force along +x, the task's best action at point's control cost) with Gaussian action noise,
    clipped, as a behaviour policy explores; and the noise-free expert's return."""
    from udg.data.collect import collect_episodes
    from udg.data.minari_io import dataset_id_for, write_dataset
    from udg.envs import get_env_spec, get_task, make_env
    from udg.evaluation.evaluate import evaluate

    rng = np.random.default_rng(0)
    best = np.array([1.0, 0.0], np.float32)

    def noisy(obs, *_):
        return np.clip(best + noise * rng.normal(size=2), -1, 1).astype(np.float32)

    env = make_env("point")
    steps = episodes * get_env_spec("point").max_episode_steps
    replay = collect_episodes(env, noisy, steps, seed=0)
    write_dataset(replay, tmp_path / "expert", dataset_id_for("point", "expert"), "point")
    task = get_task("point-angle-0")
    expert = evaluate(task, lambda obs: np.tile(best, (len(obs), 1)), 5, seed=0).mean()
    return tmp_path / "expert", float(expert)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_learners_reach_the_expert_from_its_replay(tmp_path, algo):
    from udg.experiments.presets import learner_preset

    root, expert = _expert_root(tmp_path)
    config = OfflineConfig(task="point-angle-0", learner=learner_preset("point", "demo", algo))
    result = run_offline(config, [root], tmp_path / algo)
    print(
        f"{algo}: last {result['last_return']:.1f}, best {result['best_return']:.1f}, data "
        f"{result['data_mean_return']:.1f}, expert {expert:.1f}"
    )
    assert result["last_return"] >= 0.9 * expert

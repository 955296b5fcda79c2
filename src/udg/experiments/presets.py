"""Every preset of every stage, in one table keyed by (env, scale).

A scale sizes a whole experiment: ``demo`` runs the point env in minutes on 2 cores, ``small``
runs MuJoCo in hours on 2 cores, ``paper`` takes the paper's settings and needs a GPU or a
cluster. :data:`PRESETS` gives, for each env and scale, stage 1's :class:`GenerateConfig` and
stage 2's configs: :class:`MOPOConfig`, and a :class:`ModelFreeConfig` for each model-free
learner (TD3+BC, IQL). Each value is written once: in the base of its scale, or in the row that
departs from that base (``dataclasses.replace``), so adding an env means adding its three rows
(the built-in point masses, ``point`` and ``rooms``, share one function that makes them). The
bases follow one principle each: ``paper`` is WURL's stage 1 and MOPO as in SPEC section 5, and
TD3+BC and IQL as in their papers (1M updates); ``small`` keeps the algorithms and network
sizes and cuts the step budgets; ``demo`` shrinks the networks too. Below ``paper`` the
model-free learners are derived from the row's MOPO, never set apart: as many updates as
MOPO's SAC makes (epochs x updates per epoch), evaluated and checkpointed at the same epochs,
with the same network widths and batch size, so that a learner's budget is never what tells the
learners apart. Why each number is what it is, with the measurements behind
it, is in ``results/presets.md``. ``python -m udg.experiments.presets`` prints the scale table
of the README (:func:`scale_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from udg.envs.registry import get_env_spec
from udg.envs.tasks import PAPER_ANGLES
from udg.errors import UdgError, unknown_name
from udg.experiments.generate_config import WURL_SAC, GenerateConfig
from udg.offline import ALGOS
from udg.offline.iql import IQLConfig
from udg.offline.learners import ModelFreeConfig
from udg.offline.mopo import MOPOConfig
from udg.offline.td3bc import TD3BCConfig

SCALES = ("demo", "small", "paper")
"""The scales, smallest first."""

SCALE_PURPOSE = {
    "demo": "minutes on 2 cores",
    "small": "hours on 2 cores",
    "paper": "a GPU or a cluster",
}
"""What each scale is meant for (the last column of the scale table and the CLI's help)."""


@dataclass(frozen=True)
class Preset:
    """What ``--scale`` means for one env: the config of each stage."""

    generate: GenerateConfig
    """Stage 1 (``udg generate``, and stage 1 and the baselines of ``udg experiment``)."""
    mopo: MOPOConfig
    """Stage 2 (``udg offline``, and every MOPO cell of ``udg experiment``)."""
    td3bc: ModelFreeConfig
    """Stage 2 with ``--algo td3bc``."""
    iql: ModelFreeConfig
    """Stage 2 with ``--algo iql``."""

    def learner(self, algo: str) -> MOPOConfig | ModelFreeConfig:
        """Stage 2's config of the learner ``algo`` (one of :data:`udg.offline.ALGOS`)."""
        if algo not in ALGOS:
            raise unknown_name("algo", algo, ALGOS)
        return getattr(self, algo)


DEMO_HIDDEN = (64, 64)
"""The hidden widths of every SAC network at ``demo`` (both stages)."""

# Stage 1, by scale. paper: WURL's K, steps and warm-up, MuJoCo episodes cut at 200 steps.
_GENERATE_PAPER = GenerateConfig(
    num_agents=10, steps=1_000_000, episode_length=200, warmup_steps=20_000
)
# small: the paper's population and episodes at a small fraction of its steps.
_GENERATE_SMALL = replace(_GENERATE_PAPER, steps=50_000, warmup_steps=5_000)
# demo: fewer agents and steps, smaller networks.
_GENERATE_DEMO = replace(
    _GENERATE_SMALL,
    num_agents=6,
    steps=20_000,
    warmup_steps=1_000,
    sac=replace(WURL_SAC, hidden_dims=DEMO_HIDDEN),
)
# Stage 2, by scale. paper: SPEC section 5, which MOPOConfig's defaults are.
_MOPO_PAPER = MOPOConfig()


def _policy_epochs(config: MOPOConfig, epochs: int) -> MOPOConfig:
    """``config`` with ``epochs`` policy epochs, evaluated four times along the way."""
    return replace(config, epochs=epochs, eval_every=max(epochs // 4, 1))


def _model_budget(config: MOPOConfig, **changes: int | None) -> MOPOConfig:
    """``config`` with its dynamics model's budget (``max_epochs``, ...) changed."""
    return replace(config, dynamics=replace(config.dynamics, **changes))


# small: MOPO's algorithm and networks, fewer rollouts and epochs, a capped model fit.
_MOPO_SMALL = _model_budget(
    _policy_epochs(replace(_MOPO_PAPER, rollout_batch_size=10_000, eval_episodes=5), epochs=40),
    max_epochs=40,
    max_batches_per_epoch=400,
)
# demo: short epochs and a small model too.
_MOPO_DEMO = replace(
    _MOPO_SMALL,
    rollout_batch_size=2_000,
    rollout_freq=250,
    epochs=12,
    steps_per_epoch=250,
    eval_every=4,
    checkpoint_every=4,
    sac=replace(_MOPO_SMALL.sac, hidden_dims=DEMO_HIDDEN),
    dynamics=replace(
        _MOPO_SMALL.dynamics,
        hidden_dims=(64, 64, 64),
        weight_decay=(2.5e-5, 5e-5, 7.5e-5, 1e-4),
        max_epochs=15,
        max_batches_per_epoch=100,
    ),
)
# Model-free learners. paper: both papers' budget and settings, ModelFreeConfig's and the
# learners' defaults.
_TD3BC_PAPER = ModelFreeConfig(learner=TD3BCConfig())
_IQL_PAPER = ModelFreeConfig(learner=IQLConfig())


def _like_mopo(learner: TD3BCConfig | IQLConfig, mopo: MOPOConfig) -> ModelFreeConfig:
    """``learner`` with the networks and batch size of ``mopo``'s SAC, run for as many updates
    as MOPO's SAC makes, evaluated and checkpointed at the same epochs."""
    return ModelFreeConfig(
        learner=replace(learner, hidden_dims=mopo.sac.hidden_dims, batch_size=mopo.sac.batch_size),
        epochs=mopo.epochs,
        steps_per_epoch=mopo.steps_per_epoch,
        eval_every=mopo.eval_every,
        eval_episodes=mopo.eval_episodes,
        checkpoint_every=mopo.checkpoint_every,
        observation_dims=mopo.observation_dims,
    )


def _preset(scale: str, generate: GenerateConfig, mopo: MOPOConfig) -> Preset:
    """A row: its stage 1 and MOPO, and its model-free learners (the papers' at ``paper``,
    :func:`_like_mopo` below it)."""
    if scale == "paper":
        return Preset(generate, mopo, _TD3BC_PAPER, _IQL_PAPER)
    return Preset(
        generate,
        mopo,
        _like_mopo(_TD3BC_PAPER.learner, mopo),
        _like_mopo(_IQL_PAPER.learner, mopo),
    )


# MOPO's penalty lambda for HalfCheetah; point and ant keep the default 1.
_CHEETAH_PENALTY_COEF = 0.5

# Ant at small: the paper's partial-reward setting. Its locomotion prior, ant-outward, is mixed
# in; since that reward is a function of the torso position, the agents observe it; the
# temperature is tuned; an episode cut short by a fall is not paid as a full one. One agent per
# direction of the ant-angle experiment.
_ANT_SMALL = replace(
    _GENERATE_SMALL,
    env="ant",
    num_agents=len(PAPER_ANGLES),
    steps=240_000,
    task="ant-outward",
    w_task=1.0,
    observe_features=True,
    sac=replace(_GENERATE_SMALL.sac, autotune_temperature=True),
    diversity=replace(_GENERATE_SMALL.diversity, episode_scaling=False),
)


def _point_mass_rows(env: str, num_agents: int) -> dict[tuple[str, str], Preset]:
    """The three rows of a built-in point-mass env (``point``, ``rooms``) with ``num_agents``
    diverse agents at demo and small. Rooms takes point's values as its pre-registered start
    (same mass, same episode length, same steps), with one agent per outer room; its episodes,
    like point's, run to the env's own time limit at every scale."""
    episode_length = get_env_spec(env).max_episode_steps
    return {
        (env, "demo"): _preset(
            "demo",
            replace(
                _GENERATE_DEMO,
                env=env,
                num_agents=num_agents,
                steps=8_000,
                episode_length=episode_length,
            ),
            _MOPO_DEMO,
        ),
        (env, "small"): _preset(
            "small",
            replace(
                _GENERATE_SMALL,
                env=env,
                num_agents=num_agents,
                steps=30_000,
                episode_length=episode_length,
                warmup_steps=2_000,
            ),
            _MOPO_SMALL,
        ),
        (env, "paper"): _preset(
            "paper",
            replace(_GENERATE_PAPER, env=env, episode_length=episode_length),
            _MOPO_PAPER,
        ),
    }


PRESETS: dict[tuple[str, str], Preset] = {
    **_point_mass_rows("point", _GENERATE_DEMO.num_agents),
    # rooms: K = 8, enough agents for one in each of the eight rooms around the start room.
    **_point_mass_rows("rooms", 8),
    ("ant", "demo"): _preset("demo", replace(_GENERATE_DEMO, env="ant"), _MOPO_DEMO),
    ("ant", "small"): _preset(
        "small",
        _ANT_SMALL,
        _model_budget(
            _policy_epochs(_MOPO_SMALL, epochs=8), max_epochs=20, max_batches_per_epoch=100
        ),
    ),
    ("ant", "paper"): _preset("paper", replace(_GENERATE_PAPER, env="ant"), _MOPO_PAPER),
    ("halfcheetah", "demo"): _preset(
        "demo",
        replace(_GENERATE_DEMO, env="halfcheetah"),
        replace(_MOPO_DEMO, penalty_coef=_CHEETAH_PENALTY_COEF),
    ),
    ("halfcheetah", "small"): _preset(
        "small",
        replace(_GENERATE_SMALL, env="halfcheetah"),
        _model_budget(replace(_MOPO_SMALL, penalty_coef=_CHEETAH_PENALTY_COEF), max_epochs=200),
    ),
    ("halfcheetah", "paper"): _preset(
        "paper",
        replace(_GENERATE_PAPER, env="halfcheetah"),
        replace(_MOPO_PAPER, penalty_coef=_CHEETAH_PENALTY_COEF),
    ),
}
"""The preset of each (env, scale); ``results/presets.md`` says why each value is what it is."""


def preset(env: str, scale: str) -> Preset:
    """The preset of ``env`` at ``scale``; an unknown pair raises a one-line :class:`UdgError`."""
    get_env_spec(env)  # an env udg does not know is named as such
    if scale not in SCALES:
        raise unknown_name("scale", scale, SCALES)
    try:
        return PRESETS[env, scale]
    except KeyError:
        known = ", ".join(f"{e} at {s}" for e, s in PRESETS)
        raise UdgError(f"no preset for env {env} at scale {scale}; presets: {known}") from None


def generate_preset(env: str, scale: str) -> GenerateConfig:
    """Stage 1's config for ``env`` at ``scale``."""
    return preset(env, scale).generate


def mopo_preset(env: str, scale: str) -> MOPOConfig:
    """MOPO's config for ``env`` at ``scale``."""
    return preset(env, scale).mopo


def learner_preset(env: str, scale: str, algo: str) -> MOPOConfig | ModelFreeConfig:
    """Stage 2's config of the learner ``algo`` for ``env`` at ``scale``."""
    return preset(env, scale).learner(algo)


def scale_help() -> str:
    """One line for a ``--scale`` flag's help: the scales and what each is meant for."""
    scales = ", ".join(f"{s} ({SCALE_PURPOSE[s]})" for s in SCALES)
    return f"Preset scale: {scales}; each value per env: python -m udg.experiments.presets."


def _thousands(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _widths(dims: tuple[int, ...]) -> str:
    return f"{len(dims)}x{dims[0]}" if len(set(dims)) == 1 else "x".join(map(str, dims))


def _describe_generate(c: GenerateConfig) -> str:
    text = (
        f"K={c.num_agents}, {_thousands(c.steps)} steps per agent ({_thousands(c.warmup_steps)} "
        f"random), {c.episode_length}-step episodes, {_widths(c.sac.hidden_dims)} SAC"
    )
    if c.task:
        text += f", {c.task} mixed in (w_task {c.w_task:g})"
    if c.observe_features:
        text += ", features observed"
    if c.sac.autotune_temperature:
        text += ", tuned temperature"
    if not c.diversity.episode_scaling:
        text += ", short episodes paid per step"
    return text


def _describe_mopo(c: MOPOConfig) -> str:
    d = c.dynamics
    fit = f"at most {d.max_epochs} epochs" if d.max_epochs else "early stopping only"
    if d.max_batches_per_epoch:
        fit += f" of {d.max_batches_per_epoch} minibatches"
    return (
        f"{c.epochs} epochs x {c.steps_per_epoch} updates, {_thousands(c.rollout_batch_size)} "
        f"rollouts of h={c.rollout_length} every {c.rollout_freq} updates, "
        f"lambda={c.penalty_coef:g}, {_widths(c.sac.hidden_dims)} SAC; "
        f"{d.ensemble_size}x{_widths(d.hidden_dims)} dynamics ({fit})"
    )


def _describe_model_free(td3bc: ModelFreeConfig, iql: ModelFreeConfig) -> str:
    budgets = [
        f"{_thousands(c.updates)} updates ({c.epochs} epochs x {c.steps_per_epoch}), "
        f"{_widths(c.learner.hidden_dims)} networks, batch {c.learner.batch_size}, "
        f"rewards {'unscaled' if c.reward_scale == 'none' else 'scaled by the return range'}"
        for c in (td3bc, iql)
    ]
    names = (
        f"TD3+BC (alpha={td3bc.learner.alpha:g})",
        f"IQL (expectile {iql.learner.expectile:g}, beta={iql.learner.temperature:g})",
    )
    if budgets[0] == budgets[1]:
        return f"{names[0]} and {names[1]}: {budgets[0]}"
    return f"{names[0]}: {budgets[0]}; {names[1]}: {budgets[1]}"


def scale_table() -> str:
    """The scale table of the README in Markdown, one row per (scale, env) of :data:`PRESETS`."""
    lines = [
        "| scale | env | stage 1 | MOPO | TD3+BC, IQL (`--algo`) | meant for |",
        "|---|---|---|---|---|---|",
    ]
    for scale in SCALES:
        for (env, row_scale), p in PRESETS.items():
            if row_scale == scale:
                lines.append(
                    f"| `{scale}` | {env} | {_describe_generate(p.generate)} | "
                    f"{_describe_mopo(p.mopo)} | {_describe_model_free(p.td3bc, p.iql)} | "
                    f"{SCALE_PURPOSE[scale]} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(scale_table(), end="")

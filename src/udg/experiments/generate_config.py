"""Configuration of stage 1 (diverse data generation) and its three scales.

One frozen dataclass holds every setting of ``udg generate``; :func:`generate_preset` fills it
for a scale (``demo``: the point env in minutes; ``small``: MuJoCo in hours on 2 cores;
``paper``: WURL's settings, for a GPU or a cluster). Flags given on the command line override
the preset field by field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from udg.agents.sac import SACConfig
from udg.diversity.wasserstein import DiversityConfig
from udg.envs.registry import get_env_spec
from udg.envs.tasks import get_task
from udg.errors import UdgError

SCALES = ("demo", "small", "paper")

# WURL trains its diversity agents with a fixed temperature.
WURL_SAC = SACConfig(
    hidden_dims=(256, 256), batch_size=128, autotune_temperature=False, init_temperature=0.2
)


@dataclass(frozen=True)
class GenerateConfig:
    """Stage 1 of UDG: K SAC agents trained at once on ``w_task * r_task + w_div * r_div``.

    ``r_div`` is WURL's amortised projected Wasserstein reward against the nearest other agent
    (SPEC section 3), computed on the env's low-dimensional feature columns at the end of each
    episode. Episodes run in lockstep rounds of ``episode_length`` steps: an agent whose episode
    terminates early waits for the round to end. Rounds are the unit of checkpointing, so an
    interrupted run resumes at a round boundary and reproduces an uninterrupted run exactly.
    Every transition an agent generates (its whole replay history) becomes its dataset.
    """

    env: str = "point"
    """Environment name (see ``udg tasks``)."""
    num_agents: int = 6
    """K, the number of agents (and datasets)."""
    steps: int = 20_000
    """Environment steps per agent (rounded up to whole rounds of ``episode_length``)."""
    episode_length: int = 100
    """T, the time limit of an episode; also the size of each agent's feature cache."""
    task: str | None = None
    """Known task whose reward is mixed in (None: purely unsupervised, as WURL/UDG)."""
    agent_tasks: tuple[str, ...] | None = None
    """One task per agent instead of ``task``: trains K specialists at once (e.g. the expert
    agents of the theory check, or several supervised baselines in one run)."""
    w_task: float = 0.0
    """Weight of the task reward."""
    w_div: float = 1.0
    """Weight of the diversity reward (0 trains plain SAC on the task: the supervised baseline)."""
    seed: int = 0
    """Seed of everything (networks, environments, sampling)."""
    warmup_steps: int = 2_000
    """Steps per agent of uniformly random actions before learning starts (WURL: 20k)."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step, done at the end of each round."""
    updates_per_call: int = 50
    """Updates scanned in one jitted call (fewer dispatches; same result as one by one)."""
    features: tuple[str, ...] | None = None
    """Info columns forming the diversity features (None: the env's, e.g. torso x, y)."""
    observe_features: bool = False
    """Append the diversity features to what the agents see. Gymnasium's Ant and HalfCheetah
    leave the torso x (and y) out of the observation, so the reward, a function of position,
    is not a function of the agent's input; with this on it is. The datasets keep the env's
    own observation (the features are stored as info columns either way)."""
    final_rollouts: int = 0
    """Extra episodes of each final policy appended to its dataset. Default 0: the paper's
    buffers are the agents' replay histories, whose last episodes already come from the
    final policies; extra rollouts would over-weight them."""
    checkpoint_every: int = 20
    """Rounds between checkpoints (a checkpoint is also written at the end)."""
    sac: SACConfig = WURL_SAC
    """SAC settings of every agent (WURL: fixed alpha 0.2, lr 3e-4, batch 128, 2x256)."""
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    """Diversity reward settings (``cache_size`` is set to ``episode_length``)."""

    @property
    def rounds(self) -> int:
        return -(-self.steps // self.episode_length)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The task of each agent (empty when unsupervised)."""
        if self.agent_tasks is not None:
            return tuple(self.agent_tasks)
        return (self.task,) * self.num_agents if self.task else ()

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.features or get_env_spec(self.env).feature_columns

    def validated(self) -> GenerateConfig:
        """This config after boundary checks (a :class:`UdgError` names the first problem)."""
        spec = get_env_spec(self.env)
        if self.num_agents < 1:
            raise UdgError(f"--agents must be at least 1, got {self.num_agents}")
        if self.w_div > 0 and self.num_agents < 2:
            raise UdgError("the diversity reward needs at least 2 agents (or set --w-div 0)")
        if self.steps <= 0 or self.episode_length <= 0:
            raise UdgError("--steps and --episode-length must be positive")
        if self.w_task < 0 or self.w_div < 0:
            raise UdgError("--w-task and --w-div must be >= 0")
        if self.w_task + self.w_div == 0:
            raise UdgError(
                "nothing to learn: --w-task and --w-div are both 0 (give --task T --w-task 1, "
                "or --w-div > 0 with at least 2 agents)"
            )
        if self.task is not None and self.agent_tasks is not None:
            raise UdgError("give either one task for all agents or one task per agent, not both")
        if self.agent_tasks is not None and len(self.agent_tasks) != self.num_agents:
            raise UdgError(
                f"{len(self.agent_tasks)} agent tasks given for {self.num_agents} agents"
            )
        if self.w_task > 0 and self.task is None and self.agent_tasks is None:
            raise UdgError("--w-task > 0 needs --task")
        for name in self.task_names:
            task = get_task(name)
            if task.env != self.env:
                raise UdgError(f"task {task.name} is for env {task.env}, not {self.env}")
        missing = [c for c in self.feature_columns if c not in spec.info_columns]
        if missing:
            raise UdgError(
                f"feature column(s) {', '.join(missing)} not stored by env {self.env}; "
                f"it stores {', '.join(spec.info_columns)}"
            )
        if self.warmup_steps < 0 or self.updates_per_step < 0 or self.updates_per_call < 1:
            raise UdgError("warmup, updates per step and per call must be non-negative")
        if self.checkpoint_every < 1 or self.final_rollouts < 0:
            raise UdgError("--checkpoint-every must be >= 1 and --final-rollouts >= 0")
        return dataclasses.replace(
            self,
            diversity=dataclasses.replace(self.diversity, cache_size=self.episode_length),
        )


def generate_preset(env: str, scale: str) -> GenerateConfig:
    """The default config of ``env`` at ``scale`` (demo, small or paper)."""
    spec = get_env_spec(env)
    if scale not in SCALES:
        raise UdgError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    if scale == "demo":
        return GenerateConfig(
            env=env,
            num_agents=6,
            steps=8_000 if env == "point" else 20_000,
            episode_length=100 if env == "point" else 200,
            warmup_steps=1_000,
            sac=dataclasses.replace(WURL_SAC, hidden_dims=(64, 64)),
            diversity=DiversityConfig(reward_scale=1.0),
        )
    if scale == "small":
        # Sized so that `udg experiment cheetah --scale small` fits in about 3 hours on 2 cores.
        small = GenerateConfig(
            env=env,
            num_agents=10 if env != "point" else 6,
            steps=50_000 if env != "point" else 30_000,
            episode_length=200 if env != "point" else 100,
            warmup_steps=5_000 if env != "point" else 2_000,
            diversity=DiversityConfig(reward_scale=1.0),
        )
        return _ant_small(small) if env == "ant" else small
    return GenerateConfig(
        env=env,
        num_agents=10,
        steps=1_000_000,
        episode_length=200 if env != "point" else spec.max_episode_steps,
        warmup_steps=20_000,
        diversity=DiversityConfig(reward_scale=1.0),
    )


def _ant_small(small: GenerateConfig) -> GenerateConfig:
    """Ant at ``small``: the paper's partial-reward setting, with a locomotion prior.

    At small budgets the diversity reward alone does not teach Ant to walk (K = 10 x 50k steps
    per agent, and K = 6 x 300k at 40x the reward: a cloud within ~2 m of the start; measured
    in results/stage1/README.md). Mixing in ``ant-outward``, Ant-v5's reward with its forward
    speed replaced by the speed away from the start in whichever direction, teaches the gait
    and leaves the heading to the diversity reward. That reward is a function of the torso
    position, so the agents observe it; the temperature is tuned; an episode cut short by a
    fall is not paid as a full one. Six agents, one per direction of the ant-angle
    experiment, at 240k steps each (at 150k five of six headings were distinct; at 240k all
    six, min pairwise W1 6.7x that of random policies).
    """
    return dataclasses.replace(
        small,
        num_agents=6,
        steps=240_000,
        task="ant-outward",
        w_task=1.0,
        w_div=1.0,
        observe_features=True,
        sac=dataclasses.replace(small.sac, autotune_temperature=True),
        diversity=dataclasses.replace(small.diversity, episode_scaling=False),
    )

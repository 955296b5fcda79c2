"""Configuration of stage 1 (diverse data generation).

One frozen dataclass holds every setting of ``udg generate`` and checks them when it is made.
Its presets, one per env and scale, are in :mod:`udg.experiments.presets`; flags given on the
command line override the preset field by field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from udg.agents.sac import SACConfig
from udg.diversity.wasserstein import DiversityConfig
from udg.envs.registry import get_env_spec
from udg.envs.tasks import get_task
from udg.errors import ConfigError

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

    def __post_init__(self) -> None:
        spec = get_env_spec(self.env)
        for name in ("num_agents", "updates_per_call", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "episode_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("seed", "warmup_steps", "final_rollouts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("w_task", "w_div", "updates_per_step"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:  # also refuses NaN
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.w_task + self.w_div == 0:
            raise ConfigError(
                "nothing to learn: w_task and w_div are both 0 (give a task with w_task > 0, "
                "or w_div > 0 with at least 2 agents)"
            )
        if self.agent_tasks is not None and len(self.agent_tasks) != self.num_agents:
            raise ConfigError(
                f"agent_tasks names {len(self.agent_tasks)} tasks for num_agents={self.num_agents}"
            )
        if self.w_task > 0 and self.task is None and self.agent_tasks is None:
            raise ConfigError("w_task > 0 needs a task (task or agent_tasks)")
        for name in self.task_names:
            task = get_task(name)
            if task.env != self.env:
                raise ConfigError(f"task {task.name} is for env {task.env}, not {self.env}")
        repeated = sorted({c for c in self.feature_columns if self.feature_columns.count(c) > 1})
        if repeated:
            raise ConfigError(f"feature column(s) {', '.join(repeated)} given twice")
        missing = [c for c in self.feature_columns if c not in spec.info_columns]
        if missing:
            raise ConfigError(
                f"feature column(s) {', '.join(missing)} not stored by env {self.env}; "
                f"it stores {', '.join(spec.info_columns)}"
            )

    def validated(self) -> GenerateConfig:
        """This config ready to run: the checks that relate fields the CLI sets one after the
        other (so ``__post_init__`` cannot make them), and the diversity cache sized to hold one
        episode. A :class:`~udg.errors.UdgError` names the first problem."""
        if self.w_div > 0 and self.num_agents < 2:
            raise ConfigError(
                f"the diversity reward (w_div > 0) needs at least 2 agents, got num_agents="
                f"{self.num_agents} (or set w_div to 0)"
            )
        if self.warmup_steps >= self.steps:
            raise ConfigError(
                f"warmup_steps {self.warmup_steps} >= steps {self.steps}: every step would be a "
                "random action and no agent would learn (random data: udg collect-random)"
            )
        if self.task is not None and self.agent_tasks is not None:
            raise ConfigError(
                "give either one task for all agents or one task per agent (task or "
                "agent_tasks), not both"
            )
        return dataclasses.replace(
            self,
            diversity=dataclasses.replace(self.diversity, cache_size=self.episode_length),
        )


def generate_preset(env: str, scale: str) -> GenerateConfig:
    """Stage 1's preset for ``env`` at ``scale``: :func:`udg.experiments.presets.generate_preset`
    (kept here so that older imports work)."""
    from udg.experiments.presets import generate_preset as preset

    return preset(env, scale)

"""NumPy replay memory of a population: one FIFO ring buffer per agent, stored as arrays with
the agent axis first (`[K, capacity, ...]`). Transitions enter either one step for all K agents
at once or a whole episode for one agent (the diversity reward is known only at episode end,
so each agent's episode is written when it is scored). Sampling draws uniform indices per
agent from a caller-owned `np.random.Generator` and returns `[K, N, B, ...]` float32 batches
ready for `population_update_n`. `state_dict`/`load_state_dict` capture arrays, sizes and write
pointers exactly, so a resumed run (with the generator's state restored by the caller) samples
the same batches as an uninterrupted one. It is udg's one ring buffer: stage 1's replay
(K members) and MOPO's model buffer (one member, fed a refresh's rollouts at a time).
"""

import numpy as np

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations")


class PopulationReplay:
    """K ring buffers of `capacity` transitions each; the oldest transition is overwritten
    first. `terminations` is 1.0 only for a true termination (time-limit truncations are
    stored as 0.0 so that SAC still bootstraps through them)."""

    def __init__(self, num_agents: int, capacity: int, obs_dim: int, act_dim: int) -> None:
        if min(num_agents, capacity, obs_dim, act_dim) <= 0:
            raise ValueError(
                "num_agents, capacity, obs_dim, act_dim must be > 0, got "
                f"{num_agents}, {capacity}, {obs_dim}, {act_dim}"
            )
        self.num_agents = num_agents
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        k, c = num_agents, capacity
        self._data = {
            "observations": np.zeros((k, c, obs_dim), np.float32),
            "actions": np.zeros((k, c, act_dim), np.float32),
            "rewards": np.zeros((k, c), np.float32),
            "next_observations": np.zeros((k, c, obs_dim), np.float32),
            "terminations": np.zeros((k, c), np.float32),
        }
        self._sizes = np.zeros(k, np.int64)  # [K] valid transitions per agent
        self._pointers = np.zeros(k, np.int64)  # [K] next write slot per agent

    @property
    def sizes(self) -> np.ndarray:
        """Valid transitions per agent, `[K]` (a copy)."""
        return self._sizes.copy()

    def _trailing_shape(self, field: str) -> tuple[int, ...]:
        return self._data[field].shape[2:]

    def add(
        self,
        agent_index: int | None,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminations: np.ndarray,
    ) -> None:
        """Append transitions.

        `agent_index=k`: T transitions of agent k, arrays `[T, ...]` (e.g. a scored episode).
        `agent_index=None`: all agents at once, arrays `[K, ...]` (one step each) or
        `[K, T, ...]` (T steps each). If T exceeds the capacity only the last `capacity`
        transitions are kept, as if they had been added one by one.
        """
        values = (observations, actions, rewards, next_observations, terminations)
        columns = {f: np.asarray(v, np.float32) for f, v in zip(FIELDS, values, strict=True)}
        if agent_index is None:
            agent_ids = np.arange(self.num_agents)
            lead = columns["rewards"].shape
            if len(lead) not in (1, 2) or lead[0] != self.num_agents:
                raise ValueError(
                    f"rewards must be [K] or [K, T] with K={self.num_agents}, got {lead}"
                )
            if len(lead) == 1:  # one step for every agent: give it a length-1 time axis
                columns = {f: v[:, None] for f, v in columns.items()}
        else:
            if not 0 <= agent_index < self.num_agents:
                raise IndexError(f"agent_index {agent_index} not in [0, {self.num_agents})")
            agent_ids = np.array([agent_index])
            columns = {f: v[None] for f, v in columns.items()}
        num_steps = columns["rewards"].shape[1]
        for field, value in columns.items():
            expected = (len(agent_ids), num_steps, *self._trailing_shape(field))
            if value.shape != expected:
                raise ValueError(f"{field} has shape {value.shape}, expected {expected}")
        if num_steps == 0:
            return
        skip = max(0, num_steps - self.capacity)  # only the newest `capacity` survive
        slots = (
            self._pointers[agent_ids, None] + skip + np.arange(num_steps - skip)
        ) % self.capacity  # [k, T - skip]
        for field, value in columns.items():
            self._data[field][agent_ids[:, None], slots] = value[:, skip:]
        self._pointers[agent_ids] = (self._pointers[agent_ids] + num_steps) % self.capacity
        self._sizes[agent_ids] = np.minimum(self._sizes[agent_ids] + num_steps, self.capacity)

    def sample(
        self, rng: np.random.Generator, batch_size: int, num_batches: int = 1
    ) -> dict[str, np.ndarray]:
        """Uniform samples with replacement, independently per agent: a dict of
        `[K, num_batches, batch_size, ...]` float32 arrays."""
        if np.any(self._sizes == 0):
            raise ValueError(
                f"cannot sample: some agents have no transitions (sizes {self._sizes})"
            )
        indices = rng.integers(
            0, self._sizes[:, None, None], size=(self.num_agents, num_batches, batch_size)
        )  # [K, N, B]
        agent_ids = np.arange(self.num_agents)[:, None, None]
        return {field: self._data[field][agent_ids, indices] for field in FIELDS}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every array plus sizes and write pointers (for checkpoints)."""
        state = {field: self._data[field].copy() for field in FIELDS}
        state["sizes"] = self._sizes.copy()
        state["pointers"] = self._pointers.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a `state_dict` of a buffer with the same K, capacity and dimensions."""
        for field in FIELDS:
            if np.shape(state[field]) != self._data[field].shape:
                raise ValueError(
                    f"{field} has shape {np.shape(state[field])}, "
                    f"expected {self._data[field].shape}"
                )
        for name in ("sizes", "pointers"):
            if np.shape(state[name]) != (self.num_agents,):
                raise ValueError(f"{name} must have shape ({self.num_agents},)")
        for field in FIELDS:
            self._data[field][...] = state[field]
        self._sizes[...] = state["sizes"]
        self._pointers[...] = state["pointers"]

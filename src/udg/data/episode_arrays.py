"""Episodes as a few flat arrays: the layout of stage 1's append-only chunk files.

A list of episodes becomes one array per column (all episodes concatenated) plus their lengths,
which ``np.savez`` writes in one file; reading inverts it without copying per step.
"""

from __future__ import annotations

import numpy as np

from udg.data.dataset import Episode


def episode_arrays(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """One agent's episodes as flat arrays plus lengths (the chunk-file layout)."""
    out = {
        "lengths": np.array([len(e) for e in episodes], np.int64),
        "observations": np.concatenate([e.observations for e in episodes]),
        "actions": np.concatenate([e.actions for e in episodes]),
        "rewards": np.concatenate([e.rewards for e in episodes]),
        "terminations": np.concatenate([e.terminations for e in episodes]),
        "truncations": np.concatenate([e.truncations for e in episodes]),
    }
    for key in episodes[0].infos:
        out[f"info/{key}"] = np.concatenate([e.infos[key] for e in episodes])
    return out


def episodes_from_arrays(arrays: dict[str, np.ndarray], prefix: str) -> list[Episode]:
    """Inverse of :func:`episode_arrays` for the arrays whose names start with ``prefix``."""
    lengths = arrays[f"{prefix}lengths"]
    step_ends = np.cumsum(lengths)
    obs_ends = np.cumsum(lengths + 1)
    info_keys = [k[len(prefix) + 5 :] for k in arrays if k.startswith(f"{prefix}info/")]
    episodes = []
    for i, t in enumerate(lengths):
        s0, o0 = step_ends[i] - t, obs_ends[i] - t - 1
        episodes.append(
            Episode(
                observations=arrays[f"{prefix}observations"][o0 : o0 + t + 1],
                actions=arrays[f"{prefix}actions"][s0 : s0 + t],
                rewards=arrays[f"{prefix}rewards"][s0 : s0 + t],
                terminations=arrays[f"{prefix}terminations"][s0 : s0 + t],
                truncations=arrays[f"{prefix}truncations"][s0 : s0 + t],
                infos={k: arrays[f"{prefix}info/{k}"][o0 : o0 + t + 1] for k in info_keys},
            )
        )
    return episodes

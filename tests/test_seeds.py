"""Named seed streams: a function of (seed, purpose, index) alone, distinct across purposes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from udg import seeds


def test_streams_repeat_and_differ_by_seed_purpose_and_index():
    draw = lambda *a: seeds.numpy_rng(*a).integers(0, 2**31, 4).tolist()  # noqa: E731
    assert draw(0, "replay", 3) == draw(0, "replay", 3)
    others = [draw(1, "replay", 3), draw(0, "updates", 3), draw(0, "replay", 4), draw(0, "replay")]
    assert all(o != draw(0, "replay", 3) for o in others)
    assert seeds.int_seed(5, "env_reset", 2, 1) == seeds.int_seeds(5, "env_reset", 3, 2, 1)[0]
    a, b = seeds.jax_key(0, "init"), seeds.jax_key(0, "init")
    assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b))


def test_unknown_purpose_and_negative_numbers_are_refused():
    with pytest.raises(ValueError, match="unknown seed purpose 'replays'"):
        seeds.numpy_rng(0, "replays")
    with pytest.raises(ValueError, match="non-negative"):
        seeds.int_seed(-1, "replay")

"""The rooms world: its stated properties (a)-(c), its walls, and its tasks.

The properties are measured on many episodes at once with :func:`udg.envs.rooms.rooms_step`,
the batched step the env itself takes (a test checks the two agree).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from udg.envs import get_env_spec, get_task, make_env, rooms
from udg.errors import UdgError

STEPS = 100  # the demo's episode length
EPISODES = 2000
ANGLES = (0, 60, 120, 180, 240, 300)
L, H = rooms.START_HALF, rooms.ARENA_HALF


def random_positions(n: int, seed: int) -> np.ndarray:
    """Positions of ``n`` uniformly random episodes from the env's reset; ``[n, T+1, 2]``."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.1, 0.1, (n, 2))  # the env's reset noise
    v = np.zeros((n, 2))
    positions = [p]
    for _ in range(STEPS):
        p, v = rooms.rooms_step(p, v, rng.uniform(-1, 1, (n, 2)))
        positions.append(p)
    return np.stack(positions, axis=1)


@pytest.fixture(scope="module")
def random_data() -> np.ndarray:
    return random_positions(EPISODES, seed=0)


def outside_start_room(positions: np.ndarray) -> np.ndarray:
    return rooms.room_of(positions[..., 0], positions[..., 1]) != rooms.START_ROOM


def beyond_start_room_walls() -> np.ndarray:
    """The wall pieces that do not bound the start room; ``[W, 2, 2]``."""
    segments = np.array(rooms.wall_segments())
    return segments[np.abs(segments).max(axis=(1, 2)) > L]


def distance_to_segments(q: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The distance from each point ``q`` (``[M, 2]``) to the nearest segment; ``[M]``."""
    a, b = segments[:, 0], segments[:, 1]  # [W, 2]
    ab = b - a
    t = np.clip(np.einsum("mwk,wk->mw", q[:, None] - a, ab) / np.sum(ab**2, axis=1), 0, 1)
    closest = a + t[..., None] * ab  # [M, W, 2]
    return np.min(np.linalg.norm(q[:, None] - closest, axis=-1), axis=1)


def test_a_random_actions_stay_in_the_start_room(random_data):
    left = outside_start_room(random_data).any(axis=1)  # [EPISODES]
    assert 1 - left.mean() >= 0.99, f"{left.mean():.2%} of random episodes leave the start room"


def test_c_random_data_never_meets_the_walls_beyond_the_start_room(random_data):
    # A state inside the start room can only be stopped by the start room's walls; one outside
    # it must stay farther than a step at top speed (0.2) from every other wall, so no random
    # transition was stopped by one (a stopped move ends 1e-6 from its wall).
    outside = random_data[outside_start_room(random_data)]  # [M, 2]
    if len(outside):
        assert distance_to_segments(outside, beyond_start_room_walls()).min() > 0.2


def scripted_returns(theta: float, waypoints, n: int = 16, seed: int = 0) -> np.ndarray:
    """Returns of ``rooms-angle-<theta>`` for ``n`` resets of a policy that steers through
    ``waypoints`` (a proportional-derivative controller, saturated) and then pushes along theta;
    with no waypoints, the straight push. Also returns the final rooms; ``([n], [n])``."""
    u = np.array([math.cos(math.radians(theta)), math.sin(math.radians(theta))])
    rng = np.random.default_rng(seed)
    p, v = rng.uniform(-0.1, 0.1, (n, 2)), np.zeros((n, 2))
    targets = np.array([*waypoints, (0.0, 0.0)])  # the last row is never steered to
    reached = np.zeros(n, dtype=int)  # [n] waypoints reached so far
    total = np.zeros(n)
    for _ in range(STEPS):
        pushing = reached >= len(waypoints)
        target = targets[np.minimum(reached, len(waypoints))]  # [n, 2]
        steer = np.clip(3.0 * (target - p) - v, -1, 1)
        action = np.where(pushing[:, None], u, steer)
        q, v = rooms.rooms_step(p, v, action)
        total += (q - p) @ u - rooms.CTRL_COST * np.sum(action**2, axis=1)
        p = q
        reached += ~pushing & (np.linalg.norm(p - target, axis=1) < 0.2)
    return total, rooms.room_of(p[:, 0], p[:, 1])


def doorway_routes(theta: float) -> list[list[tuple[float, float]]]:
    """Waypoint routes through the doorways toward the far corner or wall along ``theta``:
    0.35 in front of each doorway, then 0.35 past it (half-turn symmetric)."""
    d = 0.35
    side = rooms.SIDE_DOOR_CENTRE
    east = [(L - d, side), (L + d, side)]
    north = [(0.0, L - d), (0.0, L + d)]
    mid = (L + H) / 2  # the doorways between outer rooms
    routes = {
        0: [east],
        60: [north + [(L - d, mid), (L + d, mid)], east + [(mid, L - d), (mid, L + d)]],
        120: [north + [(-L + d, mid), (-L - d, mid)]],
    }
    if theta < 180:
        return routes[theta]
    return [[(-x, -y) for x, y in route] for route in routes[theta - 180]]


@pytest.mark.parametrize("theta", ANGLES)
def test_b_a_straight_push_earns_at_most_half_of_a_route_through_the_doorways(theta):
    straight, straight_rooms = scripted_returns(theta, [])
    assert (straight_rooms == rooms.START_ROOM).all()  # it never finds a doorway
    best = max(
        (scripted_returns(theta, route) for route in doorway_routes(theta)),
        key=lambda result: result[0].mean(),
    )
    route, route_rooms = best
    assert (route_rooms != rooms.START_ROOM).all()
    assert straight.max() <= 0.5 * route.min(), (straight.max(), route.min())


def test_the_batched_step_is_the_envs_step():
    env = make_env("rooms", max_episode_steps=400)
    rng = np.random.default_rng(4)
    obs, _ = env.reset(seed=4)
    p, v = obs[None, :2], obs[None, 2:]
    for t in range(400):
        # A slow turn at full force reaches walls and slides along them.
        heading = t / 40
        action = np.clip([math.cos(heading), math.sin(heading)] + rng.normal(0, 0.3, 2), -1, 1)
        obs, reward, *_ = env.step(action.astype(np.float32))
        before = p
        p, v = rooms.rooms_step(p, v, action.astype(np.float32)[None])
        np.testing.assert_array_equal(obs, np.concatenate([p[0], v[0]]))
        cost = rooms.CTRL_COST * np.sum(np.square(action.astype(np.float32).astype(np.float64)))
        assert reward == pytest.approx(p[0, 0] - before[0, 0] - cost, abs=1e-12)


def test_the_envs_step_equals_the_batched_step_anywhere():
    # The env steps one point in Python floats until a move reaches a wall's line: the numbers
    # must be rooms_step's exactly, beside walls, in doorways and at corners too.
    env = make_env("rooms").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(7)
    n = 20_000
    lines = np.array([-5.5, -2.5, 2.5, 5.5])
    near = rng.choice(lines, (n, 2)) + rng.uniform(-0.3, 0.3, (n, 2))  # beside a wall line
    anywhere = rng.uniform(-5.4, 5.4, (n, 2))
    p = np.clip(np.where(rng.random((n, 1)) < 0.5, near, anywhere), -5.49, 5.49)
    v = rng.uniform(-2.5, 2.5, (n, 2))
    action = rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32)  # some beyond the bounds
    q, w = rooms.rooms_step(p, v, action)
    for i in range(n):
        env._position, env._velocity = p[i].copy(), v[i].copy()
        obs, reward, *_ = env.step(action[i])
        np.testing.assert_array_equal(obs, np.concatenate([q[i], w[i]]))
        cost = rooms.CTRL_COST * np.sum(np.square(np.clip(action[i].astype(np.float64), -1, 1)))
        assert reward == float(q[i, 0] - p[i, 0] - cost)


def test_the_env_is_point_with_walls():
    from udg.envs.point import PointEnv

    env = make_env("rooms")
    assert isinstance(env.unwrapped, PointEnv)
    spec = get_env_spec("rooms")
    assert spec.gym_id == "udg/Rooms-v0" and spec.max_episode_steps == STEPS
    assert spec.feature_columns == ("x_position", "y_position")
    assert not spec.terminated(np.zeros((3, 4))).any()
    import jax.numpy as jnp

    assert spec.terminated(jnp.zeros((3, 4)), xp=jnp).tolist() == [False] * 3  # model rollouts
    a, b = make_env("rooms"), make_env("rooms")
    a.reset(seed=9), b.reset(seed=9)
    for _ in range(50):  # deterministic apart from the reset noise
        action = np.array([0.9, 0.7], np.float32)
        np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])


def solid_crossings(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Which moves ``p -> q`` (``[N, 2]``) cross a wall segment's line inside the segment."""
    crossed = np.zeros(len(p), dtype=bool)
    for (x0, y0), (x1, y1) in rooms.wall_segments():
        axis = 0 if x0 == x1 else 1
        c, lo, hi = (x0, min(y0, y1), max(y0, y1)) if axis == 0 else (y0, min(x0, x1), max(x0, x1))
        s0, s1 = p[:, axis] - c, q[:, axis] - c
        sides = s0 * s1 < 0
        frac = np.where(sides, s0 / np.where(sides, s0 - s1, 1.0), 0.0)
        along = p[:, 1 - axis] + frac * (q[:, 1 - axis] - p[:, 1 - axis])
        crossed |= sides & (lo <= along) & (along <= hi)
    return crossed


@pytest.mark.parametrize(
    ("speed", "slants"),
    [(2.0, (-1.0, 0.0, 1.0)), (50.0, (0.0,))],
)
def test_nothing_passes_through_a_wall(speed, slants):
    # From points on both sides of every wall piece, at the top speed head-on and at 45 degrees
    # into it, and head-on far beyond it (50, 5 a step): no move's chord crosses a solid wall.
    # (Far beyond the top speed a slanted move may pass a doorway, slide along the next wall
    # and end where the chord cuts a wall's end, so the chord says nothing there.)
    rng = np.random.default_rng(2)
    starts, velocities = [], []
    for (x0, y0), (x1, y1) in rooms.wall_segments():
        axis = 0 if x0 == x1 else 1
        t = rng.uniform(0, 1, 40)
        on_wall = np.stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0)], axis=1)  # [40, 2]
        for side in (-1.0, 1.0):
            offset = np.zeros(2)
            offset[axis] = side * rng.uniform(0.01, 0.3)
            for slant in slants:
                direction = np.zeros(2)
                direction[axis], direction[1 - axis] = -side, slant
                starts.append(on_wall + offset)
                velocities.append(np.tile(speed * direction / np.linalg.norm(direction), (40, 1)))
    p, v = np.concatenate(starts), np.concatenate(velocities)
    inside = np.all(np.abs(p) < H, axis=1)  # the border's outer side is not part of the world
    p, v = p[inside], v[inside]
    for _ in range(3):
        action = np.sign(v) * (np.abs(v) > 0)  # keep pushing the same way at full force
        q, v = rooms.rooms_step(p, v, action)
        assert not solid_crossings(p, q).any()
        assert np.all(np.abs(q) < H)
        p = q


def test_walls_are_inelastic_and_allow_sliding():
    # At x = 2.4, moving east at 2 and north at 0.5, with the force east: the east wall (solid
    # at y = 0) stops x just short of 2.5 and zeroes v_x; v_y and the motion north are kept.
    p, v = rooms.rooms_step(np.array([[2.4, 0.0]]), np.array([[2.0, 0.5]]), np.array([[1.0, 0.0]]))
    assert L - 1e-5 < p[0, 0] < L
    assert v[0, 0] == 0.0
    assert v[0, 1] == pytest.approx(0.9 * 0.5)
    assert p[0, 1] == pytest.approx(0.1 * 0.9 * 0.5)
    # Through the east doorway the same move is not stopped.
    door = rooms.SIDE_DOOR_CENTRE
    p, v = rooms.rooms_step(np.array([[2.4, door]]), np.array([[2.0, 0.0]]), np.array([[1.0, 0]]))
    assert p[0, 0] == pytest.approx(2.4 + 0.1 * 2.0) and v[0, 0] == pytest.approx(2.0)


def test_room_of_and_the_wall_data():
    assert rooms.room_of(0.0, 0.0) == rooms.START_ROOM
    assert rooms.room_of(-4.0, -4.0) == 0 and rooms.room_of(4.0, 4.0) == 8
    assert rooms.room_of(4.0, 0.0) == 5 and rooms.room_of(0.0, 4.0) == 7
    segments = rooms.wall_segments()
    for (x0, y0), (x1, y1) in segments:
        assert (x0 == x1) != (y0 == y1)  # axis-aligned, not a point
        assert max(abs(x0), abs(y0), abs(x1), abs(y1)) <= H
    # Each of the 12 wall pieces between two rooms has one doorway of DOOR_WIDTH.
    lengths = [abs(x1 - x0) + abs(y1 - y0) for (x0, y0), (x1, y1) in segments]
    solid_inner = sum(lengths) - 4 * 2 * H  # the border is solid
    assert solid_inner == pytest.approx(4 * 2 * H - 12 * rooms.DOOR_WIDTH)


def _rooms_dataset(steps: int, seed: int):
    """Episodes of ``rooms`` under actions that push toward a random corner (so they reach the
    start room's walls) with noise."""
    from udg.data.collect import collect_episodes
    from udg.data.dataset import dataset_from_episodes

    env = make_env("rooms")
    rng = np.random.default_rng(seed)
    push = rng.choice([-1.0, 1.0], 2)

    def policy(_obs):
        return np.clip(push + rng.normal(0, 0.5, 2), -1, 1).astype(np.float32)

    return dataset_from_episodes("rooms", "rooms", collect_episodes(env, policy, steps, seed=seed))


def test_direction_task_relabels_the_envs_reward_and_telescopes():
    data = _rooms_dataset(300, seed=1)
    cols = data.columns()
    # Datasets store float32 observations, as for point.
    np.testing.assert_allclose(get_task("rooms-angle-0").reward(cols), data.rewards, atol=1e-5)
    cost = rooms.CTRL_COST * np.sum(cols["actions"].astype(np.float64) ** 2, axis=1)
    r60 = get_task("rooms-angle-60").reward(cols) + cost
    for start, stop in zip(data.episode_starts[:-1], data.episode_starts[1:], strict=True):
        shift = cols["next_observations"][stop - 1, :2] - cols["observations"][start, :2]
        assert r60[start:stop].sum() == pytest.approx(shift @ [0.5, math.sqrt(3) / 2])


def test_goal_task_is_minus_the_distance():
    data = _rooms_dataset(100, seed=2)
    cols = data.columns()
    reward = get_task("rooms-goal-2.5,-1").reward(cols)
    expected = -np.hypot(cols["next_observations"][:, 0] - 2.5, cols["next_observations"][:, 1] + 1)
    np.testing.assert_allclose(reward, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("rooms-angle-60", "rooms-angle-60"),
        ("rooms-angle--45.5", "rooms-angle--45.5"),
        ("rooms-goal-2.5,-1", "rooms-goal-2.5,-1"),
        ("rooms-goal--4,4.25", "rooms-goal--4,4.25"),
        ("rooms-goal-0.0,0", "rooms-goal-0,0"),
        ("rooms-goal-5.5,-5.5", "rooms-goal-5.5,-5.5"),  # the arena's corner
    ],
)
def test_rooms_task_names_parse(name, canonical):
    task = get_task(name)
    assert task.env == "rooms" and task.name == canonical
    assert get_task(task.name).formula == task.formula


def test_goal_outside_the_arena_is_refused():
    with pytest.raises(
        UdgError, match=r"goal \(6, 0\) lies outside the rooms arena \[-5.5, 5.5\]\^2"
    ):
        get_task("rooms-goal-6,0")
    with pytest.raises(UdgError, match="outside the rooms arena"):
        get_task("rooms-goal-0,-5.51")


@pytest.mark.parametrize("name", ["rooms-goal-1", "rooms-goal-1-2", "rooms-goal-1,", "rooms-goal-"])
def test_malformed_goal_names_are_unknown(name):
    with pytest.raises(UdgError, match="unknown task.*rooms-goal-<x>,<y>"):
        get_task(name)


def test_udg_tasks_lists_both_families():
    from udg.envs.tasks import TASK_FAMILIES, example_tasks

    names = [t.name for t in example_tasks()]
    assert [f"rooms-angle-{a}" for a in ANGLES] == [n for n in names if "rooms-angle" in n]
    assert any(n.startswith("rooms-goal-") for n in names)
    assert {"rooms-angle-<deg>", "rooms-goal-<x>,<y>"} <= set(TASK_FAMILIES)


def report(episodes: int = EPISODES, seed: int = 0) -> str:
    """The measured figures of properties (a)-(c), as the module docstring of
    :mod:`udg.envs.rooms` quotes them: ``python tests/test_rooms.py [episodes] [seed]``."""
    positions = random_positions(episodes, seed)
    outside = outside_start_room(positions)
    lines = [
        f"(a) {episodes} random {STEPS}-step episodes (seed {seed}): "
        f"{1 - outside.any(axis=1).mean():.2%} stay in the start room"
    ]
    q = positions[outside]
    nearest = distance_to_segments(q, beyond_start_room_walls()).min() if len(q) else math.inf
    lines.append(
        f"(c) {len(q)} of {outside.size} random states lie outside the start room; the nearest "
        f"comes {nearest:.2f} from a wall beyond it (> 0.2 needed)"
    )
    for theta in ANGLES:
        straight, _ = scripted_returns(theta, [])
        route = max((scripted_returns(theta, r)[0] for r in doorway_routes(theta)), key=np.mean)
        lines.append(
            f"(b) {theta:3d} deg: straight push {straight.mean():.2f} (at most "
            f"{straight.max():.2f}), route {route.mean():.2f} (at least {route.min():.2f}), "
            f"ratio {straight.max() / route.min():.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(report(*(int(arg) for arg in sys.argv[1:])))

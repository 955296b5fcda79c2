"""The built-in rooms world: ``point``'s mass in nine rooms, where data coverage decides.

``point``'s mass (its inertia, drag and force: ``dt = 0.1``, ``force_scale = 2``,
``damping = 1``) moves in the arena ``[-5.5, 5.5]^2``. The lines ``x = +-2.5`` and
``y = +-2.5`` cut it into 3 x 3 rooms; every episode starts in the centre room, the start room
``[-2.5, 2.5]^2``. Each wall piece between two rooms has one doorway 0.5 wide; the arena's border
is solid. Walls are inelastic: a move that meets a wall outside a doorway stops at it, the
velocity component into it becomes zero and the one along it is kept (sliding). Collisions are
resolved at their time of impact, the limit of ever finer substeps (a move runs straight to the
first wall it meets, then slides on), so nothing passes through a wall at any speed. The env is
:class:`~udg.envs.point.PointEnv` with that motion: deterministic apart from the reset noise
(uniform in ``[-0.1, 0.1]^2``), observation ``(x, y, v_x, v_y)``, diversity features ``(x, y)``,
100-step episodes (``point``'s demo length, kept: nothing below needed another), reward the task
``rooms-angle-0``.

**The geometry, from the dynamics** (fixed before any offline run; do not change it to make a
method win). Under uniformly random actions the velocity is an AR(1) process (``v' = 0.9 v +
0.2 a``, ``Var a = 1/3``); over T steps the position diffuses with a standard deviation of about
``0.2 sqrt(T / 3)`` per axis, 1.15 after 100 steps. Pushing one way, the speed tends to
``force_scale / damping = 2``, so one step moves at most 0.2 along an axis (0.28 diagonally),
and 100 steps of full push from rest cover at most about 18 (the first ten steps accelerate).

- Start room half-side 2.5, about 2.2 standard deviations of the 100-step spread: a random walk
  then rarely reaches a wall, and more rarely a doorway on it (property a).
- Doorways of the start room, where no straight push from the start meets one. A push along
  ``theta`` (``a = (cos, sin)``) at the six angles 0, 60, ..., 300 degrees meets the east or west
  wall at ``y = 0`` (0 and 180 degrees) or the north or south wall at ``|x| = 2.5 / tan 60 =
  1.44`` and slides to the nearest corner (the others). So the north and south doorways are
  centred (``|x| <= 0.25``, about 1 clear of the slides), and the east and west ones sit off
  centre in a half-turn pinwheel, halfway between the point the pushes at 0 and 180 degrees
  meet (``y = 0``) and the corner the slides stop in: east at ``y in [1.0, 1.5]``, west at
  ``y in [-1.5, -1.0]``, 1.0 of solid wall from ``y = 0`` and from the corner. The world is
  symmetric under a half turn, so the tasks at ``theta`` and ``theta + 180`` are alike.
- Doorways of the start room open into the middle of the next room, away from its walls: a
  point just through the east doorway is 1.0 (five steps at top speed) from the wall between
  the east and north-east rooms, one through the north doorway 2.25 from the nearest such
  wall. The rare random walk that leaves (at most 1 %) has spent its luck on the doorway and
  does not go on to meet the next room's walls (property c). (Doorways flush with the corner
  would leak less, but open right beside the next room's wall.)
- Doorway width 0.5, two and a half steps at top speed: a route need not thread a needle.
- Arena half-side 5.5. The direction task's return telescopes to the displacement along
  ``theta``. A straight push ends at the start room's wall or corner: ``2.5`` at 0 degrees,
  ``2.5 (cos 60 + sin 60) = 3.42`` at 60; a route through the doorways ends at the arena's border
  or corner: ``5.5`` and ``7.51``. An arena of half-side ``2 x 2.5`` would make the ratio exactly
  one half at every angle; 0.5 more gives the margin, and the control cost (0.01 a step, 1 per
  episode of full push) lowers the straight push's share further (property b).
- The walls between outer rooms each have a doorway in their middle, so every outer room is
  reachable from its neighbours; the route at 60 degrees (start, north doorway, the doorway at
  ``(2.5, 4)``, the north-east corner) is about 9 long, half of the 18 that 100 steps of full
  push cover from rest.

**Measured** with the batched step the env takes (``python tests/test_rooms.py [episodes]
[seed]`` prints these; ``tests/test_rooms.py`` asserts each at 2000 episodes, seed 0):

- (a) Uniformly random actions keep 99.20 % of 2000 100-step episodes in the start room (99.14
  and 99.29 % of 8000 at seeds 1 and 2; 99.22 % of 40 000 at seeds 1-5). The margin under the
  1 % allowed is small: the same layout with a start room of half-side 2.25 (arena 5, doorways
  scaled alike) let 1.5 % of 8000 episodes out.
- (b) Straight push / best route through the doorways, mean over 16 resets, ratio of the best
  push to the worst route: 0 and 180 degrees 1.5 / 4.5 (ratio 0.36), 60, 120, 240, 300
  degrees 2.4 / 6.6 (0.38-0.39). No push leaves the start room; every route ends in an outer
  room. Both returns include the control cost (1 per episode for the push).
- (c) "A wall appears in the data" means a transition stopped by it. A random state inside the
  start room can only meet the start room's walls; of those outside it (251 of 202 000 in the
  2000 episodes) none comes within 0.2 (a step at top speed) of any other wall: the nearest is
  0.77 away. Over 40 000 episodes (seeds 1-5) no transition was stopped by a wall beyond the
  start room, and one episode came within 0.2 of one (0.18).

The ``rooms`` presets start from ``point``'s values, with K = 8 agents (one per outer room).
The geometry above was fixed before the first offline run (``results/demo/RUN.md``) and has not
changed since.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np

from udg.envs.point import PointEnv

ARENA_HALF = 5.5
"""The arena is ``[-ARENA_HALF, ARENA_HALF]^2``; its border is solid."""
START_HALF = 2.5
"""The start room is ``[-START_HALF, START_HALF]^2``; the inner walls lie on its sides' lines."""
DOOR_WIDTH = 0.5
"""Width of every doorway."""
SIDE_DOOR_CENTRE = START_HALF / 2
"""The east doorway is centred at ``y = SIDE_DOOR_CENTRE``, the west one at minus that."""
CTRL_COST = 0.01
"""Control cost of every rooms task and of the env's own reward (see :mod:`udg.envs.tasks`)."""
START_ROOM = 4
"""The index :func:`room_of` gives the start room."""
_EPS = 1e-6
"""How far short of a wall a blocked motion stops (so the point is never on a wall)."""

Segment = tuple[tuple[float, float], tuple[float, float]]


def _line_with_gaps(lo: float, hi: float, gaps: list[tuple[float, float]]):
    """The solid pieces ``[(a, b), ...]`` of ``[lo, hi]`` once the ``gaps`` are cut out."""
    pieces, start = [], lo
    for a, b in sorted(gaps):
        pieces.append((start, a))
        start = b
    return [*pieces, (start, hi)]


def make_walls(
    start_half: float = START_HALF,
    arena_half: float = ARENA_HALF,
    door: float = DOOR_WIDTH,
    side_door: float = SIDE_DOOR_CENTRE,
) -> list[Segment]:
    """The wall segments of a rooms geometry, each ``((x0, y0), (x1, y1))``, axis-aligned.

    The lines ``x = +-start_half`` and ``y = +-start_half`` run across the arena and cut it into
    3 x 3 rooms. The start room's north and south doorways are centred; its east doorway is
    centred at ``y = side_door`` and its west one at ``y = -side_door`` (the geometry is
    symmetric under a half turn). Each wall between two outer rooms has a doorway in its
    middle; the arena's border has none.
    """
    s, h, half = start_half, arena_half, door / 2
    mid = (s + h) / 2  # the middle of a wall between two outer rooms
    outer = [(-mid - half, -mid + half), (mid - half, mid + half)]
    east = (side_door - half, side_door + half)
    west = (-side_door - half, -side_door + half)
    centred = (-half, half)
    # Zero-width cuts at the corners end each piece where it meets another wall, so that every
    # piece lies between one pair of rooms.
    corners = [(-s, -s), (s, s)]
    segments: list[Segment] = []
    for c, side in ((s, east), (-s, west)):  # the lines x = c
        pieces = _line_with_gaps(-h, h, [side, *outer, *corners])
        segments += [((c, a), (c, b)) for a, b in pieces]
    for c in (s, -s):  # the lines y = c
        pieces = _line_with_gaps(-h, h, [centred, *outer, *corners])
        segments += [((a, c), (b, c)) for a, b in pieces]
    border = [((h, -h), (h, h)), ((-h, -h), (-h, h)), ((-h, h), (h, h)), ((-h, -h), (h, -h))]
    return segments + border


class Walls(NamedTuple):
    """Wall segments as arrays, split by the axis they block: ``crossing[k]`` holds the walls on
    lines ``coordinate k = c`` as ``[W, 3]`` rows ``(c, lo, hi)`` (their extent along the other
    coordinate)."""

    crossing: tuple[np.ndarray, np.ndarray]
    lines: tuple[np.ndarray, np.ndarray]
    """The distinct ``c`` of ``crossing[k]`` (a cheap first test of whether a move can hit)."""

    @classmethod
    def from_segments(cls, segments: list[Segment]) -> Walls:
        rows: tuple[list, list] = ([], [])
        for (x0, y0), (x1, y1) in segments:
            if x0 == x1:
                rows[0].append((x0, min(y0, y1), max(y0, y1)))
            elif y0 == y1:
                rows[1].append((y0, min(x0, x1), max(x0, x1)))
            else:
                raise ValueError(f"wall {((x0, y0), (x1, y1))} is not axis-aligned")
        crossing = (np.array(rows[0]).reshape(-1, 3), np.array(rows[1]).reshape(-1, 3))
        return cls(crossing, (np.unique(crossing[0][:, 0]), np.unique(crossing[1][:, 0])))


WALLS = Walls.from_segments(make_walls())


def wall_segments() -> list[Segment]:
    """The rooms world's walls as segments ``((x0, y0), (x1, y1))`` (for drawing them)."""
    return make_walls()


def _reaches_a_line(p: np.ndarray, d: np.ndarray, walls: Walls) -> bool:
    """Whether any move ``p -> p + d`` (``[N, 2]``) reaches the line of any wall."""
    for axis in (0, 1):
        a, b = p[:, axis, None], p[:, axis, None] + d[:, axis, None]
        c = walls.lines[axis]
        if np.any((np.minimum(a, b) <= c) & (c <= np.maximum(a, b))):
            return True
    return False


def _first_hit(p: np.ndarray, d: np.ndarray, walls: Walls):
    """Where the moves ``p -> p + d`` (``[N, 2]``) first meet a wall.

    Returns the fraction of the move made before the first hit on each axis's walls
    (``[N, 2]``, ``inf`` where none) and the line hit (``[N, 2]``).
    """
    fracs, lines = np.full(p.shape, np.inf), np.zeros(p.shape)
    for axis in (0, 1):
        w = walls.crossing[axis]  # [W, 3]
        if not len(w):
            continue
        s0 = p[:, axis, None] - w[None, :, 0]  # [N, W] signed distance to each wall's line
        dk = d[:, axis, None]
        toward = (s0 * dk <= 0) & (dk != 0) & (np.abs(s0) <= np.abs(dk))
        frac = np.where(toward, -s0 / np.where(dk == 0, 1.0, dk), np.inf)
        along = p[:, 1 - axis, None] + np.where(toward, frac, 0.0) * d[:, 1 - axis, None]
        hit = toward & (w[None, :, 1] <= along) & (along <= w[None, :, 2])
        frac = np.where(hit, frac, np.inf)
        first = np.argmin(frac, axis=1)  # [N]
        fracs[:, axis] = frac[np.arange(len(p)), first]
        lines[:, axis] = w[first, 0]
    return fracs, lines


def move(
    position: np.ndarray, velocity: np.ndarray, dt: float, walls: Walls = WALLS
) -> tuple[np.ndarray, np.ndarray]:
    """Move points at ``position`` with ``velocity`` (``[N, 2]`` each) for ``dt`` among ``walls``.

    Collisions are resolved at their time of impact, the limit of ever finer substeps: a move
    runs straight to the first wall it meets, stops :data:`_EPS` short of it, zeroes the
    velocity component into it and spends the rest of the step sliding with the other
    component. A move meets at most two walls (one per axis; after both the velocity is zero),
    so two rounds resolve a step exactly, whatever the speed. Returns the new positions and
    velocities.
    """
    p, v = np.array(position, dtype=np.float64), np.array(velocity, dtype=np.float64)
    rows = np.arange(len(p))
    left = np.full(len(p), float(dt))  # [N] time left in this step
    for _ in range(2):
        d = v * left[:, None]
        if not _reaches_a_line(p, d, walls):  # the common case: nothing in the way
            return p + d, v
        fracs, lines = _first_hit(p, d, walls)
        first = np.argmin(fracs, axis=1)  # [N] the axis hit first
        frac = fracs[rows, first]
        hit = np.isfinite(frac)
        if not hit.any():  # every move passes its lines through doorways
            return p + d, v
        step = np.where(hit, frac, 1.0)
        p = p + step[:, None] * d
        for axis in (0, 1):
            # Both axes hit at once (a corner) stop together.
            stop = hit & (fracs[:, axis] <= frac)
            back = _EPS * np.sign(d[:, axis])
            p[:, axis] = np.where(stop, lines[:, axis] - back, p[:, axis])
            v[:, axis] = np.where(stop, 0.0, v[:, axis])
        left = np.where(hit, left * (1.0 - step), 0.0)
    return p, v


def rooms_step(
    position: np.ndarray,
    velocity: np.ndarray,
    action: np.ndarray,
    dt: float = 0.1,
    force_scale: float = 2.0,
    damping: float = 1.0,
    walls: Walls = WALLS,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of many rooms points at once (``[N, 2]`` each): ``point``'s velocity update,
    then :func:`move` through the walls. :class:`RoomsEnv` steps with it (``N = 1``) when a
    move reaches a wall's line, and with the same operations on Python floats otherwise."""
    force = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    velocity = (1.0 - damping * dt) * np.asarray(velocity) + dt * force_scale * force
    return move(position, velocity, dt, walls)


def room_of(x, y) -> np.ndarray:
    """The room of each point: ``0..8`` row-major from the south-west; :data:`START_ROOM` is 4."""
    col = np.digitize(x, [-START_HALF, START_HALF])
    row = np.digitize(y, [-START_HALF, START_HALF])
    return np.asarray(3 * row + col)


class RoomsEnv(PointEnv):
    """``point``'s mass in nine rooms with doorways; see the module docstring."""

    view_half_size = ARENA_HALF

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        bound = np.array([ARENA_HALF, ARENA_HALF, np.inf, np.inf])
        self.observation_space = gym.spaces.Box(-bound, bound, dtype=np.float64)

    def walls(self) -> list[Segment]:
        a = ARENA_HALF
        border = [((-a, -a), (a, -a)), ((a, -a), (a, a)), ((a, a), (-a, a)), ((-a, a), (-a, -a))]
        return wall_segments() + border

    def step(self, action):
        before = self._position
        # rooms_step for one point, in Python floats: its operations in its order (so the same
        # numbers) until a move reaches a wall's line; from there rooms_step itself. Most steps
        # meet no line, and NumPy's per-call cost on 2-vectors was most of a step's time.
        fx, fy = (min(max(float(a), -1.0), 1.0) for a in np.asarray(action).reshape(2))
        keep, push = 1.0 - self.damping * self.dt, self.dt * self.force_scale
        vx, vy = (
            keep * float(self._velocity[0]) + push * fx,
            keep * float(self._velocity[1]) + push * fy,
        )
        px, py = float(before[0]), float(before[1])
        dx, dy = vx * self.dt, vy * self.dt
        if _meets_a_line(px, dx, _LINES[0]) or _meets_a_line(py, dy, _LINES[1]):
            position, velocity = rooms_step(
                before[None],
                self._velocity[None],
                np.asarray(action)[None],
                self.dt,
                self.force_scale,
                self.damping,
            )
            self._position, self._velocity = position[0], velocity[0]
        else:
            self._position, self._velocity = np.array([px + dx, py + dy]), np.array([vx, vy])
        # The default reward is the task rooms-angle-0, so a plain rollout is meaningful.
        cost = CTRL_COST * (fx * fx + fy * fy)
        reward = float(self._position[0]) - px - cost
        return self._obs(), reward, False, False, self._info()


def _meets_a_line(a: float, d: float, lines: tuple[float, ...]) -> bool:
    """Whether the move ``a -> a + d`` along one axis reaches any of ``lines`` (the test of
    :func:`_reaches_a_line` for one point)."""
    lo, hi = min(a, a + d), max(a, a + d)
    return any(lo <= c <= hi for c in lines)


_LINES = tuple(tuple(float(c) for c in lines) for lines in WALLS.lines)
"""Each axis's wall lines (:attr:`Walls.lines` of :data:`WALLS`) as Python floats."""

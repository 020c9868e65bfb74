"""Grid families for training and evaluating one maze model on every grid up to a frame.

Pure python and seeded: every generator takes a ``random.Random`` and returns a grid of
strings (``#`` wall, ``.`` open, ``S`` start, ``G`` goal, see :mod:`workers.kits.maze`) whose
S and G are open and connected.

Families:

- ``perfect``: a perfect maze (one path between any two cells); square odd sides keep the
  full wall ring of :func:`maze.generate`, other shapes are cut from a larger one, so a side
  may have no ring;
- ``loops``: a perfect maze with a share (0.1-0.5) of its inner walls knocked out;
- ``random``: every cell a wall with probability ``density`` (0.1-0.4), no ring;
- ``rooms``: rooms and corridors by recursive division (walls with one door each), with or
  without a ring.

Sizes: rows and columns are drawn independently (``lo..hi``); S and G anywhere open and
connected, half of the time far apart. The label of a grid is :func:`maze.canonical_path`,
a deterministic function of the grid itself (computed after any transform), so a family
with many shortest paths still has one target per input.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tinyfleet_core.errors import InputError
from workers.kits import maze

__all__ = ["FAMILIES", "DENSITIES", "generate_family", "mixture", "place_endpoints", "transform"]

FAMILIES = ("perfect", "loops", "random", "rooms")
DENSITIES = (0.1, 0.2, 0.3, 0.4)
_WEIGHTS = {"perfect": 0.3, "loops": 0.2, "random": 0.3, "rooms": 0.2}
Cell = tuple[int, int]


def _carve(h: int, w: int, rng: random.Random, loops: float) -> list[list[str]]:
    """A perfect maze on an odd h x w grid with a wall ring (rooms on odd coordinates);
    ``loops`` knocks out that share of the inner walls between two rooms."""
    cells = [["#"] * w for _ in range(h)]
    rooms = [(r, c) for r in range(1, h - 1, 2) for c in range(1, w - 1, 2)]
    start = rng.choice(rooms)
    cells[start[0]][start[1]] = "."
    stack, seen = [start], {start}
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
            if 0 < r + dr < h - 1 and 0 < c + dc < w - 1 and (r + dr, c + dc) not in seen
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = rng.choice(options)
        cells[(r + nr) // 2][(c + nc) // 2] = cells[nr][nc] = "."
        seen.add((nr, nc))
        stack.append((nr, nc))
    if loops > 0:
        inner = [(r, c) for r in range(1, h - 1) for c in range(1, w - 1) if cells[r][c] == "#" and r % 2 != c % 2]
        for r, c in rng.sample(inner, int(len(inner) * loops)):
            cells[r][c] = "."
    return cells


def _maze_grid(rows: int, cols: int, rng: random.Random, loops: float) -> list[str]:
    """A (looped) maze of exactly rows x cols: carved on the next odd sizes, then a row or
    column cut off an even side (that side then has no ring)."""
    h, w = rows | 1, cols | 1
    cells = _carve(h, w, rng, loops)
    if h != rows:
        cells = cells[1:] if rng.random() < 0.5 else cells[:-1]
    if w != cols:
        cut = rng.random() < 0.5
        cells = [row[1:] if cut else row[:-1] for row in cells]
    return ["".join(row) for row in cells]


def _random_grid(rows: int, cols: int, rng: random.Random, density: float) -> list[str]:
    return ["".join("#" if rng.random() < density else "." for _ in range(cols)) for _ in range(rows)]


def _rooms_grid(rows: int, cols: int, rng: random.Random) -> list[str]:
    """Rooms and corridors: recursive division of an open area by walls with one door each;
    a wall ring around it half of the time."""
    ring = rng.random() < 0.5 and rows >= 5 and cols >= 5
    cells = [["." for _ in range(cols)] for _ in range(rows)]
    if ring:
        for r in range(rows):
            cells[r][0] = cells[r][-1] = "#"
        cells[0] = ["#"] * cols
        cells[-1] = ["#"] * cols
    lo_r, lo_c, hi_r, hi_c = (1, 1, rows - 2, cols - 2) if ring else (0, 0, rows - 1, cols - 1)
    stack = [(lo_r, lo_c, hi_r, hi_c)]
    while stack:
        r0, c0, r1, c1 = stack.pop()
        hh, ww = r1 - r0 + 1, c1 - c0 + 1
        if hh < 3 and ww < 3 or (hh * ww <= 12 and rng.random() < 0.5):
            continue
        horizontal = hh > ww if hh != ww else rng.random() < 0.5
        if horizontal and hh >= 3:
            wr = rng.randint(r0 + 1, r1 - 1)
            doors = {rng.randint(c0, c1)}
            if ww >= 6 and rng.random() < 0.3:
                doors.add(rng.randint(c0, c1))
            for c in range(c0, c1 + 1):
                # a wall never blocks a door of the wall it meets
                if c not in doors and not _is_door(cells, wr, c, rows, cols, vertical=False):
                    cells[wr][c] = "#"
            stack += [(r0, c0, wr - 1, c1), (wr + 1, c0, r1, c1)]
        elif ww >= 3:
            wc = rng.randint(c0 + 1, c1 - 1)
            doors = {rng.randint(r0, r1)}
            if hh >= 6 and rng.random() < 0.3:
                doors.add(rng.randint(r0, r1))
            for r in range(r0, r1 + 1):
                if r not in doors and not _is_door(cells, r, wc, rows, cols, vertical=True):
                    cells[r][wc] = "#"
            stack += [(r0, c0, r1, wc - 1), (r0, wc + 1, r1, c1)]
    return ["".join(row) for row in cells]


def _is_door(cells: list[list[str]], r: int, c: int, rows: int, cols: int, *, vertical: bool) -> bool:
    """True when a new wall cell at (r, c) would close a door of a wall it runs into."""
    if vertical:
        ends = [(r - 1, c), (r + 1, c)]
        sides = [((r - 1, c - 1), (r - 1, c + 1)), ((r + 1, c - 1), (r + 1, c + 1))]
    else:
        ends = [(r, c - 1), (r, c + 1)]
        sides = [((r - 1, c - 1), (r + 1, c - 1)), ((r - 1, c + 1), (r + 1, c + 1))]
    for (er, ec), ((ar, ac), (br, bc)) in zip(ends, sides, strict=True):
        if not (0 <= er < rows and 0 <= ec < cols) or cells[er][ec] == "#":
            continue
        inside = all(0 <= x < rows and 0 <= y < cols for x, y in ((ar, ac), (br, bc)))
        if inside and cells[ar][ac] == "#" and cells[br][bc] == "#":
            return True  # (er, ec) is a gap in a wall perpendicular to ours
    return False


def place_endpoints(grid: Sequence[str], rng: random.Random, far: bool | None = None) -> list[str] | None:
    """``grid`` with S and G on two connected open cells (G far from S when ``far``,
    anywhere in S's region otherwise; ``None``: a coin flip); None when no open cell has
    an open neighbour region of two cells."""
    plain = [row.replace("S", ".").replace("G", ".") for row in grid]
    opens = [(r, c) for r, row in enumerate(plain) for c, ch in enumerate(row) if ch == "."]
    if len(opens) < 2:
        return None
    far = rng.random() < 0.5 if far is None else far
    for _ in range(8):
        s = rng.choice(opens)
        dist = maze.bfs_distances(plain, s)
        if len(dist) < 2:
            continue
        if far:
            top = max(dist.values())
            goals = [cell for cell, d in dist.items() if d >= max(1, (3 * top) // 4)]
        else:
            goals = [cell for cell, d in dist.items() if d >= 1]
        return maze.with_endpoints(plain, s, rng.choice(goals))
    return None


def transform(grid: Sequence[str], k: int) -> list[str]:
    """One of the 8 symmetries of the grid (``k`` in 0..7): bit 0 mirrors the columns,
    bit 1 mirrors the rows, bit 2 transposes (rows and columns swap)."""
    rows = [list(row) for row in grid]
    if k & 4:
        rows = [list(col) for col in zip(*rows, strict=True)]
    if k & 2:
        rows = rows[::-1]
    if k & 1:
        rows = [row[::-1] for row in rows]
    return ["".join(row) for row in rows]


def generate_family(
    family: str,
    rows: int,
    cols: int,
    rng: random.Random,
    *,
    density: float | None = None,
    loops: float | None = None,
) -> list[str]:
    """One rows x cols grid of ``family`` with S and G connected (retries until it has)."""
    if family not in FAMILIES:
        raise InputError(f"maze family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not (2 <= rows <= maze.MAX_SIDE and 2 <= cols <= maze.MAX_SIDE) or (family in ("perfect", "loops") and min(rows, cols) < 5):
        raise InputError(f"a {family} grid needs rows and cols in {5 if family in ('perfect', 'loops') else 2}..{maze.MAX_SIDE}, got {rows}x{cols}")
    for _ in range(100):
        if family == "perfect":
            grid = _maze_grid(rows, cols, rng, 0.0)
        elif family == "loops":
            grid = _maze_grid(rows, cols, rng, loops if loops is not None else rng.uniform(0.1, 0.5))
        elif family == "random":
            grid = _random_grid(rows, cols, rng, density if density is not None else rng.choice(DENSITIES))
        else:
            grid = _rooms_grid(rows, cols, rng)
        placed = place_endpoints(grid, rng)
        if placed is not None:
            return placed
    raise InputError(f"could not place connected S and G on a {rows}x{cols} {family} grid (density {density}); lower the density")


def mixture(rng: random.Random, lo: int = 5, hi: int = 15) -> tuple[str, list[str]]:
    """(family, grid): one item of the training mixture. Families by weight (perfect 0.3,
    loops 0.2, random 0.3, rooms 0.2); rows and cols drawn independently in lo..hi; square
    odd perfect mazes with a ring (the kit's mazes) a third of the perfect ones, up to
    ``hi + 2`` (a ring cropped off fits the frame); then a random symmetry."""
    family = rng.choices(FAMILIES, weights=[_WEIGHTS[f] for f in FAMILIES])[0]
    if family == "perfect" and rng.random() < 1 / 3:
        side = rng.randrange(max(lo, 5) | 1, hi + 3, 2)
        return family, transform(maze.generate(side, rng), rng.randrange(8))
    rows, cols = rng.randint(lo, hi), rng.randint(lo, hi)
    return family, transform(generate_family(family, rows, cols, rng), rng.randrange(8))

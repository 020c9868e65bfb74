"""Maze task kit: payload models, a seeded generator, BFS shortest paths, and the check that a
path is legal, connects S to G and is shortest.

A grid is a list of equal-length strings: ``#`` wall, ``.`` open, ``S`` start, ``G`` goal.
Moves are up, down, left, right. A path is a list of ``[row, col]`` from S to G inclusive.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from tinyfleet_core.errors import InputError

__all__ = [
    "MazeInput",
    "MazeOutput",
    "find_cell",
    "bfs_path",
    "canonical_path",
    "bfs_distances",
    "check_path",
    "generate",
    "with_endpoints",
    "MAX_SIDE",
]

MAX_SIDE = 128
_CHARS = set("#.SG")
Cell = tuple[int, int]


def _validate_grid(grid: list[str]) -> list[str]:
    if not grid:
        raise InputError("maze grid is empty; give a list of rows like ['S.#', '..G']")
    width = len(grid[0])
    if not 2 <= max(len(grid), width) or len(grid) > MAX_SIDE or width > MAX_SIDE or width == 0:
        raise InputError(f"maze grid must be between 1x2 and {MAX_SIDE}x{MAX_SIDE}; got {len(grid)}x{width}")
    starts = goals = 0
    for r, row in enumerate(grid):
        if not isinstance(row, str):
            raise InputError(f"maze row {r} is {type(row).__name__}; rows must be strings")
        if len(row) != width:
            raise InputError(f"maze row {r} has {len(row)} cells but row 0 has {width}; rows must be equal length")
        bad = set(row) - _CHARS
        if bad:
            raise InputError(f"maze row {r} holds {sorted(bad)!r}; use only '#', '.', 'S', 'G'")
        starts += row.count("S")
        goals += row.count("G")
    if starts != 1 or goals != 1:
        raise InputError(f"maze needs exactly one 'S' and one 'G'; found {starts} S and {goals} G")
    return grid


class MazeInput(BaseModel):
    """``{"grid": ["#.S..", ...]}``."""

    model_config = ConfigDict(extra="forbid")
    grid: list[str]

    @field_validator("grid")
    @classmethod
    def _check(cls, v: list[str]) -> list[str]:
        return _validate_grid(v)


class MazeOutput(BaseModel):
    """``{"path": [[row, col], ...]}`` from S to G inclusive."""

    model_config = ConfigDict(extra="forbid")
    path: list[tuple[int, int]]


def find_cell(grid: Sequence[str], ch: str) -> Cell:
    for r, row in enumerate(grid):
        c = row.find(ch)
        if c >= 0:
            return (r, c)
    raise InputError(f"maze has no {ch!r}")


def _neighbours(grid: Sequence[str], cell: Cell) -> list[Cell]:
    r, c = cell
    h, w = len(grid), len(grid[0])
    out = []
    for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
        if 0 <= nr < h and 0 <= nc < w and grid[nr][nc] != "#":
            out.append((nr, nc))
    return out


def bfs_distances(grid: Sequence[str], source: Cell) -> dict[Cell, int]:
    dist = {source: 0}
    queue = deque([source])
    while queue:
        cell = queue.popleft()
        for nb in _neighbours(grid, cell):
            if nb not in dist:
                dist[nb] = dist[cell] + 1
                queue.append(nb)
    return dist


def bfs_path(grid: Sequence[str]) -> list[Cell]:
    """A shortest path S -> G. Raises InputError when G cannot be reached."""
    start, goal = find_cell(grid, "S"), find_cell(grid, "G")
    prev: dict[Cell, Cell | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for nb in _neighbours(grid, cell):
            if nb not in prev:
                prev[nb] = cell
                queue.append(nb)
    if goal not in prev:
        raise InputError("maze has no path from S to G: walls separate them")
    path = [goal]
    while (p := prev[path[-1]]) is not None:
        path.append(p)
    return path[::-1]


def canonical_path(grid: Sequence[str]) -> list[Cell]:
    """The one shortest S -> G path a model is trained to mark, a function of the grid alone:
    from S, every move goes to the first neighbour, in the order up, down, left, right, that
    is one move closer to G. (A perfect maze has one shortest path, so it is that one.)
    Raises InputError when G cannot be reached."""
    start, goal = find_cell(grid, "S"), find_cell(grid, "G")
    to_goal = bfs_distances(grid, goal)
    if start not in to_goal:
        raise InputError("maze has no path from S to G: walls separate them")
    path = [start]
    while path[-1] != goal:
        here = to_goal[path[-1]]
        path.append(next(nb for nb in _neighbours(grid, path[-1]) if to_goal.get(nb) == here - 1))
    return path


def check_path(grid: Sequence[str], path: Sequence[Sequence[int]], shortest: int | None = None) -> str | None:
    """None when ``path`` is a legal shortest S -> G path, else the first problem found."""
    if not path:
        return "path is empty"
    h, w = len(grid), len(grid[0])
    cells: list[Cell] = []
    for k, p in enumerate(path):
        if len(p) != 2:
            return f"path entry {k} is {list(p)!r}, not [row, col]"
        r, c = int(p[0]), int(p[1])
        if not (0 <= r < h and 0 <= c < w):
            return f"path entry {k} ({r},{c}) is outside the {h}x{w} grid"
        if grid[r][c] == "#":
            return f"path entry {k} ({r},{c}) is a wall"
        cells.append((r, c))
    if cells[0] != find_cell(grid, "S"):
        return f"path starts at {cells[0]}, not at S {find_cell(grid, 'S')}"
    if cells[-1] != find_cell(grid, "G"):
        return f"path ends at {cells[-1]}, not at G {find_cell(grid, 'G')}"
    for k in range(1, len(cells)):
        (r0, c0), (r1, c1) = cells[k - 1], cells[k]
        if abs(r0 - r1) + abs(c0 - c1) != 1:
            return f"path jumps from {cells[k - 1]} to {cells[k]} at entry {k}"
    best = shortest if shortest is not None else len(bfs_path(grid)) - 1
    if len(cells) - 1 != best:
        return f"path takes {len(cells) - 1} moves; the shortest takes {best}"
    return None


def generate(
    size: int,
    rng: random.Random,
    *,
    loops: float = 0.0,
    min_distance: int | None = None,
) -> list[str]:
    """A maze on a ``size`` x ``size`` grid (odd sizes give a full border).

    ``loops`` in [0, 1] knocks out that share of the remaining inner walls (0 = a perfect
    maze, where the shortest path is unique); ``min_distance`` keeps S and G that many moves
    apart (default about half the side)."""
    if not 5 <= size <= MAX_SIDE:
        raise InputError(f"maze size must be 5..{MAX_SIDE}, got {size}")
    if not 0.0 <= loops <= 1.0:
        raise InputError(f"loops must be in [0, 1], got {loops}")
    h = w = size
    cells = [["#"] * w for _ in range(h)]
    rooms = [(r, c) for r in range(1, h - 1, 2) for c in range(1, w - 1, 2)]
    start = rng.choice(rooms)
    cells[start[0]][start[1]] = "."
    stack = [start]
    seen = {start}
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc, r + dr // 2, c + dc // 2)
            for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
            if 0 < r + dr < h - 1 and 0 < c + dc < w - 1 and (r + dr, c + dc) not in seen
        ]
        if not options:
            stack.pop()
            continue
        nr, nc, wr, wc = rng.choice(options)
        cells[wr][wc] = cells[nr][nc] = "."
        seen.add((nr, nc))
        stack.append((nr, nc))
    if loops > 0:
        inner = [
            (r, c)
            for r in range(1, h - 1)
            for c in range(1, w - 1)
            if cells[r][c] == "#" and (r % 2) != (c % 2)
        ]
        for r, c in rng.sample(inner, int(len(inner) * loops)):
            cells[r][c] = "."
    grid = ["".join(row) for row in cells]
    want = min_distance if min_distance is not None else max(2, size // 2)
    dist_from = bfs_distances(grid, rng.choice(rooms))
    far = [cell for cell, d in dist_from.items() if d >= 1]
    for _ in range(64):
        s = rng.choice(far)
        dists = bfs_distances(grid, s)
        goals = [cell for cell, d in dists.items() if d >= want]
        if goals:
            return with_endpoints(grid, s, rng.choice(goals))
    s = rng.choice(far)
    dists = bfs_distances(grid, s)
    g = max(dists, key=lambda k: dists[k])
    return with_endpoints(grid, s, g)


def with_endpoints(grid: Sequence[str], start: Cell, goal: Cell) -> list[str]:
    """A copy of ``grid`` with S and G (re)placed at ``start`` and ``goal``."""
    rows = [list(row.replace("S", ".").replace("G", ".")) for row in grid]
    for (r, c), ch in ((start, "S"), (goal, "G")):
        if not (0 <= r < len(rows) and 0 <= c < len(rows[0])):
            raise InputError(f"cell ({r},{c}) is outside the {len(rows)}x{len(rows[0])} grid")
        if rows[r][c] == "#":
            raise InputError(f"cell ({r},{c}) is a wall; stops must be on open cells")
        rows[r][c] = ch
    if start == goal:
        raise InputError(f"start and goal are the same cell {start}")
    return ["".join(row) for row in rows]

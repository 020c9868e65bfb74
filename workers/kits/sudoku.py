"""Sudoku task kit: payload models, text parse/format, a seeded generator of puzzles with a
unique solution, an exact solver, constraint propagation, augmentations, and the rules check.

Sizes: 4 (2x2 boxes), 6 (2 rows x 3 columns boxes), 9 (3x3 boxes). Grids are lists of rows;
0 is a blank. Internally a grid is a flat list of ``n*n`` ints and candidates are bitmasks
(bit ``d`` set = digit ``d`` allowed).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel, ConfigDict, field_validator

from tinyfleet_core.errors import InputError

__all__ = [
    "SIZES",
    "SudokuInput",
    "SudokuOutput",
    "Geometry",
    "geometry",
    "box_shape",
    "check_solution",
    "count_solutions",
    "solve_exact",
    "propagate",
    "generate",
    "Transform",
    "random_transform",
    "parse_text",
    "format_grid",
]

SIZES = (4, 6, 9)
_BOX = {4: (2, 2), 6: (2, 3), 9: (3, 3)}

Grid = list[list[int]]


@dataclass(frozen=True)
class Geometry:
    """Static facts of an n x n board: box shape, and for each cell its row/col/box index."""

    n: int
    box_rows: int
    box_cols: int
    row_of: tuple[int, ...]
    col_of: tuple[int, ...]
    box_of: tuple[int, ...]
    units: tuple[tuple[int, ...], ...]  # rows, then columns, then boxes

    @property
    def full(self) -> int:
        return ((1 << self.n) - 1) << 1  # bits 1..n


def box_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of one box of an n x n sudoku."""
    if n not in _BOX:
        raise InputError(f"sudoku size must be one of {SIZES}, got {n}x{n}")
    return _BOX[n]


@cache
def geometry(n: int) -> Geometry:
    if n not in _BOX:
        raise InputError(f"sudoku size must be one of {SIZES}, got {n}x{n}")
    br, bc = _BOX[n]
    cells = range(n * n)
    row_of = tuple(i // n for i in cells)
    col_of = tuple(i % n for i in cells)
    box_of = tuple((row_of[i] // br) * (n // bc) + col_of[i] // bc for i in cells)
    rows = tuple(tuple(r * n + c for c in range(n)) for r in range(n))
    cols = tuple(tuple(r * n + c for r in range(n)) for c in range(n))
    boxes = tuple(tuple(i for i in cells if box_of[i] == b) for b in range(n))
    return Geometry(n, br, bc, row_of, col_of, box_of, rows + cols + boxes)


def _validate_grid(grid: Grid, *, allow_blank: bool, what: str) -> Grid:
    n = len(grid)
    if n not in _BOX:
        raise InputError(f"{what} must be n x n with n in {SIZES}; it has {n} rows")
    for r, row in enumerate(grid):
        if len(row) != n:
            raise InputError(f"{what} row {r} has {len(row)} cells; every row needs {n}")
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"{what} cell ({r},{c}) is {v!r}; cells must be integers")
            lo = 0 if allow_blank else 1
            if not lo <= v <= n:
                raise InputError(f"{what} cell ({r},{c}) is {v}; values must be {lo}..{n}")
    geo = geometry(n)
    flat = [v for row in grid for v in row]
    for unit in geo.units:
        seen: dict[int, int] = {}
        for i in unit:
            v = flat[i]
            if v and v in seen:
                j = seen[v]
                raise InputError(
                    f"{what} repeats {v} at ({j // n},{j % n}) and ({i // n},{i % n}) in one row, column or box"
                )
            seen[v] = i
    return grid


class SudokuInput(BaseModel):
    """``{"puzzle": [[int]]}``: n x n, n in {4, 6, 9}, 0 = blank."""

    model_config = ConfigDict(extra="forbid")
    puzzle: list[list[int]]

    @field_validator("puzzle")
    @classmethod
    def _check(cls, v: Grid) -> Grid:
        return _validate_grid(v, allow_blank=True, what="puzzle")


class SudokuOutput(BaseModel):
    """``{"solution": [[int]]}``: a completed grid."""

    model_config = ConfigDict(extra="forbid")
    solution: list[list[int]]

    @field_validator("solution")
    @classmethod
    def _check(cls, v: Grid) -> Grid:
        n = len(v)
        if n not in _BOX or any(len(row) != n for row in v):
            raise InputError(f"solution must be n x n with n in {SIZES}")
        return v


def _flat(grid: Grid) -> list[int]:
    return [v for row in grid for v in row]


def _grid(flat: Sequence[int], n: int) -> Grid:
    return [list(flat[r * n : (r + 1) * n]) for r in range(n)]


def check_solution(puzzle: Grid, solution: Grid) -> str | None:
    """None when ``solution`` completes ``puzzle`` legally, else the first problem found."""
    n = len(puzzle)
    if len(solution) != n or any(len(row) != n for row in solution):
        return f"solution is not {n}x{n}"
    geo = geometry(n)
    p, s = _flat(puzzle), _flat(solution)
    for i, (given, v) in enumerate(zip(p, s, strict=True)):
        if not isinstance(v, int) or not 1 <= v <= n:
            return f"cell ({i // n},{i % n}) holds {v!r}, not a digit 1..{n}"
        if given and given != v:
            return f"cell ({i // n},{i % n}) changes the given {given} to {v}"
    for k, unit in enumerate(geo.units):
        if len({s[i] for i in unit}) != n:
            kind = ("row", "column", "box")[k // n]
            return f"{kind} {k % n} repeats a digit"
    return None


def _masks(flat: list[int], geo: Geometry) -> tuple[list[int], list[int], list[int]] | None:
    n = geo.n
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(flat):
        if v:
            bit = 1 << v
            r, c, b = geo.row_of[i], geo.col_of[i], geo.box_of[i]
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return None
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    return rows, cols, boxes


def _search(flat: list[int], geo: Geometry, limit: int, found: list[list[int]]) -> int:
    masks = _masks(flat, geo)
    if masks is None:
        return 0
    rows, cols, boxes = masks
    full, row_of, col_of, box_of = geo.full, geo.row_of, geo.col_of, geo.box_of
    size = len(flat)

    def rec() -> int:
        best, best_mask, best_count = -1, 0, 99
        for i in range(size):
            if flat[i] == 0:
                m = full & ~(rows[row_of[i]] | cols[col_of[i]] | boxes[box_of[i]])
                cnt = m.bit_count()
                if cnt < best_count:
                    best, best_mask, best_count = i, m, cnt
                    if cnt <= 1:
                        break
        if best < 0:
            found.append(flat.copy())
            return 1
        if best_count == 0:
            return 0
        r, c, b = row_of[best], col_of[best], box_of[best]
        total = 0
        m = best_mask
        while m:
            bit = m & -m
            m ^= bit
            flat[best] = bit.bit_length() - 1
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            total += rec()
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            flat[best] = 0
            if total >= limit:
                break
        return total

    return rec()


def count_solutions(puzzle: Grid, limit: int = 2) -> int:
    """Number of solutions, counting no further than ``limit``."""
    geo = geometry(len(puzzle))
    return _search(_flat(puzzle), geo, limit, [])


def solve_exact(puzzle: Grid) -> Grid:
    """The (first) solution by depth-first search with fewest-candidates-first.

    Raises InputError when the puzzle has no solution."""
    geo = geometry(len(puzzle))
    found: list[list[int]] = []
    if _search(_flat(puzzle), geo, 1, found) == 0:
        raise InputError("puzzle has no solution: its givens contradict each other")
    return _grid(found[0], geo.n)


def propagate(puzzle: Grid) -> tuple[Grid, int]:
    """Fill naked and hidden singles until nothing changes.

    Returns (grid, blanks left); 0 blanks means solved. -1 blanks means a contradiction."""
    geo = geometry(len(puzzle))
    n, full = geo.n, geo.full
    flat = _flat(puzzle)
    masks = _masks(flat, geo)
    if masks is None:
        return puzzle, -1
    rows, cols, boxes = masks

    def place(i: int, d: int) -> None:
        bit = 1 << d
        flat[i] = d
        rows[geo.row_of[i]] |= bit
        cols[geo.col_of[i]] |= bit
        boxes[geo.box_of[i]] |= bit

    changed = True
    while changed:
        changed = False
        cand = [0] * (n * n)
        for i in range(n * n):
            if flat[i] == 0:
                m = full & ~(rows[geo.row_of[i]] | cols[geo.col_of[i]] | boxes[geo.box_of[i]])
                if m == 0:
                    return _grid(flat, n), -1
                if m & (m - 1) == 0:
                    place(i, m.bit_length() - 1)
                    changed = True
                else:
                    cand[i] = m
        if changed:
            continue
        for unit in geo.units:
            for d in range(1, n + 1):
                bit = 1 << d
                where = [i for i in unit if cand[i] & bit and flat[i] == 0]
                if len(where) == 1 and not any(flat[i] == d for i in unit):
                    place(where[0], d)
                    changed = True
    blanks = flat.count(0)
    return _grid(flat, n), blanks


def _base_solution(n: int) -> Grid:
    br, bc = _BOX[n]
    return [[(bc * (r % br) + r // br + c) % n + 1 for c in range(n)] for r in range(n)]


@dataclass(frozen=True)
class Transform:
    """A validity-preserving map of an n x n sudoku: digit relabelling, row permutation
    within and across bands, column permutation within and across stacks, transpose
    (square boxes only). ``apply`` maps a grid; ``invert`` maps an answer back."""

    digits: tuple[int, ...]  # digits[d] = new label of d (index 0 keeps blank = 0)
    rows: tuple[int, ...]  # new row i takes old row rows[i]
    cols: tuple[int, ...]
    transpose: bool

    def apply(self, grid: Grid) -> Grid:
        n = len(grid)
        g = [[self.digits[grid[self.rows[i]][self.cols[j]]] for j in range(n)] for i in range(n)]
        return [list(r) for r in zip(*g, strict=True)] if self.transpose else g

    def invert(self, grid: Grid) -> Grid:
        n = len(grid)
        g = [list(r) for r in zip(*grid, strict=True)] if self.transpose else grid
        inv_d = [0] * len(self.digits)
        for d, nd in enumerate(self.digits):
            inv_d[nd] = d
        out = [[0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                v = g[i][j]
                out[self.rows[i]][self.cols[j]] = inv_d[v] if 0 <= v < len(inv_d) else v
        return out


def random_transform(n: int, rng: random.Random) -> Transform:
    br, bc = _BOX[n]
    digits = list(range(1, n + 1))
    rng.shuffle(digits)
    bands = list(range(n // br))
    rng.shuffle(bands)
    rows: list[int] = []
    for band in bands:
        inner = list(range(br))
        rng.shuffle(inner)
        rows += [band * br + k for k in inner]
    stacks = list(range(n // bc))
    rng.shuffle(stacks)
    cols: list[int] = []
    for stack in stacks:
        inner = list(range(bc))
        rng.shuffle(inner)
        cols += [stack * bc + k for k in inner]
    transpose = br == bc and rng.random() < 0.5
    return Transform(tuple([0, *digits]), tuple(rows), tuple(cols), transpose)


DEFAULT_GIVENS = {4: 6, 6: 14, 9: 32}


def generate(n: int, rng: random.Random, givens: int | None = None) -> tuple[Grid, Grid]:
    """A puzzle with a unique solution and (as near as uniqueness allows) ``givens`` clues.

    Fewer givens is harder. Returns (puzzle, solution)."""
    geo = geometry(n)
    target = DEFAULT_GIVENS[n] if givens is None else givens
    if not 0 <= target <= n * n:
        raise InputError(f"givens must be 0..{n * n}, got {target}")
    solution = random_transform(n, rng).apply(_base_solution(n))
    flat = _flat(solution)
    order = list(range(n * n))
    rng.shuffle(order)
    kept = n * n
    for i in order:
        if kept <= target:
            break
        v, flat[i] = flat[i], 0
        if _search(flat.copy(), geo, 2, []) != 1:
            flat[i] = v
        else:
            kept -= 1
    return _grid(flat, n), solution


def parse_text(text: str) -> Grid:
    """Parse a grid written as lines of digits; '.', '0' or '_' are blanks; spaces, '|', '-'
    and '+' are ignored. A single line of n*n characters is accepted too."""
    cells: list[int] = []
    for ch in text:
        if ch.isdigit():
            cells.append(int(ch))
        elif ch in "._":
            cells.append(0)
        elif ch in " \t\r\n|-+":
            continue
        else:
            raise InputError(f"unexpected character {ch!r} in sudoku text")
    for n in SIZES:
        if len(cells) == n * n:
            return _validate_grid(_grid(cells, n), allow_blank=True, what="puzzle")
    raise InputError(f"sudoku text has {len(cells)} cells; expected 16, 36 or 81")


def format_grid(grid: Grid) -> str:
    n = len(grid)
    br, bc = _BOX[n]
    lines = []
    for r, row in enumerate(grid):
        if r and r % br == 0:
            lines.append("-+-".join("-" * (2 * bc - 1) for _ in range(n // bc)))
        parts = [" ".join(str(v) if v else "." for v in row[s : s + bc]) for s in range(0, n, bc)]
        lines.append(" | ".join(parts))
    return "\n".join(lines)

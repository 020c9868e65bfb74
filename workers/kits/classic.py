"""Non-neural workers: cheap heuristics that sit in front of the exact solvers, the exact
solvers themselves (the offline last tier, named as such), and the route assembler tool."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import maze, sudoku

__all__ = [
    "SudokuPropagationWorker",
    "SudokuExactSolver",
    "MazeGreedyWorker",
    "MazeBFSSolver",
    "RouteInput",
    "RouteOutput",
    "RouteAssembler",
]


class SudokuPropagationWorker(Worker):
    """Naked and hidden singles only: solves easy puzzles, gives up (no answer) on the rest."""

    name = "sudoku.propagate"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, sudoku.SudokuInput)
            t0 = time.perf_counter()
            grid, blanks = sudoku.propagate(job.input.puzzle)
            dt = time.perf_counter() - t0
            if blanks == 0:
                out.append(self.attempt(sudoku.SudokuOutput(solution=grid), 1.0, job=job, seconds=dt))
            else:
                why = "contradiction" if blanks < 0 else f"stalled with {blanks} blanks"
                out.append(self.attempt(None, 0.0, job=job, seconds=dt, error=f"propagation {why}"))
        return out


class SudokuExactSolver(Worker):
    """Exact depth-first search; always right on a solvable puzzle. The offline last tier."""

    name = "sudoku.exact"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, sudoku.SudokuInput)
            t0 = time.perf_counter()
            try:
                grid = sudoku.solve_exact(job.input.puzzle)
            except InputError as e:
                out.append(self.attempt(None, 0.0, job=job, seconds=time.perf_counter() - t0, error=str(e)))
                continue
            out.append(
                self.attempt(sudoku.SudokuOutput(solution=grid), 1.0, job=job, seconds=time.perf_counter() - t0)
            )
        return out


def _greedy_best_first(grid: Sequence[str]) -> list[tuple[int, int]] | None:
    start, goal = maze.find_cell(grid, "S"), maze.find_cell(grid, "G")

    def h(c: tuple[int, int]) -> int:
        return abs(c[0] - goal[0]) + abs(c[1] - goal[1])

    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    frontier = [(h(start), start)]
    while frontier:
        _, cell = heapq.heappop(frontier)
        if cell == goal:
            path = [goal]
            while (p := prev[path[-1]]) is not None:
                path.append(p)
            return path[::-1]
        r, c = cell
        for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nb[0] < len(grid) and 0 <= nb[1] < len(grid[0]) and grid[nb[0]][nb[1]] != "#" and nb not in prev:
                prev[nb] = cell
                heapq.heappush(frontier, (h(nb), nb))
    return None


class MazeGreedyWorker(Worker):
    """Greedy best-first search toward G: finds a path fast, not always the shortest."""

    name = "maze.greedy"
    skill = "maze.route"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, maze.MazeInput)
            t0 = time.perf_counter()
            path = _greedy_best_first(job.input.grid)
            dt = time.perf_counter() - t0
            if path is None:
                out.append(self.attempt(None, 0.0, job=job, seconds=dt, error="greedy search found no path"))
            else:
                out.append(self.attempt(maze.MazeOutput(path=path), 0.5, job=job, seconds=dt))
        return out


class MazeBFSSolver(Worker):
    """Breadth-first search: always a shortest path. The offline last tier for mazes."""

    name = "maze.bfs"
    skill = "maze.route"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, maze.MazeInput)
            t0 = time.perf_counter()
            try:
                path = maze.bfs_path(job.input.grid)
            except InputError as e:
                out.append(self.attempt(None, 0.0, job=job, seconds=time.perf_counter() - t0, error=str(e)))
                continue
            out.append(self.attempt(maze.MazeOutput(path=path), 1.0, job=job, seconds=time.perf_counter() - t0))
        return out


class RouteInput(BaseModel):
    """``{"legs": [[[r, c], ...], ...]}``: consecutive legs of a multi-stop route."""

    model_config = ConfigDict(extra="forbid")
    legs: list[list[tuple[int, int]]]


class RouteOutput(BaseModel):
    """The joined route and its length in moves."""

    model_config = ConfigDict(extra="forbid")
    path: list[tuple[int, int]]
    moves: int
    legs: int


class RouteAssembler(Worker):
    """Joins the legs of a route end to start into one path (a tool, not a model)."""

    name = "route.assemble"
    skill = "route.assemble"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, RouteInput)
            legs = job.input.legs
            path: list[tuple[int, int]] = []
            error = None
            for k, leg in enumerate(legs):
                if path and leg and tuple(leg[0]) != tuple(path[-1]):
                    error = f"leg {k} starts at {tuple(leg[0])} but leg {k - 1} ends at {tuple(path[-1])}"
                    break
                path.extend(leg if not path else leg[1:])
            if error:
                out.append(self.attempt(None, 0.0, job=job, error=error))
            else:
                route = RouteOutput(path=path, moves=max(0, len(path) - 1), legs=len(legs))
                out.append(self.attempt(route, 1.0, job=job))
        return out

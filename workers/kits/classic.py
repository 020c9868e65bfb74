"""Non-neural workers: cheap heuristics that sit in front of the exact solvers, the exact
solvers themselves (the offline last tier, named as such), and the route assembler tool."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import maze, sudoku

__all__ = [
    "ClassicWorker",
    "GaveUp",
    "SudokuPropagationWorker",
    "SudokuExactSolver",
    "MazeGreedyWorker",
    "MazeBFSSolver",
    "RouteInput",
    "RouteOutput",
    "RouteAssembler",
]


In = TypeVar("In", bound=BaseModel)


class GaveUp(Exception):
    """Raised by :meth:`ClassicWorker.solve_one`: no answer for this input, and why."""


class ClassicWorker(Worker, Generic[In]):
    """A worker that answers each job on its own, in order, timed. Subclasses set
    ``input_model`` and implement :meth:`solve_one`; giving up (:class:`GaveUp`, or the
    InputError of an exact solver that finds no answer) becomes an attempt with no output and
    the reason as its error."""

    input_model: ClassVar[type[BaseModel]]

    def solve_one(self, inp: In) -> tuple[BaseModel, float]:
        """The answer to one input and its confidence."""
        raise NotImplementedError

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, self.input_model), f"{self.name} takes {self.input_model.__name__}"
            t0 = time.perf_counter()
            try:
                answer, confidence = self.solve_one(cast(In, job.input))
            except (GaveUp, InputError) as e:
                out.append(self.attempt(None, 0.0, job=job, seconds=time.perf_counter() - t0, error=str(e)))
                continue
            out.append(self.attempt(answer, confidence, job=job, seconds=time.perf_counter() - t0))
        return out


class SudokuPropagationWorker(ClassicWorker[sudoku.SudokuInput]):
    """Naked and hidden singles only: solves easy puzzles, gives up (no answer) on the rest."""

    name = "sudoku.propagate"
    skill = "sudoku.solve"
    input_model = sudoku.SudokuInput

    def solve_one(self, inp: sudoku.SudokuInput) -> tuple[BaseModel, float]:
        grid, blanks = sudoku.propagate(inp.puzzle)
        if blanks != 0:
            raise GaveUp(f"propagation {'contradiction' if blanks < 0 else f'stalled with {blanks} blanks'}")
        return sudoku.SudokuOutput(solution=grid), 1.0


class SudokuExactSolver(ClassicWorker[sudoku.SudokuInput]):
    """Exact depth-first search; always right on a solvable puzzle. The offline last tier."""

    name = "sudoku.exact"
    skill = "sudoku.solve"
    input_model = sudoku.SudokuInput

    def solve_one(self, inp: sudoku.SudokuInput) -> tuple[BaseModel, float]:
        return sudoku.SudokuOutput(solution=sudoku.solve_exact(inp.puzzle)), 1.0


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


class MazeGreedyWorker(ClassicWorker[maze.MazeInput]):
    """Greedy best-first search toward G: finds a path fast, not always the shortest."""

    name = "maze.greedy"
    skill = "maze.route"
    input_model = maze.MazeInput

    def solve_one(self, inp: maze.MazeInput) -> tuple[BaseModel, float]:
        path = _greedy_best_first(inp.grid)
        if path is None:
            raise GaveUp("greedy search found no path")
        return maze.MazeOutput(path=path), 0.5


class MazeBFSSolver(ClassicWorker[maze.MazeInput]):
    """Breadth-first search: always a shortest path. The offline last tier for mazes."""

    name = "maze.bfs"
    skill = "maze.route"
    input_model = maze.MazeInput

    def solve_one(self, inp: maze.MazeInput) -> tuple[BaseModel, float]:
        return maze.MazeOutput(path=maze.bfs_path(inp.grid)), 1.0


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


class RouteAssembler(ClassicWorker[RouteInput]):
    """Joins the legs of a route end to start into one path (a tool, not a model)."""

    name = "route.assemble"
    skill = "route.assemble"
    input_model = RouteInput

    def solve_one(self, inp: RouteInput) -> tuple[BaseModel, float]:
        path: list[tuple[int, int]] = []
        for k, leg in enumerate(inp.legs):
            if path and leg and tuple(leg[0]) != tuple(path[-1]):
                raise GaveUp(f"leg {k} starts at {tuple(leg[0])} but leg {k - 1} ends at {tuple(path[-1])}")
            path.extend(leg if not path else leg[1:])
        return RouteOutput(path=path, moves=max(0, len(path) - 1), legs=len(inp.legs)), 1.0

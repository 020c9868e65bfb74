"""Verifiers of the built-in skills: exact checks, cheap enough to run inline in the driver."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from tinyfleet_core.models import Verdict
from workers.base import Verifier
from workers.kits import maze, sudoku
from workers.kits.classic import RouteInput, RouteOutput

__all__ = ["SudokuVerifier", "MazeVerifier", "RouteVerifier"]


class SudokuVerifier(Verifier):
    """Checks every row, column and box holds each digit once and every given is kept."""

    name = "sudoku.rules"

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, sudoku.SudokuInput) and isinstance(ans, sudoku.SudokuOutput)
            problem = sudoku.check_solution(inp.puzzle, ans.solution)
            out.append(self.verdict(problem is None, problem or "all rules hold and every given is kept"))
        return out


class MazeVerifier(Verifier):
    """Checks the path is legal, runs from S to G, and is as short as breadth-first search's."""

    name = "maze.shortest"

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, maze.MazeInput) and isinstance(ans, maze.MazeOutput)
            problem = maze.check_path(inp.grid, ans.path)
            out.append(self.verdict(problem is None, problem or f"legal shortest path of {len(ans.path) - 1} moves"))
        return out


class RouteVerifier(Verifier):
    """Checks the assembled route is continuous and covers every leg in order."""

    name = "route.continuity"

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, RouteInput) and isinstance(ans, RouteOutput)
            problem = None
            for k in range(1, len(ans.path)):
                (r0, c0), (r1, c1) = ans.path[k - 1], ans.path[k]
                if abs(r0 - r1) + abs(c0 - c1) != 1:
                    problem = f"route jumps from {(r0, c0)} to {(r1, c1)}"
                    break
            expected = sum(max(0, len(leg) - 1) for leg in inp.legs)
            if problem is None and ans.moves != expected:
                problem = f"route has {ans.moves} moves; its legs add up to {expected}"
            out.append(self.verdict(problem is None, problem or "continuous route"))
        return out

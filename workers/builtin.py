"""The built-in skills and their escalation ladders (the embedded default).

No built-in skill has a precheck that solves: the input models check what is cheap and
local (a sudoku's shape, alphabet and repeated givens in a row, column or box; a maze's
alphabet, equal rows and exactly one S and one G), and a consistent input with no answer
(an unsolvable sudoku, an unreachable goal) is found at run time by the ladder, whose exact
tier fails the step with the solver's reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from workers.base import PoolOptions, Skill, Tier, Worker
from workers.code import code_skill
from workers.kits import maze, sudoku
from workers.kits.classic import (
    MazeBFSSolver,
    MazeGreedyWorker,
    RouteAssembler,
    RouteInput,
    RouteOutput,
    SudokuExactSolver,
    SudokuPropagationWorker,
)
from workers.kits.verifiers import MazeVerifier, RouteVerifier, SudokuVerifier
from workers.lazy import LazyWorker
from workers.registry import SkillRegistry
from workers.serving.catalog import maze_accepts, served_frames, served_sizes
from workers.serving.liquid_skills import series_skills

__all__ = ["default_registry", "sudoku_skill", "maze_skill", "route_skill"]

# Pure-Python tiers: cheap per item, so a pool batches many items per call.
_HEURISTIC_POOL = PoolOptions(replicas=1, num_cpus=0.5, max_batch=256, max_wait_ms=2.0)
_EXACT_POOL = PoolOptions(replicas=1, num_cpus=0.5, max_batch=64, max_wait_ms=2.0)
_TOOL_POOL = PoolOptions(inline=True, max_batch=256, max_wait_ms=0.0)
# Torch tiers: one forward pass per batch, so wait a few ms to fill large batches.
_TORCH_POOL = PoolOptions(replicas=1, num_cpus=1.0, max_batch=256, max_wait_ms=5.0)

# The tiny-model workers, imported (with torch) only where a pool builds one (workers/lazy.py).
_NEURAL = "workers.serving.neural"
TRM_SUDOKU = LazyWorker(_NEURAL, "TRMSudokuWorker", name="sudoku.trm", stochastic=True)
HRM_SUDOKU = LazyWorker(_NEURAL, "HRMSudokuWorker", name="sudoku.hrm", stochastic=True)
TRM_MAZE = LazyWorker(_NEURAL, "TRMMazeWorker", name="maze.trm", stochastic=True)
HRM_MAZE = LazyWorker(_NEURAL, "HRMMazeWorker", name="maze.hrm", stochastic=True)


def _tiny_tiers(skill: str, workers: dict[str, Callable[[], Worker]], fits: Callable[[BaseModel, frozenset[int]], bool]) -> list[Tier]:
    """The tiny-model tiers of a skill: TRM first, then HRM, each taking only the sizes one of
    its served checkpoints covers (``fits``), so other inputs skip it without counting as an
    escalation. Where both serve a size, HRM gets the items whose TRM answer failed
    verification: a second model family with its own errors, before the heuristic tier."""
    tiers = []
    for model, worker in workers.items():
        sizes = frozenset(served_sizes(skill, model))
        if sizes:
            tiers.append(Tier(model, worker, "tiny", _TORCH_POOL, functools.partial(_fits_any, fits=fits, sizes=sizes)))
    return tiers


def _fits_any(inp: BaseModel, *, fits: Callable[[BaseModel, frozenset[int]], bool], sizes: frozenset[int]) -> bool:
    return fits(inp, sizes)


def _sudoku_fits(inp: BaseModel, sizes: frozenset[int]) -> bool:
    return isinstance(inp, sudoku.SudokuInput) and len(inp.puzzle) in sizes


def _maze_tiers() -> list[Tier]:
    """The maze's tiny tiers: a model kind is a tier when it serves a frame checkpoint (any grid
    that fits the frame, square or not, ringed or not) or a per-size one (square ringed mazes
    of that side); other grids skip it without counting as an escalation."""
    workers: dict[str, Callable[[], Worker]] = {"trm": TRM_MAZE, "hrm": HRM_MAZE}
    return [
        Tier(model, worker, "tiny", _TORCH_POOL, maze_accepts(model))
        for model, worker in workers.items()
        if served_frames("maze.route", model) or served_sizes("maze.route", model)
    ]


def _looks_like_sudoku(inputs: dict[str, Any]) -> bool:
    return "puzzle" in inputs


def _looks_like_maze(inputs: dict[str, Any]) -> bool:
    return "grid" in inputs and "stops" not in inputs


def sudoku_skill() -> Skill:
    return Skill(
        name="sudoku.solve",
        description="Complete an n x n sudoku (n in 4, 6, 9; 0 = blank). Input {'puzzle': [[int]]}.",
        input_model=sudoku.SudokuInput,
        output_model=sudoku.SudokuOutput,
        ladder=[
            *_tiny_tiers("sudoku.solve", {"trm": TRM_SUDOKU, "hrm": HRM_SUDOKU}, _sudoku_fits),
            Tier("propagate", SudokuPropagationWorker, "heuristic", _HEURISTIC_POOL),
        ],
        fallback=Tier("exact", SudokuExactSolver, "exact", _EXACT_POOL),
        verifier=SudokuVerifier(),
        recognize=_looks_like_sudoku,
    )


def maze_skill() -> Skill:
    return Skill(
        name="maze.route",
        description="Shortest 4-connected path from S to G in a grid of '#', '.', 'S', 'G'. Input {'grid': [str]}.",
        input_model=maze.MazeInput,
        output_model=maze.MazeOutput,
        ladder=[
            *_maze_tiers(),
            Tier("greedy", MazeGreedyWorker, "heuristic", _HEURISTIC_POOL),
        ],
        fallback=Tier("bfs", MazeBFSSolver, "exact", _EXACT_POOL),
        verifier=MazeVerifier(),
        recognize=_looks_like_maze,
    )


def route_skill() -> Skill:
    return Skill(
        name="route.assemble",
        description="Join consecutive route legs into one path. Input {'legs': [[[r, c], ...], ...]}.",
        input_model=RouteInput,
        output_model=RouteOutput,
        ladder=[Tier("assemble", RouteAssembler, "tool", _TOOL_POOL)],
        verifier=RouteVerifier(),
    )


def default_registry() -> SkillRegistry:
    """A fresh registry with every built-in skill (plus those installed via entry points)."""
    reg = SkillRegistry([sudoku_skill(), maze_skill(), route_skill()])
    for series_skill in series_skills():  # series.forecast, series.anomaly (workers/serving/liquid.py)
        reg.register(series_skill)
    reg.register(code_skill())  # code.function: LLM tiers write, the sandbox verifies (workers/code.py)
    reg.load_entry_points()
    return reg

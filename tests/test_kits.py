"""Sudoku and maze kits: generators, solvers, verifiers, parsing; malformed input gives typed errors."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import InputError
from workers.kits import maze, sudoku
from workers.registry import validate_payload


@pytest.mark.parametrize("n", [4, 6, 9])
def test_generated_sudoku_is_unique_and_solvable(n: int) -> None:
    rng = random.Random(n)
    for _ in range(5):
        puzzle, solution = sudoku.generate(n, rng)
        assert sudoku.count_solutions(puzzle) == 1
        assert sudoku.check_solution(puzzle, solution) is None
        assert sudoku.solve_exact(puzzle) == solution


def test_generator_is_seeded_and_difficulty_knob_counts_givens() -> None:
    a = sudoku.generate(9, random.Random(3), givens=30)
    b = sudoku.generate(9, random.Random(3), givens=30)
    assert a == b
    assert sum(v > 0 for row in a[0] for v in row) == 30
    easy = sudoku.generate(9, random.Random(4), givens=40)[0]
    assert sudoku.propagate(easy)[1] == 0


@pytest.mark.parametrize("n", [4, 6, 9])
def test_transforms_preserve_validity_and_invert(n: int) -> None:
    rng = random.Random(1)
    puzzle, solution = sudoku.generate(n, rng)
    for _ in range(10):
        t = sudoku.random_transform(n, rng)
        assert sudoku.check_solution(t.apply(puzzle), t.apply(solution)) is None
        assert t.invert(t.apply(solution)) == solution


def test_sudoku_verifier_rejects_changed_givens_and_repeats() -> None:
    puzzle, solution = sudoku.generate(4, random.Random(0))
    bad = [row[:] for row in solution]
    bad[0][0], bad[0][1] = bad[0][1], bad[0][0]
    assert sudoku.check_solution(puzzle, bad) is not None
    assert "repeats" in (sudoku.check_solution([[0] * 4 for _ in range(4)], [[1, 2, 3, 4]] * 4) or "")


def test_sudoku_text_roundtrip() -> None:
    puzzle, _ = sudoku.generate(9, random.Random(2))
    assert sudoku.parse_text(sudoku.format_grid(puzzle)) == puzzle
    with pytest.raises(InputError, match="81"):
        sudoku.parse_text("123")


@pytest.mark.parametrize(
    "puzzle, match",
    [
        ([[1, 2, 3]] * 3, "n in"),
        ([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], "repeats 1"),
        ([[5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], "values must be 0..4"),
        ([[0, 0, 0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], "row 1 has 3 cells"),
        ([["a", 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], "valid integer"),
    ],
)
def test_bad_sudoku_names_the_problem(puzzle: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate_payload(sudoku.SudokuInput, {"puzzle": puzzle}, what="input")


def test_exact_solver_reports_an_unsolvable_but_consistent_sudoku() -> None:
    # givens legal locally (the input model accepts them), but cell (0,3) has no candidate left
    puzzle = [[1, 2, 3, 0], [0, 0, 0, 4], [0, 0, 0, 0], [0, 0, 0, 0]]
    validate_payload(sudoku.SudokuInput, {"puzzle": puzzle}, what="input")
    assert sudoku.count_solutions(puzzle) == 0
    with pytest.raises(InputError, match="no solution"):
        sudoku.solve_exact(puzzle)


@pytest.mark.parametrize("size", [7, 11, 21])
def test_maze_generator_and_bfs(size: int) -> None:
    rng = random.Random(size)
    for loops in (0.0, 0.2):
        grid = maze.generate(size, rng, loops=loops)
        path = maze.bfs_path(grid)
        assert maze.check_path(grid, path) is None
        assert maze.check_path(grid, path[:-1]) is not None
        longer = path[:1] + [path[1], path[0]] + path[1:]
        assert "moves" in (maze.check_path(grid, longer) or "")


def test_perfect_maze_is_a_tree() -> None:
    grid = maze.generate(11, random.Random(5), loops=0.0)
    open_cells = sum(row.count(".") + row.count("S") + row.count("G") for row in grid)
    edges = sum(
        1
        for r, row in enumerate(grid)
        for c, ch in enumerate(row)
        if ch != "#"
        for nr, nc in ((r + 1, c), (r, c + 1))
        if nr < len(grid) and nc < len(row) and grid[nr][nc] != "#"
    )
    assert edges == open_cells - 1


@pytest.mark.parametrize(
    "grid, match",
    [
        ([], "empty"),
        (["S..", ".."], "equal length"),
        (["S.x", "..G"], "only"),
        (["...", "..G"], "exactly one 'S'"),
        (["S.G", "S.."], "exactly one"),
    ],
)
def test_bad_maze_names_the_problem(grid: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate_payload(maze.MazeInput, {"grid": grid}, what="input")


def test_bfs_reports_an_unreachable_goal_the_input_model_accepts() -> None:
    validate_payload(maze.MazeInput, {"grid": ["S#G"]}, what="input")
    with pytest.raises(InputError, match="no path"):
        maze.bfs_path(["S#G"])


cell = st.one_of(st.integers(-3, 12), st.text(max_size=2), st.none(), st.floats(allow_nan=True), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(st.lists(cell, max_size=10), max_size=10), st.dictionaries(st.text(max_size=3), cell), cell))
def test_random_malformed_sudoku_only_gives_typed_errors(puzzle: object) -> None:
    try:
        inp = validate_payload(sudoku.SudokuInput, {"puzzle": puzzle}, what="input")
    except InputError:
        return
    try:
        sudoku.solve_exact(inp.puzzle)  # type: ignore[attr-defined]
    except InputError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(st.text(alphabet="#.SGx ", max_size=8), max_size=8), st.lists(cell, max_size=4), cell))
def test_random_malformed_maze_only_gives_typed_errors(grid: object) -> None:
    try:
        inp = validate_payload(maze.MazeInput, {"grid": grid}, what="input")
    except InputError:
        return
    try:
        maze.bfs_path(inp.grid)  # type: ignore[attr-defined]
    except InputError:
        pass

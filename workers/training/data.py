"""Task data for the tiny recursive models: a skill's training stream, held-out items,
encodings and exact-answer checks.

Data comes from the kits: a pool of generated items (unique-solution sudoku, perfect mazes,
the grid families of :mod:`workers.kits.maze_families` for a frame model), built in seeded
chunks over any number of processes and optionally cached on disk, then augmented per
sample on the training device (sudoku: digit relabelling, row/column permutations within
bands and stacks, transposes; per-size mazes: the 8 symmetries of the square; frame mazes
are transformed before their labels are computed, so a grid's label stays a function of
the grid). Seeds are namespaced by split, so the training pool (``train:``), the periodic
held-out check (``valid:``) and ``tinyfleet eval`` (``eval:``) never share a puzzle seed.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tinyfleet_core.errors import InputError
from workers.kits import maze, maze_families, sudoku
from workers.serving.neural import (
    MAZE_PAD,
    crop_border,
    decode_maze,
    exact_path,
    frame_labels,
    frame_marks,
    frame_side,
    frame_sides,
    frame_tokens,
    frame_view,
    maze_labels,
    maze_seq_len,
    maze_tokens,
    sudoku_tokens,
)

__all__ = [
    "FrameMazeData",
    "MazeData",
    "SKILLS",
    "SudokuData",
    "TaskData",
    "task_data",
]

SKILLS = ("sudoku.solve", "maze.route")
SUDOKU_GIVENS = {4: (5, 8), 6: (12, 18), 9: (30, 40)}
EVAL_GIVENS = {4: (6, 6), 6: (14, 14), 9: (30, 40)}
HARD_GIVENS = {9: (22, 29)}
"""The hard band of a size: fewer givens, more search (9x9 only). A training run mixes it in
with the recipe's ``hard`` share; ``tinyfleet eval --givens 22-29`` measures it."""



class TaskData(Protocol):
    """A skill's data for the models: training stream, eval items, encodings and checks."""

    skill: str
    size: int
    vocab: int
    classes: int
    seq_len: int

    def prepare(self, device: str, workers: int = 1, cache: Path | None = None) -> None: ...
    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def items(self, n: int, split: str, seed: int) -> list[Any]: ...
    def encode(self, items: list[Any]) -> np.ndarray: ...
    def labels(self, items: list[Any]) -> np.ndarray: ...
    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]: ...


def _rng(split: str, skill: str, size: int | str, seed: int | str) -> random.Random:
    return random.Random(f"{split}:{skill}:{size}:{seed}")


def _stable_seed(*parts: object) -> int:
    """A seed from its parts that is the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(":".join(map(str, parts)).encode())


POOL_CHUNK = 500  # items per generation chunk; chunk i is seeded by its index, so the pool is
# the same however many processes build it


def _sudoku_chunk(size: int, seed: int, chunk: int, count: int, hard: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` puzzles of the size's training band, a ``hard`` share of them from its hard band."""
    rng = _rng("train", "sudoku.solve", size, f"{seed}:{chunk}" if not hard else f"{seed}:{chunk}:hard{hard}")
    bands = (SUDOKU_GIVENS[size], HARD_GIVENS.get(size, SUDOKU_GIVENS[size]))
    pairs = [sudoku.generate(size, rng, rng.randint(*bands[bool(hard) and rng.random() < hard])) for _ in range(count)]
    return sudoku_tokens([p for p, _ in pairs]).astype(np.int8), sudoku_tokens([s for _, s in pairs]).astype(np.int8)


def _maze_chunk(size: int, seed: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("train", "maze.route", size, f"{seed}:{chunk}")
    grids = [MazeData.inner(maze.generate(size, rng)) for _ in range(count)]
    return maze_tokens(grids).astype(np.int8), maze_labels(grids).astype(np.int8)


def _build_pool(fn: Any, size: int, seed: int, n: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items from ``fn`` in chunks of POOL_CHUNK, over ``workers`` processes."""
    jobs = [(size, seed, i, min(POOL_CHUNK, n - i * POOL_CHUNK)) for i in range((n + POOL_CHUNK - 1) // POOL_CHUNK)]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork after CUDA or Ray threads started
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as ex:
            parts = list(ex.map(fn, *zip(*jobs, strict=True)))
    else:
        parts = [fn(*job) for job in jobs]
    return np.concatenate([p for p, _ in parts]), np.concatenate([q for _, q in parts])


class _PooledData:
    """A pre-generated pool of (tokens, labels) held on the training device, sampled with
    random validity-preserving transforms. ``prepare`` builds it (or loads it from a cache
    directory: the pool is a pure function of skill, size, seed and count)."""

    skill: str
    size: int
    _chunk: Any

    @property
    def tag(self) -> str:
        """What the pool is of, in its cache file's name."""
        return str(self.size)

    def _chunk_fn(self) -> Any:
        """The (picklable) function that builds one chunk: (size, seed, chunk, count) -> pool part."""
        return type(self)._chunk

    def __init__(self, seed: int, pool: int) -> None:
        self.seed, self._pool_n = seed, pool
        self._pool: tuple[np.ndarray, np.ndarray] | None = None
        self._dev: tuple[torch.Tensor, torch.Tensor] | None = None
        self._gen: torch.Generator | None = None

    def pool(self, workers: int = 1, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, labels) as int8 arrays, (P, S) each."""
        if self._pool is None:
            path = cache / f"{self.skill}-{self.tag}-seed{self.seed}-n{self._pool_n}.npz" if cache else None
            if path is not None and path.exists():
                with np.load(path) as f:
                    self._pool = (f["tokens"], f["labels"])
            else:
                self._pool = _build_pool(self._chunk_fn(), self.size, self.seed, self._pool_n, workers)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez_compressed(path, tokens=self._pool[0], labels=self._pool[1])
        return self._pool

    def prepare(self, device: str = "cpu", workers: int = 1, cache: Path | None = None) -> None:
        tokens, labels = self.pool(workers, cache)
        self._dev = (torch.from_numpy(tokens).long().to(device), torch.from_numpy(labels).long().to(device))
        self._gen = torch.Generator(device=device).manual_seed(_stable_seed("train", self.skill, self.size, self.seed))

    def _rand(self, *shape: int) -> torch.Tensor:
        assert self._dev is not None and self._gen is not None
        return torch.rand(shape, generator=self._gen, device=self._dev[0].device)

    def _picked(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dev is None:
            self.prepare()
        assert self._dev is not None
        tokens, labels = self._dev
        idx = (self._rand(k) * len(tokens)).long()  # (k,)
        return tokens[idx], labels[idx]  # (k, S) each


class SudokuData(_PooledData):
    """n x n sudoku: tokens are cell values (0 blank), labels digit - 1. The pool is augmented
    per sample by digit relabelling, band and row-in-band permutations, stack and
    column-in-stack permutations and (square boxes) transposes."""

    skill = "sudoku.solve"
    _chunk = staticmethod(_sudoku_chunk)

    def __init__(
        self, size: int, seed: int, pool: int = 0, *, hard: float = 0.0, givens: tuple[int, int] | None = None,
    ) -> None:
        """``hard``: share of the training pool from the hard band (HARD_GIVENS); ``givens``:
        the (lo, hi) clue counts of held-out ``items`` (default EVAL_GIVENS)."""
        if size not in sudoku.SIZES:
            raise InputError(f"sudoku size must be one of {sudoku.SIZES}, got {size}")
        if not 0.0 <= hard <= 1.0 or (hard and size not in HARD_GIVENS):
            raise InputError(f"the hard share must be 0..1 and is for sizes {sorted(HARD_GIVENS)}, got {hard} for {size}x{size}")
        if givens is not None and not (0 <= givens[0] <= givens[1] <= size * size):
            raise InputError(f"givens must be LO-HI with 0 <= LO <= HI <= {size * size}, got {givens[0]}-{givens[1]}")
        self.size, self.hard, self.givens = size, hard, givens
        self.vocab, self.classes, self.seq_len = size + 1, size, size * size
        super().__init__(seed, pool or {4: 4000, 6: 20000, 9: 5000}[size])

    @property
    def tag(self) -> str:
        return f"{self.size}-hard{self.hard}" if self.hard else str(self.size)

    def _chunk_fn(self) -> Any:
        return functools.partial(_sudoku_chunk, hard=self.hard) if self.hard else _sudoku_chunk

    def _perm(self, k: int, groups: int, per: int) -> torch.Tensor:
        """(k, groups * per) indices: groups shuffled, members shuffled within each group."""
        order = self._rand(k, groups).argsort(1)  # (k, G)
        inner = self._rand(k, groups, per).argsort(2)  # (k, G, per)
        return (order[:, :, None] * per + inner).reshape(k, groups * per)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, n*n) each, on the prepared device."""
        puzzles, sols = self._picked(k)  # (k, S): 0..n and 1..n
        n = self.size
        br, bc = sudoku.box_shape(n)
        digits = torch.cat([torch.zeros_like(puzzles[:, :1]), self._rand(k, n).argsort(1) + 1], 1)  # (k, n+1), 0 -> 0
        rows, cols = self._perm(k, n // br, br), self._perm(k, n // bc, bc)  # (k, n) source row / column
        cells = rows[:, :, None] * n + cols[:, None, :]  # (k, n, n) source cell of each target cell
        if br == bc:
            flip = (self._rand(k) < 0.5)[:, None, None]
            cells = torch.where(flip, cells.transpose(1, 2), cells)
        cells = cells.reshape(k, n * n)
        xs = digits.gather(1, puzzles.gather(1, cells))
        ys = digits.gather(1, sols.gather(1, cells)) - 1
        return xs, ys

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        lo, hi = self.givens or EVAL_GIVENS[self.size]
        rng = _rng(split, self.skill, self.size if self.givens is None else f"{self.size}:{lo}-{hi}", seed)
        return [sudoku.generate(self.size, rng, rng.randint(lo, hi)) for _ in range(n)]

    def encode(self, items: list[Any]) -> np.ndarray:
        return sudoku_tokens([p for p, _ in items])

    def labels(self, items: list[Any]) -> np.ndarray:
        return sudoku_tokens([s for _, s in items]) - 1

    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]:
        n = self.size
        ok = []
        for (puzzle, _), row in zip(items, pred, strict=True):
            grid = [[int(row[r * n + c]) + 1 for c in range(n)] for r in range(n)]
            grid = [[g if g else v for g, v in zip(prow, grow, strict=True)] for prow, grow in zip(puzzle, grid, strict=True)]
            ok.append(sudoku.check_solution(puzzle, grid) is None)
        return ok


class MazeData(_PooledData):
    """size x size perfect mazes: tokens wall/open/S/G, labels 1 on the shortest path. The
    pool is augmented per sample by the 8 symmetries of the square (a perfect maze stays one,
    and its shortest path maps onto the new one)."""

    skill = "maze.route"
    _chunk = staticmethod(_maze_chunk)

    def __init__(self, size: int, seed: int, pool: int = 0) -> None:
        if size < 5 or size % 2 == 0:
            raise InputError(f"maze size must be odd and at least 5 (perfect mazes need it), got {size}")
        self.size = size
        self.vocab, self.classes, self.seq_len = 4, 2, maze_seq_len(size)
        super().__init__(seed, pool or 20000)
        side = size - 2
        grid = torch.arange(side * side).view(side, side)
        maps = []
        for t in (False, True):
            g = grid.T if t else grid
            for r in range(4):
                maps.append(torch.rot90(g, r).reshape(-1))
        self._maps = torch.stack(maps)  # (8, S): source cell of each target cell

    @staticmethod
    def inner(grid: list[str]) -> list[str]:
        inner = crop_border(grid)
        assert inner is not None, "kit mazes of odd size have a wall border"
        return inner

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, (size-2)**2) each, on the prepared device."""
        tokens, labels = self._picked(k)
        if self._maps.device != tokens.device:
            self._maps = self._maps.to(tokens.device)
        maps = self._maps[(self._rand(k) * 8).long()]  # (k, S)
        return tokens.gather(1, maps), labels.gather(1, maps)

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        rng = _rng(split, self.skill, self.size, seed)
        return [maze.generate(self.size, rng) for _ in range(n)]

    def encode(self, items: list[Any]) -> np.ndarray:
        return maze_tokens([self.inner(g) for g in items])

    def labels(self, items: list[Any]) -> np.ndarray:
        return maze_labels([self.inner(g) for g in items])

    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]:
        ok = []
        for grid, row in zip(items, pred, strict=True):
            path = decode_maze(self.inner(grid), row)
            full = [(r + 1, c + 1) for r, c in path] if path is not None else None
            ok.append(full is not None and maze.check_path(grid, full) is None)
        return ok


def _frame_chunk(frame: int, seed: int, chunk: int, count: int, lo: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("train", "maze.route", f"f{frame}-{lo}", f"{seed}:{chunk}")
    views: list[list[str]] = []
    while len(views) < count:
        _, grid = maze_families.mixture(rng, lo, frame)
        view = frame_view(grid, frame)
        if not isinstance(view, str):
            views.append(view[0])
    return frame_tokens(views, frame).astype(np.int8), frame_labels(views, frame).astype(np.int8)


class FrameMazeData(_PooledData):
    """Grids of every family and size up to ``frame`` x ``frame`` (a ringed grid up to two
    more, its ring cropped), placed at the frame's top-left and padded (MAZE_PAD). Labels: 1
    on the canonical shortest path, 0 elsewhere in the grid, IGNORE on padding. The pool is
    not augmented per sample: the generator already draws a random symmetry of each grid,
    before its label is computed (a transformed label would be a shortest path but not the
    canonical one of the transformed grid).

    An attention model runs each grid in the smallest square sub-frame of
    :func:`frame_sides` that holds it (the frame's own positions), so a batch is drawn per
    sub-frame side: :meth:`sample_side`. ``items`` (held-out) follows ``family`` and
    ``rows`` x ``cols`` when given: ``perfect`` with ``rows == cols`` odd is the kit's ringed
    maze (:func:`maze.generate`); None gives the training mixture."""

    skill = "maze.route"

    def __init__(
        self, frame: int, seed: int, pool: int = 0, *, lo: int = 5, mixer: str = "attn",
        family: str | None = None, rows: int | None = None, cols: int | None = None,
    ) -> None:
        if not 5 <= frame <= maze.MAX_SIDE:
            raise InputError(f"--frame must be 5..{maze.MAX_SIDE}, got {frame}")
        if not 2 <= lo <= frame:
            raise InputError(f"the smallest training side must be 2..{frame}, got {lo}")
        if family is not None and family not in maze_families.FAMILIES:
            raise InputError(f"--family must be one of {', '.join(maze_families.FAMILIES)}, got {family!r}")
        if (rows is None) != (cols is None):
            raise InputError("give both --rows and --cols (or --size for a square grid)")
        self.size = self.frame = frame
        self.lo, self.family, self.rows, self.cols = lo, family, rows, cols
        self.sides = frame_sides(frame, mixer)
        self.vocab, self.classes, self.seq_len = 5, 2, frame * frame
        super().__init__(seed, pool or 40000)
        self._by_side: dict[int, torch.Tensor] = {}
        if rows is not None and cols is not None:
            ringed = family == "perfect" and rows == cols and rows % 2 == 1  # the kit's maze: ring cropped
            if min(rows, cols) < 2 or max(rows, cols) - (2 if ringed else 0) > frame:
                raise InputError(f"a {rows}x{cols} grid does not fit this model's {frame}x{frame} frame; "
                                 f"choose sides 2..{frame} ({frame + 2} for a perfect maze with its wall ring)")

    @property
    def tag(self) -> str:
        return f"f{self.frame}-{self.lo}"

    def _chunk_fn(self) -> Any:
        return functools.partial(_frame_chunk, lo=self.lo)

    def prepare(self, device: str = "cpu", workers: int = 1, cache: Path | None = None) -> None:
        super().prepare(device, workers, cache)
        assert self._dev is not None
        F = self.frame
        grid = self._dev[0].view(-1, F, F) != MAZE_PAD  # (P, F, F)
        extent = torch.maximum(grid.any(2).sum(1), grid.any(1).sum(1))  # (P,) the longer side
        side = torch.full_like(extent, F)
        for b in reversed(self.sides):
            side = torch.where(extent <= b, b, side)
        self._by_side = {b: (side == b).nonzero().squeeze(1) for b in self.sides}

    def side_share(self) -> dict[int, float]:
        """Share of the pool per sub-frame side."""
        if not self._by_side:
            self.prepare()
        n = sum(len(v) for v in self._by_side.values())
        return {b: len(v) / max(n, 1) for b, v in self._by_side.items()}

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, frame*frame) each, on the prepared device (whole frames)."""
        return self._picked(k)

    def sample_side(self, k: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, side*side) each: grids whose sub-frame is ``side``."""
        if not self._by_side:
            self.prepare()
        assert self._dev is not None
        rows = self._by_side[side]
        if not len(rows):
            raise InputError(f"the training pool has no grid of sub-frame {side}; raise the pool size")
        idx = rows[(self._rand(k) * len(rows)).long()]
        F = self.frame
        tokens, labels = (t[idx].view(k, F, F)[:, :side, :side].reshape(k, side * side) for t in self._dev)
        return tokens, labels

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        rng = _rng(split, self.skill, f"f{self.frame}:{self.family}:{self.rows}x{self.cols}", seed)
        out: list[list[str]] = []
        while len(out) < n:
            if self.family is None:
                grid = maze_families.mixture(rng, self.lo, self.frame)[1]
            elif self.family == "perfect" and self.rows == self.cols and self.rows is not None and self.rows % 2:
                grid = maze.generate(self.rows, rng)
            elif self.rows is not None and self.cols is not None:
                grid = maze_families.generate_family(self.family, self.rows, self.cols, rng)
            else:
                side = rng.randint(self.lo, self.frame)
                grid = maze_families.generate_family(self.family, side, rng.randint(self.lo, self.frame), rng)
            if not isinstance(frame_view(grid, self.frame), str):
                out.append(grid)
        return out

    def _views(self, items: list[Any]) -> list[list[str]]:
        views = []
        for g in items:
            v = frame_view(g, self.frame)
            assert not isinstance(v, str), v
            views.append(v[0])
        return views

    def groups(self, items: list[Any]) -> dict[int, list[int]]:
        """Item indices by the sub-frame side each runs in."""
        out: dict[int, list[int]] = {}
        for k, v in enumerate(self._views(items)):
            out.setdefault(frame_side(len(v), len(v[0]), self.frame, "attn" if len(self.sides) > 1 else "mlp"), []).append(k)
        return out

    def encode(self, items: list[Any], side: int | None = None) -> np.ndarray:
        return frame_tokens(self._views(items), side or self.frame)

    def labels(self, items: list[Any], side: int | None = None) -> np.ndarray:
        return frame_labels(self._views(items), side or self.frame)

    def correct(self, items: list[Any], pred: np.ndarray, side: int | None = None) -> list[bool]:
        """Exact: the marked cells are exactly one shortest S -> G path."""
        return [exact_path(v, frame_marks(row, len(v), len(v[0]), side or self.frame)) is not None
                for v, row in zip(self._views(items), pred, strict=True)]


def task_data(
    skill: str, size: int, seed: int, pool: int = 0, *, frame: int = 0, mixer: str = "attn", hard: float = 0.0,
) -> SudokuData | MazeData | FrameMazeData:
    """The data of ``skill`` at ``size``, or (mazes) of every grid up to ``frame`` x ``frame``."""
    if skill == "sudoku.solve":
        if frame:
            raise InputError("--frame is for maze.route; sudoku models take --size")
        return SudokuData(size, seed, pool, hard=hard)
    if hard:
        raise InputError("the hard share (--set hard=...) is for sudoku.solve 9x9")
    if skill == "maze.route":
        return FrameMazeData(frame, seed, pool, mixer=mixer) if frame else MazeData(size, seed, pool)
    raise InputError(f"no trainable data for skill {skill!r}; choose one of {', '.join(SKILLS)}")

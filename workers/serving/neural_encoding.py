"""Grid encodings shared by training and inference of the tiny recursive models: sudoku and
maze tokens, on-path labels, the maze frame (a grid padded into the model's FxF frame with
``MAZE_PAD``, label ``IGNORE`` on pads), sub-frames, the strict exact-path check and the eight
grid symmetries that particles use."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tinyfleet_core.errors import ConfigError
from workers.kits import maze
from workers.kits.maze_geometry import crop_border, frame_view
from workers.models.trm import IGNORE, TRM

# --------------------------------------------------------------------------------------- #
# encodings shared by training and inference

MAZE_CODE = {"#": 0, ".": 1, "S": 2, "G": 3}


__all__ = [
    "MAZE_CODE",
    "sudoku_tokens",
    "maze_tokens",
    "maze_labels",
    "crop_border",
    "maze_seq_len",
    "decode_maze",
    "MAZE_PAD",
    "frame_view",
    "frame_tokens",
    "frame_labels",
    "frame_sides",
    "frame_side",
    "frame_embed",
    "frame_state",
    "sub_model",
    "frame_marks",
    "exact_path",
    "Dihedral",
    "dihedral",
]


def sudoku_tokens(puzzles: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
    """(B, n*n) int64 of cell values, 0 = blank; vocab n + 1. Answer labels are digit - 1."""
    return np.asarray([[v for row in p for v in row] for p in puzzles], dtype=np.int64)


def maze_tokens(grids: Sequence[Sequence[str]]) -> np.ndarray:
    """(B, h*w) int64: 0 wall, 1 open, 2 start, 3 goal."""
    return np.asarray([[MAZE_CODE[ch] for row in g for ch in row] for g in grids], dtype=np.int64)


def maze_labels(grids: Sequence[Sequence[str]]) -> np.ndarray:
    """(B, h*w) int64: 1 on the shortest S -> G path (both ends included), else 0."""
    out = np.zeros((len(grids), len(grids[0]) * len(grids[0][0])), dtype=np.int64)
    for k, g in enumerate(grids):
        w = len(g[0])
        for r, c in maze.bfs_path(g):
            out[k, r * w + c] = 1
    return out


def maze_seq_len(side: int) -> int:
    """Cells a maze model of grid side ``side`` sees: the interior, (side - 2) ** 2."""
    return (side - 2) ** 2


def decode_maze(grid: Sequence[str], on_path: np.ndarray) -> list[tuple[int, int]] | None:
    """A path from S to G through open cells the model marked on-path, found by walking the
    marked cells from S (breadth first); None when the marks do not connect S to G."""
    h, w = len(grid), len(grid[0])
    start, goal = maze.find_cell(grid, "S"), maze.find_cell(grid, "G")
    marked = on_path.reshape(h, w).astype(bool)
    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if (r, c) == goal:
            path = [goal]
            while (p := prev[path[-1]]) is not None:
                path.append(p)
            return path[::-1]
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if (
                0 <= nr < h
                and 0 <= nc < w
                and (nr, nc) not in prev
                and grid[nr][nc] != "#"
                and (marked[nr, nc] or (nr, nc) == goal)
            ):
                prev[(nr, nc)] = (r, c)
                queue.append((nr, nc))
    return None


MAZE_PAD = 4
"""The token of a frame cell outside the grid (maze vocab 5 in a frame model)."""


def frame_tokens(grids: Sequence[Sequence[str]], frame: int) -> np.ndarray:
    """(B, frame*frame) int64: each grid at the frame's top-left, 0 wall, 1 open, 2 start,
    3 goal, MAZE_PAD outside the grid. Grids must fit (see :func:`frame_view`)."""
    out = np.full((len(grids), frame, frame), MAZE_PAD, dtype=np.int64)
    for k, g in enumerate(grids):
        out[k, : len(g), : len(g[0])] = [[MAZE_CODE[ch] for ch in row] for row in g]
    return out.reshape(len(grids), frame * frame)


def frame_labels(grids: Sequence[Sequence[str]], frame: int) -> np.ndarray:
    """(B, frame*frame) int64: 1 on the grid's canonical shortest path
    (:func:`maze.canonical_path`), 0 elsewhere in the grid, IGNORE (-100) on padding."""
    out = np.full((len(grids), frame, frame), IGNORE, dtype=np.int64)
    for k, g in enumerate(grids):
        out[k, : len(g), : len(g[0])] = 0
        for r, c in maze.canonical_path(g):
            out[k, r, c] = 1
    return out.reshape(len(grids), frame * frame)


def frame_sides(frame: int, mixer: str = "attn") -> tuple[int, ...]:
    """The square sub-frames (top-left side x side of the frame) a frame model runs a grid
    in: the smallest that holds it. Attention reads any length, so small grids cost little
    (positions are the frame's own), and convolution any side (it has no positions); a
    sequence-MLP model reads only the whole frame."""
    return (*(b for b in (6, 8, 10, 12, 15, 20, 25) if b < frame), frame) if mixer in ("attn", "conv") else (frame,)


def frame_side(rows: int, cols: int, frame: int, mixer: str = "attn") -> int:
    """The sub-frame side a rows x cols grid (as the model reads it, ring cropped) runs in."""
    return next(b for b in frame_sides(frame, mixer) if b >= max(rows, cols))


def _frame_index(frame: int, side: int, prefix: int) -> torch.Tensor:
    """Positions of the prefix and of the top-left side x side cells of a frame x frame grid."""
    r = torch.arange(side)
    cells = (r[:, None] * frame + r[None, :]).reshape(-1) + prefix
    return torch.cat([torch.arange(prefix), cells])


def frame_embed(model: TRM, tokens: torch.Tensor, frame: int, side: int) -> torch.Tensor:
    """``model.embed`` for a grid in the top-left side x side of the frame: (B, side*side)
    -> (B, P + side*side, D), the frame's positions for those cells (keeps gradients)."""
    P = model.cfg.prefix
    cells = model.tok(tokens) * math.sqrt(model.cfg.d)  # (B, s*s, D)
    pre = model.prefix[:P].expand(tokens.shape[0], -1, -1)  # (B, P, D)
    if model.cfg.mixer == "conv":
        return torch.cat([pre, cells], 1)  # no positions
    idx = _frame_index(frame, side, P).to(model.pos.device)
    return torch.cat([pre, cells], 1) + model.pos[idx]


def frame_state(model: TRM, batch: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.init_state`` for a side x side sub-frame."""
    L = model.cfg.prefix + side * side
    return model.y0.expand(batch, L, -1).clone(), model.z0.expand(batch, L, -1).clone()


def sub_model(model: TRM, frame: int, side: int) -> TRM:
    """A TRM reading the top-left side x side of ``model``'s frame, exactly as ``model``
    does (its weights shared, positions gathered from the frame's): what inference runs a
    small grid in. ``side == frame`` is ``model`` itself."""
    if side == frame:
        return model
    if model.cfg.mixer not in ("attn", "conv") or not isinstance(model, TRM):
        raise ConfigError(f"only an attention or conv TRM runs in a sub-frame; this one is {model.cfg.kind} {model.cfg.mixer}")
    sub = TRM(dataclasses.replace(model.cfg, seq_len=side * side))
    sub.tok, sub.net, sub.out_head, sub.halt_head = model.tok, model.net, model.out_head, model.halt_head
    sub.prefix = model.prefix
    with torch.no_grad():
        sub.pos = torch.nn.Parameter(model.pos[_frame_index(frame, side, model.cfg.prefix).to(model.pos.device)].clone())
        sub.y0.copy_(model.y0)
        sub.z0.copy_(model.z0)
    return sub.to(model.pos.device).eval() if not model.training else sub.to(model.pos.device)


def frame_marks(pred: np.ndarray, rows: int, cols: int, frame: int) -> np.ndarray:
    """The (rows, cols) on-path marks of a grid placed in the frame, from one row of
    predictions (frame*frame,)."""
    return np.asarray(pred).reshape(frame, frame)[:rows, :cols]


def exact_path(grid: Sequence[str], on_path: np.ndarray) -> list[tuple[int, int]] | None:
    """The path when the cells marked on-path are exactly one shortest S -> G path (no
    extra marked cell, no connected superset), else None: what exact accuracy counts."""
    marks = np.asarray(on_path).reshape(len(grid), len(grid[0])).astype(bool)
    path = decode_maze(grid, marks)
    if path is None or int(marks.sum()) != len(path) or not all(marks[r, c] for r, c in path):
        return None
    return path if maze.check_path(grid, path) is None else None


@dataclass(frozen=True)
class Dihedral:
    """One of the 8 symmetries of a square grid: ``k`` quarter turns, then a mirror."""

    k: int
    flip: bool

    def apply(self, grid: Sequence[str]) -> list[str]:
        a = np.array([list(row) for row in grid])
        a = np.rot90(a, self.k)
        if self.flip:
            a = a[:, ::-1]
        return ["".join(row) for row in a]

    def invert_cell(self, cell: tuple[int, int], shape: int | tuple[int, int]) -> tuple[int, int]:
        """Map a cell of the transformed grid back to the original grid of ``shape``
        (rows, cols), or side for a square one. Odd quarter turns swap rows and columns."""
        h, w = (shape, shape) if isinstance(shape, int) else shape
        idx = np.arange(h * w).reshape(h, w)
        t = np.rot90(idx, self.k)
        if self.flip:
            t = t[:, ::-1]
        orig = int(t[cell])
        return (orig // w, orig % w)


def dihedral(particle: int) -> Dihedral:
    """Particle 0 is the identity; particles 1..7 are the other symmetries (then they repeat)."""
    p = particle % 8
    return Dihedral(p % 4, p >= 4)

"""Where a maze grid sits in a model's input: its wall ring and the frame it fits in.

Pure grid geometry (no torch), so the tiers can decide which grids a served model reads
without importing the model: see :mod:`workers.serving.catalog`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["crop_border", "frame_view"]


def crop_border(grid: Sequence[str]) -> list[str] | None:
    """The inside of a grid whose outer ring is all wall (the model never sees the ring);
    None when the ring has an open cell."""
    h, w = len(grid), len(grid[0])
    ring = grid[0] + grid[-1] + "".join(row[0] + row[-1] for row in grid)
    if h < 3 or w < 3 or set(ring) != {"#"}:
        return None
    return [row[1:-1] for row in grid[1:-1]]


def frame_view(grid: Sequence[str], frame: int) -> tuple[list[str], int] | str:
    """Where ``grid`` lies in a ``frame`` x ``frame`` model: (the grid the model reads, its
    offset in ``grid``). A wall ring is always cropped off (it holds nothing a path can use),
    so a ringed grid of up to (frame + 2) x (frame + 2) fits; the rest is placed at the frame's
    top-left corner and padded. A grid too large for the frame gives the reason, as a str."""
    h, w = len(grid), len(grid[0])
    inner = crop_border(grid)
    seen, off = (inner, 1) if inner is not None else (list(grid), 0)
    if len(seen) > frame or len(seen[0]) > frame:
        return (f"the grid is {h}x{w}, larger than this model's {frame}x{frame} frame (it reads grids "
                f"up to {frame}x{frame}, or {frame + 2}x{frame + 2} with a wall ring); the next tier routes it")
    return seen, off

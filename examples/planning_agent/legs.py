"""Leg grids for ``maze.route`` steps: the whole city when the tiny model reads it, else a
window the tiny models can read.

A TRM frame checkpoint (``maze.route-trm-fF``) reads any grid up to F x F (F + 2 with a wall
ring): a city that fits is routed whole, every leg from the bottom of the ladder. A larger
city is cut into windows: a leg between nearby stops often lies inside a window (its border
walled off), which is used as the step's grid when its shortest path is as short as the
city's, so a shortest path in the window is a shortest path in the city. Window sides are
the frame (with its ring, F + 2) and the per-size checkpoints' sides. The window's offset
travels with the leg; ``delivery.itinerary`` shifts the path back and its verifier re-checks
every leg against the whole city. Other legs get the whole city grid and start at the
ladder's first tier that reads it (``start_tier``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from workers.kits import maze
from workers.registry import SkillRegistry
from workers.serving.neural import available_sizes, checkpoint_path, frame_view, served_frames

from .scenario import Cell

__all__ = ["LegGrid", "city_fits", "city_start_tier", "frame_side", "leg_grid", "window_sizes"]

_MIN_EXACT = 0.5  # as the TRM worker: a checkpoint measured below this is bundled but not served


@dataclass(frozen=True)
class LegGrid:
    """The grid a leg is routed on (with S and G), where its (0, 0) lies in the city, and
    its side when it is a window (None for the whole city)."""

    grid: list[str]
    offset: Cell
    window: int | None


def _has_tier(registry: SkillRegistry, tier: str) -> bool:
    return "maze.route" in registry and tier in registry.get("maze.route").tier_names()


def frame_side(registry: SkillRegistry, tier: str = "trm") -> int | None:
    """The frame of the served frame checkpoint of ``tier`` (the largest), None without one."""
    frames = served_frames("maze.route", tier) if _has_tier(registry, tier) else []
    return frames[-1] if frames else None


def city_fits(grid: Sequence[str], frame: int | None) -> bool:
    """Whether the whole city fits a frame model's frame (then no leg needs a window)."""
    return frame is not None and not isinstance(frame_view(grid, frame), str)


def window_sizes(registry: SkillRegistry, tier: str = "trm") -> list[int]:
    """Window sides the ``maze.route`` tier ``tier`` serves: sizes of its bundled checkpoints
    whose model card measured enough exact answers, and a served frame checkpoint's frame
    with its wall ring (F + 2); none when the tier is not in the ladder."""
    if not _has_tier(registry, tier):
        return []
    sizes = []
    for size in available_sizes("maze.route", tier):
        card = json.loads(checkpoint_path("maze.route", tier, size).with_suffix(".json").read_text())
        if (card.get("eval") or {}).get("exact", 1.0) >= _MIN_EXACT:
            sizes.append(size)
    frame = frame_side(registry, tier)
    if frame is not None:
        sizes.append(frame + 2)
    return sorted(set(sizes))


def city_start_tier(registry: SkillRegistry, tier: str = "trm", grid: Sequence[str] | None = None) -> str | None:
    """Where a whole-city leg starts its ladder: None (the bottom) when ``tier`` has a frame
    model that reads the whole ``grid``, else the tier after ``tier``, which only reads
    windows (None when ``tier`` is not in the ladder)."""
    if "maze.route" not in registry:
        return None
    if grid is not None and city_fits(grid, frame_side(registry, tier)):
        return None
    names = registry.get("maze.route").tier_names()
    if tier not in names or names.index(tier) + 1 >= len(names):
        return None
    return names[names.index(tier) + 1]


def _window(grid: Sequence[str], r0: int, c0: int, n: int) -> list[str]:
    rows = []
    for r in range(n):
        row = grid[r0 + r][c0 : c0 + n]
        if r in (0, n - 1):
            row = "#" * n
        else:
            row = "#" + row[1:-1] + "#"
        rows.append(row)
    return rows


def leg_grid(grid: Sequence[str], a: Cell, b: Cell, sizes: Sequence[int] = (), frame: int | None = None) -> LegGrid:
    """The whole city when it fits ``frame`` (a frame model reads it), else the smallest
    window of a side in ``sizes`` that holds a shortest a -> b path of the city, else the
    whole city grid. Windows start on even rows and columns (the city's street lattice then
    lines up with the mazes the checkpoints were trained on)."""
    if city_fits(grid, frame):
        return LegGrid(maze.with_endpoints(grid, a, b), (0, 0), None)
    best = maze.bfs_distances(grid, a).get(b)
    h, w = len(grid), len(grid[0])
    if best is not None:
        for n in sorted(sizes):
            if n > h or n > w:
                continue
            for r0 in range(max(0, max(a[0], b[0]) - n + 2), min(a[0], b[0])):
                if r0 % 2 or r0 + n > h:
                    continue
                for c0 in range(max(0, max(a[1], b[1]) - n + 2), min(a[1], b[1])):
                    if c0 % 2 or c0 + n > w:
                        continue
                    win = _window(grid, r0, c0, n)
                    la, lb = (a[0] - r0, a[1] - c0), (b[0] - r0, b[1] - c0)
                    if maze.bfs_distances(win, la).get(lb) == best:
                        return LegGrid(maze.with_endpoints(win, la, lb), (r0, c0), n)
    return LegGrid(maze.with_endpoints(grid, a, b), (0, 0), None)

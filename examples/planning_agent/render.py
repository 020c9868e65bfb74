"""The day's map as a PNG: streets, blocked cells, the depot, the stops (served ones numbered
in visiting order, sized by expected demand) and the route. Matplotlib's Agg canvas, no
display and no global backend switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .scenario import Scenario

__all__ = ["ROUTE_COLOR", "render_day"]

ROUTE_COLOR = (0.85, 0.11, 0.11)
_SERVED = (0.12, 0.38, 0.75)
_DROPPED = (0.55, 0.55, 0.55)
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}


def render_day(scenario: Scenario, itinerary: dict[str, Any] | None, path: str | Path, *, show_route: bool = True) -> Path:
    """Draw the map (and the itinerary's route unless ``show_route`` is False); write ``path``."""
    grid = scenario.grid
    h, w = len(grid), len(grid[0])
    img = np.array([[0.22 if ch == "#" else 0.97 for ch in row] for row in grid])
    fig = Figure(figsize=(7.5, 8.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.1, 0.92, 0.8))
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    visits = {v["id"]: v for v in (itinerary or {}).get("visits", [])}
    if itinerary is not None and show_route and len(itinerary.get("path", [])) > 1:
        pts = np.array(itinerary["path"], dtype=float)
        ax.plot(pts[:, 1], pts[:, 0], color=ROUTE_COLOR, linewidth=3.5, solid_capstyle="round", zorder=3)
    demand = [float(v["expected_demand"]) for v in visits.values()] or [1.0]
    top = max(demand) or 1.0
    for st in scenario.stops:
        r, c = st.cell
        v = visits.get(st.id)
        if v is None:
            ax.scatter([c], [r], s=90, facecolors="white", edgecolors=[_DROPPED], linewidths=2, zorder=4)
            ax.annotate(st.id, (c, r), xytext=(6, -12), textcoords="offset points", fontsize=7, color=_DROPPED, zorder=5, bbox=_LABEL_BOX)
            continue
        size = 120 + 260 * float(v["expected_demand"]) / top
        ax.scatter([c], [r], s=size, color=[_SERVED], edgecolors="white", linewidths=1.5, zorder=4)
        ax.annotate(str(v["seq"]), (c, r), ha="center", va="center", fontsize=8, color="white", weight="bold", zorder=5)
        ax.annotate(  # alternate above / below so neighbouring labels do not overlap
            f"{st.id} {v['arrive_clock']}", (c, r), xytext=(8, 8 if v["seq"] % 2 else -14), textcoords="offset points",
            fontsize=7, color=_SERVED, zorder=5, bbox=_LABEL_BOX,
        )
    dr, dc = scenario.depot
    ax.scatter([dc], [dr], s=220, marker="s", color="black", zorder=6)
    ax.annotate("depot", (dc, dr), xytext=(8, -12), textcoords="offset points", fontsize=8, weight="bold", zorder=6)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    if itinerary is not None:
        title = (
            f"{scenario.name}: {len(visits)}/{len(scenario.stops)} stops, expected demand "
            f"{itinerary['expected_demand']:.1f} units, {itinerary['total_moves']} moves, back at {itinerary['return_clock']}"
        )
    else:
        title = f"{scenario.name}: no itinerary"
    fig.suptitle(title, fontsize=10, y=0.96)
    handles = [
        Line2D([], [], color=ROUTE_COLOR, linewidth=3, label="route"),
        Line2D([], [], marker="o", linestyle="", color=_SERVED, markersize=9, label="served stop (visit order)"),
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor=_DROPPED, markersize=9, label="dropped stop"),
        Line2D([], [], marker="s", linestyle="", color="black", markersize=9, label="depot"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out

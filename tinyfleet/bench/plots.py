"""One PNG per benchmark (matplotlib, Agg backend), drawn from its rows.

A benchmark may say how in ``result["plot"]``: ``kind`` (``bar`` | ``line``), ``x`` (the
column on the x axis), ``y`` (columns to draw), optional ``group`` (one series per value of
this column), ``logy`` (a symlog scale for the first panel), ``title`` and optional ``rows``
(the rows to draw, when not all of the result's rows are points of the plot). A bar chart draws one
panel per ``y`` column (their units differ); a line chart draws every ``y`` on one axis. Without it the first text column labels bars of the
first numeric column.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

__all__ = ["plot_benchmark"]

_PREFERRED = ("items/s", "per s", "speed-up", "verified %")


def _default_spec(name: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    numeric = [c for c in cols if all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows)]
    text = [c for c in cols if c not in numeric]
    if not numeric:
        return None
    y = next((c for c in _PREFERRED if c in numeric), numeric[0])
    return {"kind": "bar", "x": text[0] if text else numeric[0], "y": [y], "title": name, "label_cols": text[:2]}


def plot_benchmark(name: str, result: dict[str, Any], out: Path) -> Path | None:
    """Write ``out/<name>.png``; None when the result has nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[dict[str, Any]] = result.get("rows") or []
    spec = result.get("plot") or _default_spec(name, rows)
    if spec is not None and spec.get("rows") is not None:
        rows = list(spec["rows"])
    if not rows or spec is None:
        return None
    ys: list[str] = list(spec["y"])
    bar = spec.get("kind") != "line"
    panels = len(ys) if bar else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels + 2.5, 4), dpi=100, squeeze=False)
    try:
        if not bar:
            ax = axes[0][0]
            groups = sorted({str(r[spec["group"]]) for r in rows}) if spec.get("group") else [""]
            for g in groups:
                mine = [r for r in rows if not g or str(r[spec["group"]]) == g]
                for y in ys:
                    label = " ".join(p for p in (g, y if len(ys) > 1 or not g else "") if p)
                    ax.plot([r[spec["x"]] for r in mine], [r[y] for r in mine], marker="o", label=label or y)
            ax.set_xlabel(spec["x"])
            ax.set_ylabel(", ".join(ys))
            ax.legend(fontsize=8)
            if spec.get("logy"):
                ax.set_yscale("symlog")
        else:
            label_cols = spec.get("label_cols") or [spec["x"], *([spec["group"]] if spec.get("group") else [])]
            labels = ["\n".join(textwrap.fill(str(r.get(c, "")), 16) for c in label_cols) for r in rows]
            for ax, y in zip(axes[0], ys, strict=True):
                bars = ax.bar(range(len(rows)), [float(r.get(y, 0) or 0) for r in rows], 0.7)
                ax.bar_label(bars, fmt="%.3g", fontsize=7)
                ax.set_xticks(range(len(rows)), labels, fontsize=7)
                ax.set_ylabel(y)
                if spec.get("logy") and y == ys[0]:
                    ax.set_yscale("symlog")
        fig.suptitle(str(spec.get("title", name)), fontsize=10)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        return path
    finally:
        plt.close(fig)


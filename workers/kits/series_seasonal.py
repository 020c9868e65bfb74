"""The time axis and seasons of a series: the grid of its median step (irregular series), the
season inferred from its autocorrelation, and additive seasonal indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["F", "effective_season", "grid_index", "infer_season", "seasonal_indices"]

F = np.ndarray
"""A float (or int) numpy array; the series helpers' shorthand."""


def grid_index(timestamps: Sequence[float] | None, n: int) -> tuple[F, float]:
    """Each observation's step on a regular grid of the median time step, and that step."""
    if timestamps is None:
        return np.arange(n, dtype=np.int64), 1.0
    ts = np.asarray(timestamps, dtype=float)
    dt = float(np.median(np.diff(ts)))
    k = np.rint((ts - ts[0]) / dt).astype(np.int64)
    k = np.maximum.accumulate(k)  # monotone even after rounding jittered steps
    return k, dt


def infer_season(values: F, max_period: int | None = None) -> int:
    """The period with the strongest autocorrelation peak of the detrended series, or 1."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    hi = min(max_period or 60, n // 3)
    if hi < 2:
        return 1
    d = np.diff(x) if n > 3 else x
    d = d - d.mean()
    denom = float(d @ d)
    if denom <= 0:
        return 1
    acf = np.array([float(d[:-lag] @ d[lag:]) / denom for lag in range(1, hi + 1)])
    best, best_val = 1, 0.3
    for lag in range(2, hi + 1):
        v = acf[lag - 1]
        if v > best_val and v >= acf[lag - 2] and (lag == hi or v >= acf[lag]):
            best, best_val = lag, v
    return best


def effective_season(season: int | None, values: F) -> int:
    """The season a model uses: the given one, else inferred; 1 when too few cycles are seen."""
    s = season if season is not None else infer_season(values)
    return s if s > 1 and len(values) >= 2 * s else 1


def seasonal_indices(values: F, k: F, season: int) -> F:
    """Additive seasonal indices (length ``season``, mean 0) from a centred moving-average
    detrend; medians per phase keep spikes from leaking into them."""
    x = np.asarray(values, dtype=float)
    if season <= 1 or len(x) < 2 * season:
        return np.zeros(max(season, 1))
    w = season if season % 2 else season + 1
    kern = np.ones(w) / w
    if season % 2 == 0:  # a 2 x s moving average for even seasons
        kern = np.convolve(np.ones(season) / season, np.ones(2) / 2)
        w = len(kern)
    pad = w // 2
    xp = np.concatenate([np.full(pad, x[:season].mean()), x, np.full(pad, x[-season:].mean())])
    trend = np.convolve(xp, kern, mode="valid")[: len(x)]
    det = x - trend
    phase = np.asarray(k) % season
    # grouped medians, vectorised: sort by (phase, value), take each group's middle
    order = np.lexsort((det, phase))
    sd = det[order]
    counts = np.bincount(phase, minlength=season)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = np.minimum(starts + np.maximum(counts - 1, 0) // 2, len(sd) - 1)
    hi = np.minimum(starts + counts // 2, len(sd) - 1)
    idx = np.where(counts > 0, (sd[lo] + sd[hi]) / 2, 0.0)
    centred: np.ndarray = idx - idx.mean()
    return centred

"""A seeded generator of synthetic series (trends, random walks, seasonalities, quasi-periodic
cycles, regime shifts, AR(1) and heavy-tailed noise, irregular timestamps) and an anomaly
injector, for training and benchmarks.

scipy (the AR(1) filter) is imported inside :func:`generate_series`, so importing the series kit
does not load it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workers.kits.series_seasonal import F

__all__ = ["Synth", "generate_series", "inject_anomalies"]


@dataclass(frozen=True)
class Synth:
    """A generated series: values at timestamps, its main season (1 = none), anomaly labels."""

    values: F
    timestamps: F
    season: int
    anomalies: F


_SEASONS = (4, 6, 7, 12, 24)


def generate_series(rng: np.random.Generator, n: int, regular_tail: int = 0) -> Synth:
    """One synthetic series of ``n`` points: level, trend (linear, damped or piecewise),
    random-walk level, AR(1) and white noise at many noise levels, up to two seasonalities
    and a quasi-periodic cycle, regime shifts (level, slope, variance), and sometimes missing
    or jittered samples (irregular timestamps; the last ``regular_tail`` steps stay regular,
    as a forecast's future grid is)."""
    # time axis: regular, with gaps (missing samples), or jittered
    u = rng.random()
    if u < 0.15:
        dt = np.where(rng.random(n) < rng.uniform(0.05, 0.25), rng.integers(2, 4, n), 1).astype(float)
    elif u < 0.25:
        dt = 1.0 + rng.uniform(-0.3, 0.3, n)
    else:
        dt = np.ones(n)
    if regular_tail:
        dt[n - regular_tail :] = 1.0
    t = np.concatenate([[0.0], np.cumsum(dt[1:])])
    sigma = float(np.exp(rng.uniform(-3.0, 0.5)))  # noise relative to the signal's unit scale
    y = np.zeros(n)
    if rng.random() < 0.75:  # trend
        slope = rng.normal(0, 0.05) * (3.0 if rng.random() < 0.3 else 1.0)
        if rng.random() < 0.3:  # damped
            phi = rng.uniform(0.9, 0.995)
            y += slope * (1 - phi**t) / (1 - phi)
        else:
            y += slope * t
        if rng.random() < 0.2:  # slope change
            c = rng.uniform(0.3, 0.9) * t[-1]
            y += rng.normal(0, 0.05) * np.maximum(t - c, 0)
    if rng.random() < 0.5:  # random-walk level (or smooth integrated walk)
        steps = rng.normal(0, rng.uniform(0.05, 0.5) * sigma + 0.01, n) * np.sqrt(dt)
        rw = np.cumsum(steps)
        y += np.cumsum(rw) * 0.1 if rng.random() < 0.15 else rw
    season = 1
    if rng.random() < 0.65:  # seasonality: 1-3 harmonics, slowly drifting amplitude
        season = int(rng.choice(_SEASONS))
        amp = float(np.exp(rng.uniform(-1.5, 1.0)))
        drift = 1 + rng.normal(0, 0.003) * t
        for h in range(1, int(rng.integers(1, 4)) + 1):
            y += amp / h * drift * np.sin(2 * np.pi * h * t / season + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.2:  # a second seasonality
            s2 = int(rng.choice([s for s in _SEASONS if s != season]))
            y += 0.4 * amp * np.sin(2 * np.pi * t / s2 + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.2:  # quasi-periodic cycle (sunspot-like): varying period and amplitude
        period = rng.uniform(8, 30)
        ph = 2 * np.pi * np.cumsum(dt / (period * (1 + 0.1 * rng.standard_normal(n)).clip(0.5)))
        env = np.exp(np.convolve(rng.normal(0, 0.3, n), np.ones(10) / 10, mode="same"))
        y += float(np.exp(rng.uniform(-0.5, 1.0))) * env * np.abs(np.sin(ph / 2)) ** 1.5
    if rng.random() < 0.3:  # level shift
        y += rng.normal(0, 1.0) * (t > rng.uniform(0.2, 0.95) * t[-1])
    noise = rng.standard_normal(n) if rng.random() < 0.7 else rng.standard_t(3, n) / 1.7
    if rng.random() < 0.4:  # AR(1)
        from scipy.signal import lfilter  # here, not at import: only generating needs scipy

        phi = rng.uniform(0.2, 0.9)
        noise = lfilter([1.0], [1.0, -phi], noise) * math.sqrt(1 - phi**2)
    scale_noise = np.where(t > rng.uniform(0.3, 1.5) * t[-1], rng.uniform(0.5, 2.0), 1.0) if rng.random() < 0.1 else 1.0
    y += sigma * noise * scale_noise
    level = rng.normal(0, 5)
    unit = float(np.exp(rng.uniform(-2, 6)))
    return Synth(values=(level + y) * unit, timestamps=t, season=season, anomalies=np.zeros(0, dtype=np.int64))


def inject_anomalies(rng: np.random.Generator, s: Synth, rate: float = 0.01, size: float = 6.0) -> Synth:
    """Add spikes at ``rate`` of the points (skipping the first tenth): each of ``size`` to
    2x ``size`` times the series' one-step noise (median absolute difference), either sign."""
    x = s.values.copy()
    n = len(x)
    noise = float(np.median(np.abs(np.diff(x)))) / 0.954 + 1e-12  # MAD of diffs of white noise ~ 0.954 sigma
    k = max(1, int(round(rate * n)))
    idx = np.sort(rng.choice(np.arange(n // 10, n), size=min(k, n - n // 10), replace=False))
    x[idx] += rng.choice([-1.0, 1.0], idx.size) * rng.uniform(size, 2 * size, idx.size) * noise
    return Synth(values=x, timestamps=s.timestamps, season=s.season, anomalies=idx)

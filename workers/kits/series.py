"""Series task kit: payload models for ``series.forecast`` and ``series.anomaly``, input
validation, seasonal helpers, metrics, a seeded generator of synthetic series, the classical
forecaster and anomaly scorer (the offline last tiers), the backtest input (what a tier
answers so the verifier can score it on values it never saw), and the backtest verifier.

Conventions: a series is ``values[i]`` observed at ``timestamps[i]`` (default ``i``). Irregular
series are placed on a grid of their median time step (``grid_index``); seasons count grid steps.
A forecast covers the next ``horizon`` grid steps after the last observation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.signal import lfilter

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Verdict
from workers.base import Verifier

__all__ = [
    "MIN_VALUES",
    "MAX_VALUES",
    "MAX_HORIZON",
    "Z90",
    "ForecastInput",
    "ForecastOutput",
    "AnomalyInput",
    "AnomalyOutput",
    "grid_index",
    "infer_season",
    "effective_season",
    "seasonal_indices",
    "seasonal_naive",
    "naive_scale",
    "mase",
    "coverage",
    "backtest_window",
    "backtest_input",
    "Synth",
    "generate_series",
    "inject_anomalies",
    "classical_forecast",
    "classical_anomaly_scores",
    "ForecastBacktestVerifier",
]

MIN_VALUES = 8
MAX_VALUES = 100_000
MAX_HORIZON = 1_000
Z90 = 1.2815515655446004
"""The standard normal's 90% quantile: p10/p90 = mean -/+ Z90 * sigma."""

F = np.ndarray


# ---------------------------------------------------------------------------- payloads


def _check_values(values: list[float], timestamps: list[float] | None) -> None:
    n = len(values)
    if n < MIN_VALUES:
        raise InputError(f"values has {n} points; a series needs at least {MIN_VALUES}")
    if n > MAX_VALUES:
        raise InputError(f"values has {n} points; at most {MAX_VALUES} are accepted")
    arr = np.asarray(values, dtype=float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"values[{bad[0]}] is {values[bad[0]]}; every value must be a finite number (no NaN or inf)")
    if timestamps is None:
        return
    if len(timestamps) != n:
        raise InputError(f"timestamps has {len(timestamps)} entries but values has {n}; give one timestamp per value")
    ts = np.asarray(timestamps, dtype=float)
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        raise InputError(f"timestamps[{bad[0]}] is {timestamps[bad[0]]}; timestamps must be finite")
    back = np.flatnonzero(np.diff(ts) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise InputError(
            f"timestamps must be strictly increasing; timestamps[{i}]={timestamps[i]} follows {timestamps[i - 1]}"
        )


class ForecastInput(BaseModel):
    """``{"values": [float], "timestamps": [float] (optional), "horizon": int, "season": int (optional)}``."""

    model_config = ConfigDict(extra="forbid")
    values: list[float]
    timestamps: list[float] | None = None
    horizon: int
    season: int | None = None

    @model_validator(mode="after")
    def _check(self) -> ForecastInput:
        _check_values(self.values, self.timestamps)
        if self.horizon <= 0:
            raise InputError(f"horizon is {self.horizon}; it must be a positive number of steps")
        limit = min(MAX_HORIZON, 4 * len(self.values))
        if self.horizon > limit:
            raise InputError(
                f"horizon {self.horizon} is too large for {len(self.values)} values; at most {limit} "
                f"(4x the history, and never over {MAX_HORIZON})"
            )
        if self.season is not None and not 1 <= self.season <= len(self.values) // 2:
            raise InputError(
                f"season is {self.season}; it must be between 1 and half the series length ({len(self.values) // 2})"
            )
        return self


class ForecastOutput(BaseModel):
    """``{"mean": [float], "p10": [float], "p90": [float]}``.

    ``mean`` is the point forecast (the median, p50, for the quantile models). Other fields
    an answer carries (an old producer-made ``backtest``) are ignored, never trusted."""

    mean: list[float]
    p10: list[float]
    p90: list[float]


class AnomalyInput(BaseModel):
    """``{"values": [float], "timestamps": [float] (optional), "season": int (optional)}``."""

    model_config = ConfigDict(extra="forbid")
    values: list[float]
    timestamps: list[float] | None = None
    season: int | None = None

    @model_validator(mode="after")
    def _check(self) -> AnomalyInput:
        _check_values(self.values, self.timestamps)
        if self.season is not None and not 1 <= self.season <= len(self.values) // 2:
            raise InputError(
                f"season is {self.season}; it must be between 1 and half the series length ({len(self.values) // 2})"
            )
        return self


class AnomalyOutput(BaseModel):
    """``{"scores": [float], "flagged": [int]}``: one score per point (a robust z-like size of
    the surprise), and the indices whose score passed the flag threshold."""

    scores: list[float]
    flagged: list[int] = Field(default_factory=list)


# ---------------------------------------------------------------------------- seasonal helpers


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


def seasonal_naive(values: F, horizon: int, season: int) -> F:
    """Repeat the last season (the last value when ``season`` is 1 or longer than the history)."""
    x = np.asarray(values, dtype=float)
    s = season if 1 <= season <= len(x) else 1
    last = x[-s:]
    return np.array([last[i % s] for i in range(horizon)])


def naive_scale(history: F, season: int) -> float:
    """In-sample mean absolute error of the seasonal-naive one-step forecast (MASE's scale)."""
    x = np.asarray(history, dtype=float)
    m = season if 1 <= season < len(x) else 1
    if len(x) <= m:
        return 0.0
    return float(np.mean(np.abs(x[m:] - x[:-m])))


def mase(actual: F, forecast: F, history: F, season: int) -> float:
    """Mean absolute scaled error; ``inf`` when the history is flat and the forecast is not exact."""
    err = float(np.mean(np.abs(np.asarray(actual, dtype=float) - np.asarray(forecast, dtype=float))))
    scale = naive_scale(history, season)
    if scale > 0:
        return err / scale
    return 0.0 if err == 0 else math.inf


def coverage(actual: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of ``actual`` inside ``[lo, hi]``."""
    a = np.asarray(actual, dtype=float)
    return float(np.mean((a >= np.asarray(lo)) & (a <= np.asarray(hi))))


def backtest_window(n: int, horizon: int) -> int:
    """How many of the last values a backtest holds out: the horizon, at most a fifth of the series."""
    return max(1, min(horizon, n // 5))


def backtest_input(inp: BaseModel) -> ForecastInput:
    """The forecast job whose answer the verifier scores: ``inp`` with its last
    ``backtest_window`` values (and timestamps) removed, asking for exactly that many steps.

    The held-out values are not in it, so whoever answers it cannot see the truth it is
    scored on. It is built unvalidated: a history of 8 or 9 values leaves fewer than
    ``MIN_VALUES`` after the cut, which a user may not send but a backtest may use; a given
    season longer than half the cut history becomes 1 (too few cycles to use)."""
    assert isinstance(inp, ForecastInput)
    n = len(inp.values)
    w = backtest_window(n, inp.horizon)
    season = inp.season if inp.season is not None and inp.season <= (n - w) // 2 else (None if inp.season is None else 1)
    return ForecastInput.model_construct(
        values=list(inp.values[:-w]),
        timestamps=list(inp.timestamps[:-w]) if inp.timestamps is not None else None,
        horizon=w,
        season=season,
    )


# ---------------------------------------------------------------------------- synthetic series


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


# ---------------------------------------------------------------------------- classical methods


def classical_forecast(values: F, horizon: int, season: int) -> tuple[F, F, F]:
    """Holt-Winters exponential smoothing (statsmodels): additive damped trend, additive
    seasonality when at least two seasons are seen. Intervals from the one-step residual
    spread, widened with the horizon as for ETS(A,N,N): ``sigma_h^2 = sigma^2 (1 + (h-1) alpha^2)``.
    Returns (mean, p10, p90)."""
    mean, lo, hi, _ = classical_fit(values, horizon, season)
    return mean, lo, hi


def classical_fit(values: F, horizon: int, season: int) -> tuple[F, F, F, float]:
    """:func:`classical_forecast` plus the fit's mean absolute one-step in-sample residual
    (a self-assessment from the history alone; compare it with :func:`naive_scale`)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    x = np.asarray(values, dtype=float)
    n = len(x)
    if float(np.ptp(x)) == 0.0:
        flat = np.full(horizon, x[-1])
        return flat, flat.copy(), flat.copy(), 0.0
    s = season if season > 1 and n >= 2 * season + 2 else 1
    trend = "add" if n >= 10 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(
            x,
            trend=trend,
            damped_trend=trend is not None,
            seasonal="add" if s > 1 else None,
            seasonal_periods=s if s > 1 else None,
            initialization_method="estimated",
        ).fit()
    mean = np.asarray(fit.forecast(horizon), dtype=float)
    resid = np.asarray(fit.resid, dtype=float)[min(n - 1, max(s, 2)) :]
    sigma = float(np.sqrt(np.mean(resid**2))) if resid.size else float(np.std(x))
    alpha = float(fit.params.get("smoothing_level", 0.5) or 0.0)
    h = np.arange(1, horizon + 1)
    width = Z90 * sigma * np.sqrt(1 + (h - 1) * alpha**2)
    resid_mae = float(np.mean(np.abs(resid))) if resid.size else sigma
    return mean, mean - width, mean + width, resid_mae


def classical_anomaly_scores(values: F, k: F, season: int) -> F:
    """Robust z-scores of residuals after a running-median trend and median seasonal indices:
    ``|r - median(r)| / (1.4826 * MAD(r))``."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    seas = seasonal_indices(x, k, season) if season > 1 else np.zeros(1)
    d = x - seas[np.asarray(k) % len(seas)]
    w = max(5, (season if season > 1 else 5) | 1)
    pad = w // 2
    dp = np.concatenate([np.full(pad, d[0]), d, np.full(pad, d[-1])])
    win = np.lib.stride_tricks.sliding_window_view(dp, w)[:n]
    r = d - np.median(win, axis=1)
    mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
    if mad <= 0:
        mad = float(np.std(r)) or 1.0
    scores: np.ndarray = np.abs(r - np.median(r)) / mad
    return scores


# ---------------------------------------------------------------------------- verifier


class ForecastBacktestVerifier(Verifier):
    """Rules on a forecast with the series' own history; the verifier holds the truth.

    Design: the skill's ``holdout`` is :func:`backtest_input`, so the run loop asks the
    same tier, in the same batch as the forecast itself, for a forecast of the history with
    its last ``backtest_window(n, horizon)`` values cut off. That job never holds the
    held-out values; this verifier has them (they are in the step's input) and scores the
    tier's backtest forecast against them, and against seasonal-naive on the same window,
    so a model that is bad on this series is caught by a track record it could not see.
    For the large model the backtest is a second call on the cut history. Nothing the
    producer says about its own accuracy is read.

    Rejects: wrong lengths; non-finite values; ``p10 <= mean <= p90`` broken; intervals of
    zero width while the series varies; a mean outside the envelope (history range widened
    by itself and by ``envelope`` naive-scale steps per horizon step); a backtest forecast
    whose MASE is above ``(1 + margin) * MASE(seasonal naive) + slack`` on the held-out
    window; and any answer without a backtest forecast (the tier gave none, or
    :meth:`check_batch` was called without one): that answer is not verified, whatever its
    shape, so the step climbs to the next tier."""

    name = "series.backtest"

    def __init__(self, margin: float = 0.25, slack: float = 0.25, envelope: float = 3.0) -> None:
        self.margin = margin
        self.slack = slack
        self.envelope = envelope

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        """Without backtest forecasts: the shape and plausibility checks, and never ``ok``."""
        return self.check_holdout_batch([(i, o, None) for i, o in pairs])

    def check_holdout_batch(self, items: Sequence[tuple[BaseModel, BaseModel, BaseModel | None]]) -> list[Verdict]:
        out = []
        for inp, ans, bt in items:
            assert isinstance(inp, ForecastInput) and isinstance(ans, ForecastOutput)
            assert bt is None or isinstance(bt, ForecastOutput)
            out.append(self._check(inp, ans, bt))
        return out

    def _bands(self, mean: list[float], p10: list[float], p90: list[float], n: int, what: str, varies: bool) -> str | None:
        if not (len(mean) == len(p10) == len(p90) == n):
            return f"{what} has lengths mean={len(mean)}, p10={len(p10)}, p90={len(p90)}; expected {n} each"
        m, lo, hi = np.asarray(mean, float), np.asarray(p10, float), np.asarray(p90, float)
        if not (np.isfinite(m).all() and np.isfinite(lo).all() and np.isfinite(hi).all()):
            return f"{what} holds non-finite values"
        tol = 1e-9 * (1.0 + float(np.max(np.abs(m))))
        bad = np.flatnonzero((lo > m + tol) | (m > hi + tol))
        if bad.size:
            i = int(bad[0])
            return f"{what} intervals are out of order at step {i}: p10={lo[i]:.6g}, mean={m[i]:.6g}, p90={hi[i]:.6g}"
        if varies and float(np.max(hi - lo)) <= tol:
            return f"{what} intervals have zero width although the series varies"
        return None

    def _check(self, inp: ForecastInput, ans: ForecastOutput, bt: ForecastOutput | None) -> Verdict:
        x = np.asarray(inp.values, dtype=float)
        n, h = len(x), inp.horizon
        varies = float(np.ptp(x)) > 0
        problem = self._bands(ans.mean, ans.p10, ans.p90, h, "forecast", varies)
        if problem:
            return self.verdict(False, problem)
        season = effective_season(inp.season, x)
        scale = naive_scale(x, season) or float(np.std(x)) or 1.0
        span = float(np.ptp(x))
        steps = np.arange(1, h + 1)
        lo_env = float(x.min()) - span - self.envelope * scale * steps
        hi_env = float(x.max()) + span + self.envelope * scale * steps
        m = np.asarray(ans.mean, float)
        out_env = np.flatnonzero((m < lo_env) | (m > hi_env))
        if out_env.size:
            i = int(out_env[0])
            return self.verdict(
                False,
                f"forecast step {i} is {m[i]:.6g}, outside the plausible range [{lo_env[i]:.6g}, {hi_env[i]:.6g}] of this history",
            )
        w = backtest_window(n, h)
        if bt is None:
            return self.verdict(
                False,
                f"unverified: no backtest forecast of the last {w} values from the same tier (a forecast is "
                "verified only by how its producer forecast values it never saw)",
                None,
                backtest=False,
                window=w,
            )
        problem = self._bands(bt.mean, bt.p10, bt.p90, w, "backtest forecast", varies)
        if problem:
            return self.verdict(False, problem)
        hist, held = x[:-w], x[-w:]
        s_bt = effective_season(inp.season, hist)
        bt_scale = naive_scale(hist, s_bt) or scale
        mase_model = float(np.mean(np.abs(held - np.asarray(bt.mean)))) / bt_scale
        mase_naive = float(np.mean(np.abs(held - seasonal_naive(hist, w, s_bt)))) / bt_scale
        cov = coverage(held, bt.p10, bt.p90)
        limit = (1 + self.margin) * mase_naive + self.slack
        details = {"backtest_mase": mase_model, "naive_mase": mase_naive, "limit": limit, "backtest_coverage": cov, "window": w, "backtest": True}
        if mase_model > limit:
            return self.verdict(
                False,
                f"backtest on the last {w} values: MASE {mase_model:.3g} is worse than seasonal-naive's "
                f"{mase_naive:.3g} by more than the margin (limit {limit:.3g})",
                mase_model,
                **details,
            )
        return self.verdict(
            True, f"backtest MASE {mase_model:.3g} vs seasonal-naive {mase_naive:.3g} on the last {w} values", mase_model, **details
        )

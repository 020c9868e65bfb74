"""The classical baselines: seasonal naive (and its in-sample error, MASE's scale), Holt-Winters
exponential smoothing with widening intervals (the offline last tier of ``series.forecast``),
and robust residual z-scores (the offline last tier of ``series.anomaly``).

statsmodels is imported inside :func:`classical_fit`, the one function that needs it, so a run
that does not forecast never loads it.
"""

from __future__ import annotations

import warnings

import numpy as np

from workers.kits.series_seasonal import F, seasonal_indices

__all__ = ["Z90", "classical_anomaly_scores", "classical_fit", "classical_forecast", "naive_scale", "seasonal_naive", "theta_forecast"]

Z90 = 1.2815515655446004
"""The standard normal's 90% quantile: p10/p90 = mean -/+ Z90 * sigma."""


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


def theta_forecast(values: F, horizon: int, season: int) -> tuple[F, F, F]:
    """The Theta method (statsmodels ``ThetaModel``: SES with drift, deseasonalised when at
    least two seasons are seen), with its 80% prediction interval. Returns (mean, p10, p90);
    seasonal naive with a zero-width band when the fit fails (a flat or very short history)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel

    x = np.asarray(values, dtype=float)
    s = season if season > 1 and len(x) >= 2 * season + 2 else 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ThetaModel(x, period=s, deseasonalize=s > 1).fit()
            mean = np.asarray(res.forecast(horizon), dtype=float)
            band = np.asarray(res.prediction_intervals(horizon, alpha=0.2), dtype=float)
    except (ValueError, np.linalg.LinAlgError):
        naive = seasonal_naive(x, horizon, season)
        return naive, naive.copy(), naive.copy()
    if not (np.isfinite(mean).all() and np.isfinite(band).all()):
        naive = seasonal_naive(x, horizon, season)
        return naive, naive.copy(), naive.copy()
    return mean, np.minimum(band[:, 0], mean), np.maximum(band[:, 1], mean)

"""From a series to the liquid forecaster and back: the model's input window (deseasonalised,
normalised, left-padded, with the sample gaps as timespans), batched forecasts mapped back to
the series' units, calibrated forecasts with a track record, and one-step anomaly scores.

A window of the last ``context`` values is deseasonalised with median seasonal indices and
normalised per series (location = median of the last 3 values, scale = mean absolute step);
the model (``workers/models/liquid.py``) reads it; outputs are mapped back through scale,
location and seasonal indices. Numpy arrays here are per series: L = ``context`` steps,
N = ``N_FEATURES``; the batched tensors add B in front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.kits import series
from workers.models.liquid import N_FEATURES
from workers.serving.liquid_checkpoints import SeriesModel

__all__ = [
    "CALIB_ORIGINS",
    "FLAG_Z",
    "MIN_CONTEXT",
    "F",
    "Forecast",
    "Request",
    "Window",
    "forecast_batch",
    "make_window",
    "one_step_scores",
    "predict",
    "predict_tracked",
    "seasonal_naive_of",
]

FLAG_Z = 4.5
"""Anomaly flag threshold on the z-like score (both scorers)."""

F = np.ndarray


@dataclass(frozen=True)
class Window:
    """One model input and what maps its output back: features (L, F), timespans (L,),
    location, scale and the seasonal offsets of the ``horizon`` future steps."""

    x: F
    ts: F
    loc: float
    scale: float
    future_season: F


def make_window(values: F, k: F, season: int, horizon: int, context: int, seas: F | None = None) -> Window:
    """Build the model input from a history ``values`` at grid steps ``k`` (see
    :func:`series.grid_index`). ``seas`` are precomputed seasonal indices (else estimated
    from ``values``). Shorter histories are left-padded with masked zeros."""
    v = np.asarray(values, dtype=float)
    k = np.asarray(k)
    if seas is None:
        seas = series.seasonal_indices(v, k, season) if season > 1 else np.zeros(1)
    s = len(seas)
    d = v - seas[k % s]
    ctx, kc = d[-context:], k[-context:]
    loc = float(sorted(ctx[-3:].tolist())[len(ctx[-3:]) // 2]) if len(ctx) != 2 else float(ctx.mean())
    steps = np.abs(np.diff(ctx))
    scale = float(steps.mean()) if steps.size else 0.0
    if not scale > 1e-12 * (1.0 + abs(loc)):
        scale = float(np.std(ctx)) or max(abs(loc), 1.0) * 1e-3
    n = len(ctx)
    x = np.zeros((context, N_FEATURES), dtype=np.float32)
    x[context - n :, 0] = np.clip((ctx - loc) / scale / 8.0, -10, 10)
    x[context - n :, 1] = 1.0
    ts = np.ones(context, dtype=np.float32)
    if n > 1:
        ts[context - n + 1 :] = np.clip(np.diff(kc), 1, 10)
    future = seas[(int(k[-1]) + np.arange(1, horizon + 1)) % s]
    return Window(x=x, ts=ts, loc=loc, scale=scale, future_season=future)


def _stack(windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([w.x for w in windows]))
    ts = torch.from_numpy(np.stack([w.ts for w in windows]))[..., None]
    return x, ts


def forecast_batch(model: SeriesModel, windows: Sequence[Window], chunk: int = 1024) -> list[tuple[F, F, F]]:
    """Run ``model`` on windows; return (p50, p10, p90) per window in the series' units,
    each of the model's full horizon."""
    out: list[tuple[F, F, F]] = []
    with torch.inference_mode():
        for i in range(0, len(windows), chunk):
            part = windows[i : i + chunk]
            x, ts = _stack(part)
            q = model(x, ts).numpy().astype(float)  # (B, H, 3)
            for w, qi in zip(part, q, strict=True):
                lo, mid, hi = (w.loc + w.scale * qi[:, j] + w.future_season for j in range(3))
                out.append((mid, lo, hi))
    return out


CALIB_ORIGINS = 4


@dataclass(frozen=True)
class Request:
    """One forecast to make: a history at grid steps ``k``, the given season (or None) and a horizon."""

    values: F
    k: F
    season: int | None
    horizon: int


@dataclass(frozen=True)
class Forecast:
    """One calibrated forecast, and the model's track record on its own history: the mean
    absolute error of its forecasts from the calibration origins, and seasonal-naive's from
    the same origins (both NaN when the history is too short for an origin)."""

    mean: F
    p10: F
    p90: F
    track_mae: float
    naive_mae: float


def predict(model: SeriesModel, requests: Sequence[Request]) -> list[tuple[F, F, F]]:
    """Calibrated forecasts (mean, p10, p90), ``horizon`` steps each, in one batched pass
    (see :func:`predict_tracked`)."""
    return [(f.mean, f.p10, f.p90) for f in predict_tracked(model, requests)]


def predict_tracked(model: SeriesModel, requests: Sequence[Request]) -> list[Forecast]:
    """Calibrated forecasts, ``horizon`` steps each, in one batched pass, with a track record.

    Per-series interval calibration (split-conformal on the series' own history): besides
    the forecast window, up to ``CALIB_ORIGINS`` earlier origins inside the history are
    forecast; the 80% quantile of how far their actuals fall outside the p10/p90 band, in
    units of the band's half-widths, rescales the band (clipped to 0.6-5x). The same
    origins' errors, against seasonal-naive's, are the track record."""
    cfg = model.cfg
    windows: list[Window] = []
    spans: list[tuple[int, list[tuple[int, int]]]] = []  # (main index, [(calib index, origin)])
    for r in requests:
        n = len(r.values)
        s = series.effective_season(r.season, r.values)
        main = len(windows)
        windows.append(make_window(r.values, r.k, s, cfg.horizon, cfg.context))
        calib = []
        stride = max(1, r.horizon // 2)
        for j in range(CALIB_ORIGINS):
            o = n - r.horizon - j * stride
            if o < series.MIN_VALUES:
                break
            hist = r.values[:o]
            calib.append((len(windows), o))
            windows.append(make_window(hist, r.k[:o], series.effective_season(r.season, hist), cfg.horizon, cfg.context))
        spans.append((main, calib))
    preds = forecast_batch(model, windows)
    out = []
    for r, (main, calib) in zip(requests, spans, strict=True):
        m, lo, hi = (a[: r.horizon] for a in preds[main])
        u: list[F] = []
        errs: list[F] = []
        naive_errs: list[F] = []
        for ci, o in calib:
            cm, clo, chi = (a[: r.horizon] for a in preds[ci])
            act = r.values[o : o + r.horizon]
            hz = len(act)
            up = np.maximum(chi[:hz] - cm[:hz], 1e-12)
            down = np.maximum(cm[:hz] - clo[:hz], 1e-12)
            u.append(np.where(act >= cm[:hz], (act - cm[:hz]) / up, (cm[:hz] - act) / down))
            errs.append(np.abs(act - cm[:hz]))
            hist = r.values[:o]
            naive_errs.append(np.abs(act - seasonal_naive_of(hist, hz, r.season)))
        f = float(np.clip(np.quantile(np.concatenate(u), 0.8), 0.6, 5.0)) if u else 1.0
        track = float(np.mean(np.concatenate(errs))) if errs else math.nan
        naive = float(np.mean(np.concatenate(naive_errs))) if naive_errs else math.nan
        out.append(Forecast(m, m - f * (m - lo), m + f * (hi - m), track, naive))
    return out


def seasonal_naive_of(history: F, horizon: int, season: int | None) -> F:
    """Seasonal-naive forecast of ``history`` with the season a model would use."""
    return series.seasonal_naive(history, horizon, series.effective_season(season, history))


MIN_CONTEXT = 8


def one_step_scores(model: SeriesModel, values: F, k: F, season: int) -> tuple[F, float]:
    """Scores of one-step forecasts from rolling windows, and the ratio of their mean absolute
    residual to that of the naive one-step forecast (below 1: the model reads the series).

    The residual ``x_t - p50_t`` is divided by ``sigma_t`` (from the p10-p90 width) and then
    robustly standardised over the series (median, 1.4826 MAD), so scores read as robust
    z-scores whatever the model's calibration on this series. Two batched passes: the second
    re-reads windows in which points flagged by the first were replaced by their forecasts,
    so one spike does not disturb the scores after it. The first ``MIN_CONTEXT`` points score 0."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    s = season if season > 1 and n >= 2 * season else 1
    seas = series.seasonal_indices(x, k, s) if s > 1 else np.zeros(1)
    cfg = model.cfg
    idx = np.arange(MIN_CONTEXT, n)
    scores = np.zeros(n)
    if idx.size == 0:
        return scores, 1.0
    clean = x.copy()
    mid = x[idx]
    for _ in range(2):
        wins = [make_window(clean[max(0, i - cfg.context) : i], k[max(0, i - cfg.context) : i], s, 1, cfg.context, seas) for i in idx]
        preds = forecast_batch(model, wins)
        mid = np.array([p[0][0] for p in preds])
        sigma = np.maximum(np.array([p[2][0] - p[1][0] for p in preds]) / (2 * series.Z90), 1e-12)
        z = (x[idx] - mid) / sigma
        center = float(np.median(z))
        mad = 1.4826 * float(np.median(np.abs(z - center))) or float(np.std(z)) or 1.0
        scores[idx] = np.abs(z - center) / mad
        flagged = scores[idx] > FLAG_Z
        if not flagged.any():
            break
        clean = x.copy()
        clean[idx] = np.where(flagged, mid, x[idx])
    naive = float(np.mean(np.abs(np.diff(x)[MIN_CONTEXT - 1 :])))
    resid = float(np.mean(np.abs(x[idx] - mid)))
    return scores, (resid / naive if naive > 0 else (0.0 if resid == 0 else math.inf))

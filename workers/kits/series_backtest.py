"""Scoring a forecast: MASE and interval coverage, the backtest input (what a tier answers so
the verifier can score it on values it never saw) and the backtest verifier."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel

from tinyfleet_core.models import Verdict
from workers.base import Verifier
from workers.kits.series_classical import naive_scale, seasonal_naive
from workers.kits.series_payloads import ForecastInput, ForecastOutput
from workers.kits.series_seasonal import F, effective_season

__all__ = ["ForecastBacktestVerifier", "backtest_input", "backtest_window", "coverage", "mase"]


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
    score_lower_is_better = True  # the score is the backtest forecast's MASE on the held-out window

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

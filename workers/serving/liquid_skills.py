"""The series skills and their ladders: ``series.forecast`` (CfC, then the selective state-space
model, then LTC, then Holt-Winters; verified by a backtest on values the tiers never saw; by
default ``select="best_score"``: CfC and Holt-Winters answer together and the better backtest
settles) and ``series.anomaly`` (CfC residuals, then the classical scorer)."""

from __future__ import annotations

from typing import Any

from workers.base import PoolOptions, Skill, Tier
from workers.kits import series
from workers.lazy import LazyWorker

# The workers, imported (with torch, and statsmodels for the classical ones) only where a pool
# builds one (workers/lazy.py): workers/serving/liquid_workers.py.
_WORKERS = "workers.serving.liquid_workers"
CfCForecaster = LazyWorker(_WORKERS, "CfCForecaster", name="series.cfc")
LTCForecaster = LazyWorker(_WORKERS, "LTCForecaster", name="series.ltc")
SSMForecaster = LazyWorker(_WORKERS, "SSMForecaster", name="series.ssm")
ClassicalForecaster = LazyWorker(_WORKERS, "ClassicalForecaster", name="series.classical")
CfCAnomalyScorer = LazyWorker(_WORKERS, "CfCAnomalyScorer", name="series.cfc-anomaly")
ClassicalAnomalyScorer = LazyWorker(_WORKERS, "ClassicalAnomalyScorer", name="series.classical-anomaly")

__all__ = ["anomaly_skill", "forecast_skill", "series_skills"]

_TORCH_POOL = PoolOptions(replicas=1, num_cpus=1.0, max_batch=128, max_wait_ms=3.0)
_CLASSICAL_POOL = PoolOptions(replicas=1, num_cpus=0.5, max_batch=16, max_wait_ms=2.0)


def _looks_like_forecast(inputs: dict[str, Any]) -> bool:
    return "values" in inputs and "horizon" in inputs


def _looks_like_anomaly(inputs: dict[str, Any]) -> bool:
    return "values" in inputs and "horizon" not in inputs


def forecast_skill() -> Skill:
    return Skill(
        name="series.forecast",
        description=(
            "Forecast the next 'horizon' steps of a numeric series with p10/p90 intervals. Input "
            "{'values': [float], 'timestamps': [float] (optional), 'horizon': int, 'season': int (optional)}."
        ),
        input_model=series.ForecastInput,
        output_model=series.ForecastOutput,
        ladder=[
            Tier("cfc", CfCForecaster, "tiny", _TORCH_POOL),
            Tier("ssm", SSMForecaster, "tiny", _TORCH_POOL),
            Tier("ltc", LTCForecaster, "tiny", _TORCH_POOL),
        ],
        fallback=Tier("classical", ClassicalForecaster, "tool", _CLASSICAL_POOL),
        verifier=series.ForecastBacktestVerifier(),
        holdout=series.backtest_input,  # each tier also forecasts the history minus its last window
        recognize=_looks_like_forecast,
        # the first tier and Holt-Winters answer together; the better backtest settles (docs/liquid.md)
        select="best_score",
    )


def anomaly_skill() -> Skill:
    return Skill(
        name="series.anomaly",
        description=(
            "Score every point of a numeric series for anomaly and flag the outliers. Input "
            "{'values': [float], 'timestamps': [float] (optional), 'season': int (optional)}."
        ),
        input_model=series.AnomalyInput,
        output_model=series.AnomalyOutput,
        ladder=[Tier("cfc-anomaly", CfCAnomalyScorer, "tiny", _TORCH_POOL)],
        fallback=Tier("classical-anomaly", ClassicalAnomalyScorer, "tool", _CLASSICAL_POOL),
        recognize=_looks_like_anomaly,
    )


def series_skills() -> list[Skill]:
    """The series skills, for ``default_registry()``."""
    return [forecast_skill(), anomaly_skill()]

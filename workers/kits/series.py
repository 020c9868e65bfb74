"""Series task kit: payload models for ``series.forecast`` and ``series.anomaly``, input
validation, seasonal helpers, metrics, a seeded generator of synthetic series, the classical
forecaster and anomaly scorer (the offline last tiers), the backtest input (what a tier
answers so the verifier can score it on values it never saw), and the backtest verifier.

Conventions: a series is ``values[i]`` observed at ``timestamps[i]`` (default ``i``). Irregular
series are placed on a grid of their median time step (``grid_index``); seasons count grid steps.
A forecast covers the next ``horizon`` grid steps after the last observation.

The rooms, one concern each, re-exported here as one namespace: ``series_payloads`` (models and
validation), ``series_seasonal`` (time grid and seasons), ``series_classical`` (seasonal naive,
Holt-Winters, residual z-scores), ``series_synth`` (the generator), ``series_backtest`` (MASE,
coverage, the backtest input and verifier). Importing the kit loads neither scipy nor
statsmodels: each is imported by the one function that needs it.
"""

from __future__ import annotations

from workers.kits.series_backtest import ForecastBacktestVerifier, backtest_input, backtest_window, coverage, mase
from workers.kits.series_classical import (
    Z90,
    classical_anomaly_scores,
    classical_fit,
    classical_forecast,
    naive_scale,
    seasonal_naive,
    theta_forecast,
)
from workers.kits.series_payloads import (
    MAX_HORIZON,
    MAX_VALUES,
    MIN_VALUES,
    AnomalyInput,
    AnomalyOutput,
    ForecastInput,
    ForecastOutput,
)
from workers.kits.series_seasonal import effective_season, grid_index, infer_season, seasonal_indices
from workers.kits.series_synth import Synth, generate_series, inject_anomalies

__all__ = [
    "MIN_VALUES",
    "MAX_VALUES",
    "MAX_HORIZON",
    "Z90",
    "theta_forecast",
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
    "classical_fit",
    "classical_anomaly_scores",
    "ForecastBacktestVerifier",
]

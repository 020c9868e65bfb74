"""Liquid-network workers (CfC, LTC from ``ncps``) for ``series.forecast`` and ``series.anomaly``,
their checkpoints, and the series skills with their ladders: one namespace over the rooms.

- the models, each in one readable file with tensor shapes: ``workers/models/liquid.py`` (CfC,
  LTC) and ``workers/models/ssm.py`` (a selective state-space model, Mamba's S6 scan);
- series in and out of the model (windows, batched and calibrated forecasts, one-step anomaly
  scores): ``liquid_inference.py``;
- checkpoints and model cards (``workers/checkpoints/<skill>-<model>.safetensors`` plus a
  ``.json`` card), torch's thread setting: ``liquid_checkpoints.py``;
- the workers (CfC, LTC, Holt-Winters forecasters; CfC and classical anomaly scorers):
  ``liquid_workers.py``;
- the skills and their ladders: ``liquid_skills.py``.
"""

from __future__ import annotations

from workers.models.liquid import N_FEATURES, QUANTILES, LiquidConfig, LiquidForecaster, pinball_loss
from workers.models.ssm import SSMConfig, StateSpaceForecaster
from workers.serving.liquid_checkpoints import (
    CHECKPOINT_DIR,
    SeriesModel,
    build_model,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from workers.serving.liquid_inference import (
    CALIB_ORIGINS,
    FLAG_Z,
    MIN_CONTEXT,
    Forecast,
    Request,
    Window,
    forecast_batch,
    make_window,
    one_step_scores,
    predict,
    predict_tracked,
    seasonal_naive_of,
)
from workers.serving.liquid_skills import anomaly_skill, forecast_skill, series_skills
from workers.serving.liquid_workers import (
    CfCAnomalyScorer,
    CfCForecaster,
    ClassicalAnomalyScorer,
    ClassicalForecaster,
    LTCForecaster,
    SSMForecaster,
)

__all__ = [
    "CALIB_ORIGINS",
    "CHECKPOINT_DIR",
    "FLAG_Z",
    "MIN_CONTEXT",
    "N_FEATURES",
    "QUANTILES",
    "LiquidConfig",
    "LiquidForecaster",
    "pinball_loss",
    "SSMConfig",
    "StateSpaceForecaster",
    "SeriesModel",
    "build_model",
    "Window",
    "make_window",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "set_torch_threads",
    "forecast_batch",
    "Request",
    "predict",
    "predict_tracked",
    "seasonal_naive_of",
    "Forecast",
    "one_step_scores",
    "CfCForecaster",
    "LTCForecaster",
    "SSMForecaster",
    "ClassicalForecaster",
    "CfCAnomalyScorer",
    "ClassicalAnomalyScorer",
    "forecast_skill",
    "anomaly_skill",
    "series_skills",
]

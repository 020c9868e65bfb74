"""The series workers: the CfC, LTC and selective state-space forecasters (tiny tiers),
Holt-Winters (the offline last tier), the CfC one-step anomaly scorer and the classical residual
scorer. Each answers a batch in one call; each confidence is a track record measured on
the series' own history."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import series
from workers.kits.classic import ClassicWorker
from workers.serving.liquid_checkpoints import SeriesModel, checkpoint_path, load_checkpoint, set_torch_threads
from workers.serving.liquid_inference import FLAG_Z, Request, one_step_scores, predict_tracked

__all__ = [
    "CfCAnomalyScorer",
    "CfCForecaster",
    "ClassicalAnomalyScorer",
    "ClassicalForecaster",
    "LTCForecaster",
    "SSMForecaster",
]


def _confidence(model_mae: float, naive_mae: float) -> float:
    """1 when the model's error is half seasonal-naive's, 0.5 at parity, 0 at 1.5x; 0.5 when
    there is no track record to judge by."""
    if math.isnan(model_mae) or math.isnan(naive_mae):
        return 0.5
    if naive_mae <= 0:
        return 1.0 if model_mae <= 0 else 0.0
    return float(np.clip(1.5 - model_mae / naive_mae, 0.0, 1.0))


class _LiquidForecastWorker(Worker):
    """Forecasts a batch in one pass. It answers exactly what it is asked: the verifier's
    backtest arrives as a job of its own (the history with the last window cut off), so
    this worker never holds the values its forecast is scored on. Its confidence is its
    track record on its own history (the calibration origins of :func:`predict_tracked`)."""

    skill = "series.forecast"
    model_kind: ClassVar[str] = "cfc"
    checkpoint_dir: Path | None = None

    def __init__(self) -> None:
        self._model: SeriesModel | None = None
        self._card: dict[str, Any] = {}

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        set_torch_threads()
        self._model, self._card = load_checkpoint(checkpoint_path(self.skill, self.model_kind, self.checkpoint_dir))

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        if self._model is None:
            self.setup(self.device)
        assert self._model is not None
        t0 = time.perf_counter()
        cfg = self._model.cfg
        requests: list[Request] = []
        refusals: list[str | None] = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.ForecastInput)
            if inp.horizon > cfg.horizon:
                refusals.append(f"horizon {inp.horizon} is above the model's trained {cfg.horizon} steps")
                continue
            x = np.asarray(inp.values, dtype=float)
            k, _ = series.grid_index(inp.timestamps, len(x))
            requests.append(Request(x, k, inp.season, inp.horizon))
            refusals.append(None)
        preds = iter(predict_tracked(self._model, requests) if requests else [])
        per = (time.perf_counter() - t0) / max(1, len(jobs))
        out: list[Attempt] = []
        for job, refusal in zip(jobs, refusals, strict=True):
            if refusal is not None:
                out.append(self.attempt(None, 0.0, job=job, seconds=per, error=refusal))
                continue
            f = next(preds)
            output = series.ForecastOutput(mean=f.mean.tolist(), p10=f.p10.tolist(), p90=f.p90.tolist())
            out.append(self.attempt(output, _confidence(f.track_mae, f.naive_mae), job=job, seconds=per))
        return out


class CfCForecaster(_LiquidForecastWorker):
    """Closed-form continuous-time (CfC) network; the first tier of ``series.forecast``."""

    name = "series.cfc"
    model_kind = "cfc"


class LTCForecaster(_LiquidForecastWorker):
    """Liquid time-constant (LTC) network with an AutoNCP wiring; the second tier."""

    name = "series.ltc"
    model_kind = "ltc"


class SSMForecaster(_LiquidForecastWorker):
    """Selective state-space model (Mamba-style S6 scan, ``workers/models/ssm.py``); a tier
    of ``series.forecast`` beside the liquid ones."""

    name = "series.ssm"
    model_kind = "ssm"


class ClassicalForecaster(ClassicWorker[series.ForecastInput]):
    """Holt-Winters exponential smoothing (statsmodels), refitted per series; its confidence
    compares the fit's one-step in-sample error with seasonal-naive's. Like every tier it
    answers only what it is asked (the backtest is a job of its own). The offline last
    tier, named as such."""

    name = "series.classical"
    skill = "series.forecast"
    input_model = series.ForecastInput

    def solve_one(self, inp: series.ForecastInput) -> tuple[BaseModel, float]:
        x = np.asarray(inp.values, dtype=float)
        s = series.effective_season(inp.season, x)
        m, lo, hi, resid_mae = series.classical_fit(x, inp.horizon, s)
        output = series.ForecastOutput(mean=m.tolist(), p10=lo.tolist(), p90=hi.tolist())
        return output, _confidence(resid_mae, series.naive_scale(x, s))


class _OneStepAnomalyScorer(Worker):
    """Scores each point by its one-step forecast residual (a ``series.forecast`` checkpoint).

    Confidence: how much the one-step forecasts beat the naive one (1 at half its error, 0.5
    at parity, 0 at 1.5x); a model that cannot read the series escalates to the next tier."""

    skill = "series.anomaly"
    model_kind: ClassVar[str] = "cfc"
    checkpoint_dir: Path | None = None

    def __init__(self) -> None:
        self._model: SeriesModel | None = None

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        set_torch_threads()
        self._model, _ = load_checkpoint(checkpoint_path("series.forecast", self.model_kind, self.checkpoint_dir))

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        if self._model is None:
            self.setup(self.device)
        assert self._model is not None
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.AnomalyInput)
            t0 = time.perf_counter()
            x = np.asarray(inp.values, dtype=float)
            k, _ = series.grid_index(inp.timestamps, len(x))
            scores, ratio = one_step_scores(self._model, x, k, series.effective_season(inp.season, x))
            conf = float(np.clip(1.5 - ratio, 0.0, 1.0))
            output = series.AnomalyOutput(scores=scores.tolist(), flagged=np.flatnonzero(scores > FLAG_Z).tolist())
            out.append(self.attempt(output, conf, job=job, seconds=time.perf_counter() - t0, residual_vs_naive=ratio))
        return out


class CfCAnomalyScorer(_OneStepAnomalyScorer):
    """One-step CfC residuals (the CfC forecast checkpoint); the first tier of ``series.anomaly``."""

    name = "series.cfc-anomaly"
    model_kind = "cfc"


class ClassicalAnomalyScorer(ClassicWorker[series.AnomalyInput]):
    """Robust z-scores of seasonal/trend residuals (running median, median seasonal indices).
    The offline last tier; its confidence is a fixed 0.9, not a self-assessment."""

    name = "series.classical-anomaly"
    skill = "series.anomaly"
    input_model = series.AnomalyInput

    def solve_one(self, inp: series.AnomalyInput) -> tuple[BaseModel, float]:
        x = np.asarray(inp.values, dtype=float)
        k, _ = series.grid_index(inp.timestamps, len(x))
        scores = series.classical_anomaly_scores(x, k, series.effective_season(inp.season, x))
        return series.AnomalyOutput(scores=scores.tolist(), flagged=np.flatnonzero(scores > FLAG_Z).tolist()), 0.9

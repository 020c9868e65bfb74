"""Series payloads: the input and output models of ``series.forecast`` and ``series.anomaly``,
and the validation every series input passes (lengths, finite values, increasing timestamps,
horizon and season in range), each failure one InputError saying what to send instead."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinyfleet_core.errors import InputError

__all__ = ["MAX_HORIZON", "MAX_VALUES", "MIN_VALUES", "AnomalyInput", "AnomalyOutput", "ForecastInput", "ForecastOutput"]

MIN_VALUES = 8
MAX_VALUES = 100_000
MAX_HORIZON = 1_000


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

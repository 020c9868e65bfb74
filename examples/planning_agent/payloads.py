"""The planning agent's payloads: a delivery day (grid, depot, stops, shift), the tour
``delivery.choose`` picks and the itinerary ``delivery.itinerary`` builds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinyfleet_core.errors import InputError

from .scenario import Cell, check_city

__all__ = [
    "MINUTES_TOL",
    "ChooseInput",
    "ChooseOutput",
    "DemandForecast",
    "ItineraryInput",
    "ItineraryOutput",
    "Leg",
    "LegPath",
    "StopDemand",
    "StopRef",
    "Visit",
]

MINUTES_TOL = 1e-6
"""Slack on minute sums (shift fits, reported minutes): float rounding, not a real minute."""


class StopRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    cell: Cell


class DemandForecast(BaseModel):
    """A ``series.forecast`` output (extra fields such as its backtest are ignored)."""

    model_config = ConfigDict(extra="ignore")
    mean: list[float]
    p10: list[float]
    p90: list[float]


class StopDemand(BaseModel):
    """Expected demand of one stop over the forecast horizon (negative forecasts count as 0)."""

    model_config = ConfigDict(extra="forbid")
    mean: float
    p10: float
    p90: float


class _Day(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid: list[str]
    depot: Cell
    stops: list[StopRef]
    shift_minutes: float = Field(gt=0)
    minutes_per_move: float = Field(default=1.0, gt=0)
    service_minutes: float = Field(default=5.0, ge=0)

    def _check_day(self) -> None:
        ids = [s.id for s in self.stops]
        if len(set(ids)) != len(ids):
            raise InputError("stop ids must be unique")
        check_city(self.grid, self.depot, {s.id: s.cell for s in self.stops})


class ChooseInput(_Day):
    """The day (grid, depot, stops, shift) and one demand forecast per stop, in stop order."""

    forecasts: list[DemandForecast]

    @model_validator(mode="after")
    def _check(self) -> ChooseInput:
        if len(self.forecasts) != len(self.stops):
            raise InputError(f"forecasts has {len(self.forecasts)} entries for {len(self.stops)} stops; give one per stop, in order")
        self._check_day()
        return self


class ChooseOutput(BaseModel):
    """The stops to serve in visiting order (the tour starts and ends at the depot)."""

    model_config = ConfigDict(extra="forbid")
    order: list[str]
    dropped: list[str]
    tour_moves: int
    tour_minutes: float
    expected_demand: float
    demand: dict[str, StopDemand]


class Visit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int
    id: str
    cell: Cell
    arrive_min: float
    depart_min: float
    arrive_clock: str
    expected_demand: float
    p10: float
    p90: float


class Leg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_id: str
    to_id: str
    moves: int
    path: list[Cell]


class LegPath(BaseModel):
    """A routed leg: its path, and where the grid it was routed on lies in the city (a leg
    routed on a window of the city has that window's top-left corner here)."""

    model_config = ConfigDict(extra="forbid")
    path: list[Cell]
    offset: Cell = (0, 0)

    def in_city(self) -> list[Cell]:
        r0, c0 = self.offset
        return [(r + r0, c + c0) for r, c in self.path]


class ItineraryInput(_Day):
    """The day, the chosen tour (a ``delivery.choose`` output) and one routed leg per hop:
    depot -> first stop, ..., last stop -> depot."""

    shift_start_hour: float = Field(default=8.0, ge=0, lt=24)
    choice: ChooseOutput
    legs: list[LegPath]

    @model_validator(mode="after")
    def _check(self) -> ItineraryInput:
        self._check_day()
        known = {s.id for s in self.stops}
        for sid in self.choice.order:
            if sid not in known:
                raise InputError(f"choice.order names unknown stop {sid!r}")
        want = len(self.choice.order) + 1 if self.choice.order else 0
        if len(self.legs) != want:
            raise InputError(f"legs has {len(self.legs)} entries; a tour of {len(self.choice.order)} stops needs {want}")
        return self


class ItineraryOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visits: list[Visit]
    legs: list[Leg]
    return_min: float
    return_clock: str
    shift_minutes: float
    total_moves: int
    expected_demand: float
    expected_demand_p10: float
    expected_demand_p90: float
    dropped: list[str]
    path: list[Cell]

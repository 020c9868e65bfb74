"""A delivery day: a city grid with blocked streets, a depot, delivery stops with hourly demand
histories, and a shift. Seeded generation, loading from JSON, and validation.

A scenario file (JSON)::

    {
      "name": "day-7",
      "grid": ["#########", "#.......#", ...],       # '#' blocked, '.' street
      "depot": [1, 1],                                 # [row, col]
      "stops": [
        {"id": "bakery", "cell": [3, 5],
         "history": {"values": [4.1, 3.9, ...],        # demand per sample (units, >= 0)
                     "timestamps": [0.0, 1.0, 3.02, ...]}}   # hours, increasing; gaps allowed
      ],
      "shift_start_hour": 8, "shift_minutes": 240,
      "minutes_per_move": 1.5, "service_minutes": 6,
      "horizon": 24, "season": 24
    }

The forecast covers the ``horizon`` hours after each history's last sample (the day being
planned). Every problem raises :class:`tinyfleet_core.errors.InputError` naming it: a depot or
stop on a wall or off the grid, a stop the depot cannot reach, a history that is too short,
not increasing in time, negative or not a number.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyfleet_core.errors import InputError
from tinyfleet_core.validation import first_problem
from workers.kits import maze
from workers.kits.series import ForecastInput
from workers.registry import validate_payload

__all__ = [
    "Cell",
    "History",
    "StopSpec",
    "Scenario",
    "MAX_STOPS",
    "generate",
    "load_scenario",
    "parse_scenario",
    "check_city",
    "distances_from",
    "to_json",
    "hour_label",
]

Cell = tuple[int, int]
MAX_STOPS = 24
_STOP_ID = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


class History(BaseModel):
    """Observed demand of one stop: ``values[i]`` at ``timestamps[i]`` hours (default ``i``)."""

    model_config = ConfigDict(extra="forbid")
    values: list[float]
    timestamps: list[float] | None = None


class StopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    cell: Cell
    history: History


class Scenario(BaseModel):
    """One delivery day. Times are minutes from the shift start unless named in hours."""

    model_config = ConfigDict(extra="forbid")
    name: str = "delivery-day"
    grid: list[str]
    depot: Cell
    stops: list[StopSpec]
    shift_start_hour: float = Field(default=8.0, ge=0, lt=24)
    shift_minutes: float = Field(default=240.0, gt=0)
    minutes_per_move: float = Field(default=1.0, gt=0)
    service_minutes: float = Field(default=5.0, ge=0)
    horizon: int = Field(default=24, ge=1, le=24)
    season: int | None = Field(default=24, ge=1)

    def stop(self, stop_id: str) -> StopSpec:
        for s in self.stops:
            if s.id == stop_id:
                return s
        raise KeyError(stop_id)


# ---------------------------------------------------------------------------- validation


def check_city(grid: list[str], depot: Cell, cells: dict[str, Cell]) -> dict[Cell, int]:
    """Check the map, the depot and the stop cells; return BFS distances from the depot.

    InputError names the first problem: a ragged or empty grid, a character other than
    '#' or '.', a cell off the grid or on a wall, two stops on one cell, an unreachable stop."""
    if not grid:
        raise InputError("grid is empty; give a list of rows like ['#####', '#...#', ...]")
    width = len(grid[0])
    if len(grid) < 3 or width < 3 or len(grid) > maze.MAX_SIDE or width > maze.MAX_SIDE:
        raise InputError(f"grid is {len(grid)}x{width}; it must be between 3x3 and {maze.MAX_SIDE}x{maze.MAX_SIDE}")
    for r, row in enumerate(grid):
        if len(row) != width:
            raise InputError(f"grid row {r} has {len(row)} cells but row 0 has {width}; rows must be equal length")
        bad = set(row) - {"#", "."}
        if bad:
            raise InputError(f"grid row {r} holds {sorted(bad)!r}; use only '#' (blocked) and '.' (street)")

    def open_cell(cell: Cell, what: str) -> None:
        r, c = cell
        if not (0 <= r < len(grid) and 0 <= c < width):
            raise InputError(f"{what} {[r, c]} is outside the {len(grid)}x{width} grid")
        if grid[r][c] == "#":
            raise InputError(f"{what} {[r, c]} is on a wall (a blocked cell); put it on a street '.'")

    open_cell(depot, "depot")
    seen: dict[Cell, str] = {depot: "the depot"}
    for sid, cell in cells.items():
        open_cell(cell, f"stop {sid!r} at")
        if cell in seen:
            raise InputError(f"stop {sid!r} at {list(cell)} is on the same cell as {seen[cell]}; every stop needs its own cell")
        seen[cell] = f"stop {sid!r}"
    dist = maze.bfs_distances(grid, depot)
    for sid, cell in cells.items():
        if cell not in dist:
            raise InputError(f"stop {sid!r} at {list(cell)} is unreachable from the depot {list(depot)}: blocked streets cut it off")
    return dist


def _check_history(stop: StopSpec, horizon: int, season: int | None) -> None:
    h = stop.history
    try:
        ForecastInput(values=h.values, timestamps=h.timestamps, horizon=horizon, season=season)
    except InputError as e:
        raise InputError(f"stop {stop.id!r} history: {e}") from None
    except ValidationError as e:  # the InputError raised inside the model's validator
        _, msg = first_problem(e)
        raise InputError(f"stop {stop.id!r} history: {msg}") from None
    negative = [i for i, v in enumerate(h.values) if v < 0]
    if negative:
        i = negative[0]
        raise InputError(f"stop {stop.id!r} history: values[{i}] is {h.values[i]}; demand cannot be negative")


def _check(s: Scenario) -> Scenario:
    if not s.stops:
        raise InputError("scenario has no stops; give at least one delivery stop")
    if len(s.stops) > MAX_STOPS:
        raise InputError(f"scenario has {len(s.stops)} stops; at most {MAX_STOPS} are supported")
    ids: set[str] = set()
    for k, st in enumerate(s.stops):
        if not _STOP_ID.match(st.id):
            raise InputError(f"stop {k} has id {st.id!r}; ids are 1-40 letters, digits, '_' or '-'")
        if st.id in ids:
            raise InputError(f"stop id {st.id!r} is used twice; stop ids must be unique")
        ids.add(st.id)
    check_city(s.grid, s.depot, {st.id: st.cell for st in s.stops})
    for st in s.stops:
        _check_history(st, s.horizon, s.season)
    return s


def parse_scenario(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a scenario from parsed JSON; InputError naming the field and problem."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: must be a JSON object with 'grid', 'depot' and 'stops', got {type(data).__name__}")
    s = validate_payload(Scenario, data, what=source)
    assert isinstance(s, Scenario)
    try:
        return _check(s)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario JSON file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(f"scenario file {p} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise InputError(f"scenario file {p} cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"scenario file {p} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    return parse_scenario(data, source=f"scenario file {p}")


def distances_from(grid: list[str], cell: Cell) -> dict[Cell, int]:
    return maze.bfs_distances(grid, cell)


# ---------------------------------------------------------------------------- generation

_NAMES = (
    "bakery", "clinic", "library", "cafe", "school", "market", "pharmacy", "hotel",
    "gym", "studio", "florist", "garage", "deli", "office", "museum", "kiosk",
)


def _profile(hour: np.ndarray, lunch: float, evening: float) -> np.ndarray:
    """Demand shape over a day: a night floor, a lunch peak and an evening peak."""
    h = np.mod(hour, 24.0)
    rate: np.ndarray = 0.15 + lunch * np.exp(-(((h - 12.5) / 2.2) ** 2)) + evening * np.exp(-(((h - 18.0) / 1.8) ** 2))
    return rate


def _history(rng: np.random.Generator, days: int) -> History:
    """Hourly demand over ``days`` days with missing hours and jittered sample times."""
    n = days * 24
    t = np.arange(n, dtype=float)
    base = float(rng.uniform(1.5, 9.0))
    shape = _profile(t, float(rng.uniform(0.4, 1.4)), float(rng.uniform(0.2, 1.2)))
    trend = 1.0 + float(rng.normal(0, 0.15)) * t / n
    weekly = 1.0 + 0.1 * np.sin(2 * np.pi * t / 168.0 + float(rng.uniform(0, 2 * np.pi)))
    y = base * shape * trend * weekly
    y = np.maximum(0.0, y + rng.normal(0, 0.12 * base, n))
    keep = rng.random(n) > float(rng.uniform(0.03, 0.12))  # missing hours
    keep[:2] = True
    keep[-4:] = True  # the last hours are in: the forecast starts right after them
    ts = t.copy()
    jitter = rng.random(n) < 0.25
    ts[jitter] += rng.uniform(-0.08, 0.08, int(jitter.sum()))
    ts[-1] = t[-1]
    return History(values=[round(float(v), 2) for v in y[keep]], timestamps=[round(float(v), 3) for v in ts[keep]])


def generate(
    seed: int = 7,
    *,
    size: int = 21,
    n_stops: int = 10,
    days: int = 10,
    blocked: float = 0.45,
    shift_minutes: float = 150.0,
) -> Scenario:
    """A seeded delivery day: a ``size`` x ``size`` city whose street lattice has a share of
    street segments open (``1 - blocked`` of the spare ones; every street stays reachable),
    a depot and ``n_stops`` stops at intersections, and ``days`` days of hourly history."""
    if not 2 <= n_stops <= min(MAX_STOPS, len(_NAMES)):
        raise InputError(f"n_stops must be 2..{min(MAX_STOPS, len(_NAMES))}, got {n_stops}")
    rng = random.Random(seed)
    grid = maze.generate(size, rng, loops=1.0 - blocked)
    grid = [row.replace("S", ".").replace("G", ".") for row in grid]
    crossings = [(r, c) for r in range(1, size - 1, 2) for c in range(1, size - 1, 2)]
    centre = (size // 2) | 1
    depot = min(crossings, key=lambda cell: abs(cell[0] - centre) + abs(cell[1] - centre) + rng.random())
    picks = rng.sample([c for c in crossings if c != depot], n_stops)
    names = rng.sample(list(_NAMES), n_stops)
    nrng = np.random.default_rng(seed)
    stops = [StopSpec(id=name, cell=cell, history=_history(nrng, days)) for name, cell in zip(names, picks, strict=True)]
    s = Scenario(
        name=f"day-{seed}",
        grid=grid,
        depot=depot,
        stops=stops,
        shift_start_hour=8.0,
        shift_minutes=shift_minutes,
        minutes_per_move=1.5,
        service_minutes=6.0,
    )
    return _check(s)


def to_json(s: Scenario) -> str:
    """The scenario as a JSON file's text (what ``load_scenario`` reads)."""
    return s.model_dump_json(indent=1)


def hour_label(hour: float) -> str:
    """'08:00'-style clock text for a time in hours (past midnight wraps)."""
    minutes = int(round(hour * 60))
    return f"{(minutes // 60) % 24:02d}:{minutes % 60:02d}"

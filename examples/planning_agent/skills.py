"""The planning agent's tool skills and their verifiers.

- ``delivery.choose``: choose and order the stops to serve within the shift. A greedy
  value-per-minute insertion heuristic with 2-opt, then re-insertion until nothing more fits.
  Its verifier (``delivery.tour``) recomputes every distance from the grid and checks that the
  tour visits distinct, reachable stops, fits the shift, reports its minutes and demand
  honestly, and is *maximal*: no dropped stop with demand fits anywhere in it.
- ``delivery.itinerary``: turn the chosen order and the routed legs into arrival times and
  expected demand served. Its verifier (``delivery.schedule``) checks the legs join the stops
  in order, each is a legal shortest path on the grid, and the times add up and fit the shift.

Both are deterministic tools (tier kind ``tool``, run inline in the driver).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt, Verdict
from workers.base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from workers.builtin import default_registry
from workers.registry import SkillRegistry

from .scenario import Cell, check_city, distances_from, hour_label

__all__ = [
    "StopRef",
    "DemandForecast",
    "StopDemand",
    "ChooseInput",
    "ChooseOutput",
    "ItineraryInput",
    "ItineraryOutput",
    "Visit",
    "Leg",
    "LegPath",
    "choose_tour",
    "TourChooser",
    "TourVerifier",
    "ItineraryBuilder",
    "ItineraryVerifier",
    "choose_skill",
    "itinerary_skill",
    "register",
    "planning_registry",
]

_TOL = 1e-6
_TOOL_POOL = PoolOptions(inline=True, max_batch=64, max_wait_ms=0.0)


# ---------------------------------------------------------------------------- payloads


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


# ---------------------------------------------------------------------------- the tour heuristic


def _demands(inp: ChooseInput) -> dict[str, StopDemand]:
    return {
        s.id: StopDemand(
            mean=round(sum(max(0.0, v) for v in f.mean), 6),
            p10=round(sum(max(0.0, v) for v in f.p10), 6),
            p90=round(sum(max(0.0, v) for v in f.p90), 6),
        )
        for s, f in zip(inp.stops, inp.forecasts, strict=True)
    }


def _matrix(grid: list[str], cells: Sequence[Cell]) -> list[list[int]]:
    """Shortest move counts between ``cells``; InputError when a pair is not connected."""
    out = []
    for i, a in enumerate(cells):
        d = distances_from(grid, a)
        row = []
        for j, b in enumerate(cells):
            if b not in d:
                raise InputError(f"no street connects {list(a)} (node {i}) and {list(b)} (node {j})")
            row.append(d[b])
        out.append(row)
    return out


def _tour_moves(tour: Sequence[int], dist: list[list[int]]) -> int:
    return sum(dist[a][b] for a, b in zip(tour, tour[1:], strict=False))


def _best_insertion(tour: list[int], k: int, dist: list[list[int]]) -> tuple[int, int]:
    """(extra moves, position) of the cheapest place to insert node ``k`` into ``tour``."""
    return min((dist[tour[p - 1]][k] + dist[k][tour[p]] - dist[tour[p - 1]][tour[p]], p) for p in range(1, len(tour)))


def _two_opt(tour: list[int], dist: list[list[int]]) -> list[int]:
    """Reverse segments while that shortens the closed tour (endpoints stay at the depot)."""
    improved = True
    while improved:
        improved = False
        for i in range(1, len(tour) - 2):
            for j in range(i + 1, len(tour) - 1):
                a, b, c, d = tour[i - 1], tour[i], tour[j], tour[j + 1]
                if dist[a][c] + dist[b][d] < dist[a][b] + dist[c][d]:
                    tour[i : j + 1] = tour[i : j + 1][::-1]
                    improved = True
    return tour


def choose_tour(inp: ChooseInput) -> ChooseOutput:
    """Greedy insertion by expected demand per added minute, 2-opt after every insertion,
    until no stop with demand fits the shift. Node 0 is the depot, node i the i-th stop."""
    demand = _demands(inp)
    cells = [inp.depot, *[s.cell for s in inp.stops]]
    dist = _matrix(inp.grid, cells)
    mpm, svc = inp.minutes_per_move, inp.service_minutes
    tour = [0, 0]
    left = {i + 1 for i, s in enumerate(inp.stops) if demand[s.id].mean > 0}
    while True:
        moves = _tour_moves(tour, dist)
        used = moves * mpm + svc * (len(tour) - 2)
        best: tuple[float, int, int] | None = None  # (-value per minute, node, position)
        for k in sorted(left):
            ins = _best_insertion(tour, k, dist)
            extra_min = ins[0] * mpm + svc
            if used + extra_min > inp.shift_minutes + _TOL:
                continue
            ratio = demand[inp.stops[k - 1].id].mean / max(extra_min, 1e-9)
            if best is None or -ratio < best[0]:
                best = (-ratio, k, ins[1])
        if best is None:
            break
        _, k, pos = best
        tour.insert(pos, k)
        left.discard(k)
        tour = _two_opt(tour, dist)
    moves = _tour_moves(tour, dist)
    order = [inp.stops[k - 1].id for k in tour[1:-1]]
    return ChooseOutput(
        order=order,
        dropped=[s.id for s in inp.stops if s.id not in order],
        tour_moves=moves,
        tour_minutes=round(moves * mpm + svc * len(order), 6),
        expected_demand=round(sum(demand[i].mean for i in order), 6),
        demand=demand,
    )


class TourChooser(Worker):
    """The planner's step: choose and order the stops (a deterministic tool)."""

    name = "delivery.greedy-2opt"
    skill = "delivery.choose"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, ChooseInput)
            t0 = time.perf_counter()
            choice = choose_tour(job.input)
            out.append(self.attempt(choice, 1.0, job=job, seconds=time.perf_counter() - t0))
        return out


class TourVerifier(Verifier):
    """Recomputes distances from the grid; checks distinct known reachable stops, the shift,
    the reported minutes and demand, and that no dropped stop with demand still fits."""

    name = "delivery.tour"

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, ChooseInput) and isinstance(ans, ChooseOutput)
            problem = self._problem(inp, ans)
            out.append(self.verdict(problem is None, problem or f"{len(ans.order)} stops in {ans.tour_minutes:g} of {inp.shift_minutes:g} minutes; no dropped stop fits"))
        return out

    @staticmethod
    def _problem(inp: ChooseInput, ans: ChooseOutput) -> str | None:
        index = {s.id: k + 1 for k, s in enumerate(inp.stops)}
        if len(set(ans.order)) != len(ans.order):
            return f"order visits a stop twice: {ans.order}"
        unknown = [i for i in [*ans.order, *ans.dropped] if i not in index]
        if unknown:
            return f"unknown stop {unknown[0]!r}"
        if set(ans.order) & set(ans.dropped) or set(ans.order) | set(ans.dropped) != set(index):
            return "order and dropped must split the stops: each stop exactly once"
        try:
            dist = _matrix(inp.grid, [inp.depot, *[s.cell for s in inp.stops]])
        except InputError as e:
            return f"a stop is unreachable: {e}"
        tour = [0, *[index[i] for i in ans.order], 0]
        moves = _tour_moves(tour, dist)
        minutes = moves * inp.minutes_per_move + inp.service_minutes * len(ans.order)
        if moves != ans.tour_moves or abs(minutes - ans.tour_minutes) > _TOL * (1 + minutes):
            return f"tour takes {moves} moves, {minutes:g} minutes; the answer says {ans.tour_moves} moves, {ans.tour_minutes:g} minutes"
        if minutes > inp.shift_minutes + _TOL:
            return f"tour takes {minutes:g} minutes; the shift is {inp.shift_minutes:g}"
        demand = _demands(inp)
        for sid, d in demand.items():
            got = ans.demand.get(sid)
            if got is None or any(abs(a - b) > 1e-6 * (1 + abs(a)) for a, b in ((d.mean, got.mean), (d.p10, got.p10), (d.p90, got.p90))):
                return f"demand of stop {sid!r} is {d.model_dump()} by its forecast; the answer says {got.model_dump() if got else None}"
        total = sum(demand[i].mean for i in ans.order)
        if abs(total - ans.expected_demand) > 1e-6 * (1 + total):
            return f"expected demand of the chosen stops is {total:g}; the answer says {ans.expected_demand:g}"
        for sid in ans.dropped:
            if demand[sid].mean <= 0:
                continue
            ins = _best_insertion(tour, index[sid], dist)
            if minutes + ins[0] * inp.minutes_per_move + inp.service_minutes <= inp.shift_minutes + _TOL:
                return f"dropped stop {sid!r} (demand {demand[sid].mean:g}) still fits in the shift"
        return None


# ---------------------------------------------------------------------------- the itinerary


def _leg_problem(grid: list[str], path: Sequence[Cell], a: Cell, b: Cell, k: int) -> str | None:
    if not path:
        return f"leg {k} is empty"
    if tuple(path[0]) != tuple(a) or tuple(path[-1]) != tuple(b):
        return f"leg {k} runs {list(path[0])} -> {list(path[-1])}; it must run {list(a)} -> {list(b)}"
    for j, (r, c) in enumerate(path):
        if not (0 <= r < len(grid) and 0 <= c < len(grid[0])) or grid[r][c] == "#":
            return f"leg {k} entry {j} {[r, c]} is off the streets"
        if j and abs(r - path[j - 1][0]) + abs(c - path[j - 1][1]) != 1:
            return f"leg {k} jumps from {list(path[j - 1])} to {[r, c]}"
    best = distances_from(grid, a).get(b)
    if best is None or len(path) - 1 != best:
        return f"leg {k} takes {len(path) - 1} moves; the shortest takes {best}"
    return None


def build_itinerary(inp: ItineraryInput) -> ItineraryOutput:
    cells = {s.id: s.cell for s in inp.stops}
    names = ["depot", *inp.choice.order, "depot"]
    stops = [inp.depot, *[cells[i] for i in inp.choice.order], inp.depot]
    visits: list[Visit] = []
    legs: list[Leg] = []
    path: list[Cell] = []
    clock = 0.0
    for k, routed in enumerate(inp.legs):
        leg = routed.in_city()
        problem = _leg_problem(inp.grid, leg, stops[k], stops[k + 1], k)
        if problem:
            raise InputError(problem)
        legs.append(Leg(from_id=names[k], to_id=names[k + 1], moves=len(leg) - 1, path=leg))
        path.extend(leg if not path else leg[1:])
        clock += (len(leg) - 1) * inp.minutes_per_move
        if k + 1 < len(names) - 1:
            sid = names[k + 1]
            d = inp.choice.demand[sid]
            visits.append(
                Visit(
                    seq=k + 1,
                    id=sid,
                    cell=cells[sid],
                    arrive_min=round(clock, 4),
                    depart_min=round(clock + inp.service_minutes, 4),
                    arrive_clock=hour_label(inp.shift_start_hour + clock / 60),
                    expected_demand=d.mean,
                    p10=d.p10,
                    p90=d.p90,
                )
            )
            clock += inp.service_minutes
    served = [inp.choice.demand[i] for i in inp.choice.order]
    return ItineraryOutput(
        visits=visits,
        legs=legs,
        return_min=round(clock, 4),
        return_clock=hour_label(inp.shift_start_hour + clock / 60),
        shift_minutes=inp.shift_minutes,
        total_moves=sum(leg.moves for leg in legs),
        expected_demand=round(sum(d.mean for d in served), 6),
        expected_demand_p10=round(sum(d.p10 for d in served), 6),
        expected_demand_p90=round(sum(d.p90 for d in served), 6),
        dropped=list(inp.choice.dropped),
        path=path or [inp.depot],
    )


class ItineraryBuilder(Worker):
    """Joins the legs into the day's itinerary with arrival times (a deterministic tool)."""

    name = "delivery.itinerary"
    skill = "delivery.itinerary"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, ItineraryInput)
            t0 = time.perf_counter()
            try:
                it = build_itinerary(job.input)
            except InputError as e:
                out.append(self.attempt(None, 0.0, job=job, seconds=time.perf_counter() - t0, error=str(e)))
                continue
            out.append(self.attempt(it, 1.0, job=job, seconds=time.perf_counter() - t0))
        return out


class ItineraryVerifier(Verifier):
    """Legs join the stops in the chosen order and are legal shortest paths; the visits,
    times and demand add up; the return to the depot fits the shift."""

    name = "delivery.schedule"

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, ItineraryInput) and isinstance(ans, ItineraryOutput)
            problem = self._problem(inp, ans)
            out.append(self.verdict(problem is None, problem or f"{len(ans.legs)} shortest legs, back at {ans.return_clock}, within the shift"))
        return out

    @staticmethod
    def _problem(inp: ItineraryInput, ans: ItineraryOutput) -> str | None:
        cells = {s.id: s.cell for s in inp.stops}
        order = inp.choice.order
        if [v.id for v in ans.visits] != order:
            return f"visits {[v.id for v in ans.visits]} do not follow the chosen order {order}"
        stops = [inp.depot, *[cells[i] for i in order], inp.depot] if order else []
        if len(ans.legs) != max(0, len(stops) - 1):
            return f"{len(ans.legs)} legs for a tour of {len(order)} stops"
        clock = 0.0
        for k, leg in enumerate(ans.legs):
            problem = _leg_problem(inp.grid, leg.path, stops[k], stops[k + 1], k)
            if problem:
                return problem
            if leg.moves != len(leg.path) - 1:
                return f"leg {k} says {leg.moves} moves but its path has {len(leg.path) - 1}"
            clock += leg.moves * inp.minutes_per_move
            if k < len(order):
                v = ans.visits[k]
                if abs(v.arrive_min - clock) > 1e-3:
                    return f"arrival at {v.id!r} is {v.arrive_min:g} min; the legs say {clock:g}"
                if tuple(v.cell) != tuple(cells[v.id]):
                    return f"visit {v.id!r} is at {list(v.cell)}, not at the stop's cell {list(cells[v.id])}"
                clock += inp.service_minutes
        if abs(ans.return_min - clock) > 1e-3:
            return f"return to the depot is {ans.return_min:g} min; the legs say {clock:g}"
        if clock > inp.shift_minutes + _TOL:
            return f"the tour ends at {clock:g} min, after the {inp.shift_minutes:g}-minute shift"
        for k in range(1, len(ans.path)):
            (r0, c0), (r1, c1) = ans.path[k - 1], ans.path[k]
            if abs(r0 - r1) + abs(c0 - c1) != 1:
                return f"the full path jumps from {[r0, c0]} to {[r1, c1]}"
        total = sum(inp.choice.demand[i].mean for i in order)
        if abs(total - ans.expected_demand) > 1e-6 * (1 + total):
            return f"expected demand served is {total:g}; the itinerary says {ans.expected_demand:g}"
        return None


# ---------------------------------------------------------------------------- skills


def choose_skill() -> Skill:
    return Skill(
        name="delivery.choose",
        description=(
            "Choose and order the delivery stops to serve within a shift, maximising expected demand served. "
            "Input {'grid': [str] ('#' blocked, '.' street), 'depot': [row, col], 'stops': [{'id', 'cell': [row, col]}], "
            "'forecasts': [series.forecast output, one per stop in stop order], 'shift_minutes', "
            "'minutes_per_move', 'service_minutes'}. Output: the visiting order (from and back to the depot)."
        ),
        input_model=ChooseInput,
        output_model=ChooseOutput,
        ladder=[Tier("greedy-2opt", TourChooser, "tool", _TOOL_POOL)],
        verifier=TourVerifier(),
    )


def itinerary_skill() -> Skill:
    return Skill(
        name="delivery.itinerary",
        description=(
            "Assemble the day's itinerary: legs, arrival times, expected demand served. Input: the day "
            "(grid, depot, stops, shift_minutes, minutes_per_move, service_minutes, shift_start_hour), "
            "'choice' (a delivery.choose output) and 'legs': [{'path': a maze.route path, 'offset': [row, col] of the "
            "grid it was routed on within the city (default [0, 0])}], depot -> stop 1 -> ... -> depot."
        ),
        input_model=ItineraryInput,
        output_model=ItineraryOutput,
        ladder=[Tier("itinerary", ItineraryBuilder, "tool", _TOOL_POOL)],
        verifier=ItineraryVerifier(),
    )


def register(registry: SkillRegistry) -> SkillRegistry:
    """Add ``delivery.choose`` and ``delivery.itinerary`` to ``registry``; return it."""
    registry.register(choose_skill())
    registry.register(itinerary_skill())
    return registry


def planning_registry() -> SkillRegistry:
    """The built-in skills plus the planning agent's tools."""
    return register(default_registry())

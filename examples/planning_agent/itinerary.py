"""``delivery.itinerary``: the chosen order and the routed legs joined into arrival times
and expected demand served (:func:`build_itinerary`, the tier :class:`ItineraryBuilder`), and
its verifier ``delivery.schedule`` (:class:`ItineraryVerifier`): the legs join the stops in
order, each is a legal shortest path on the grid, and the times add up and fit the shift."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt, Verdict
from workers.base import Job, Verifier, Worker

from .payloads import MINUTES_TOL, ItineraryInput, ItineraryOutput, Leg, Visit
from .scenario import Cell, distances_from, hour_label

__all__ = ["ItineraryBuilder", "ItineraryVerifier", "build_itinerary"]


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
        if clock > inp.shift_minutes + MINUTES_TOL:
            return f"the tour ends at {clock:g} min, after the {inp.shift_minutes:g}-minute shift"
        for k in range(1, len(ans.path)):
            (r0, c0), (r1, c1) = ans.path[k - 1], ans.path[k]
            if abs(r0 - r1) + abs(c0 - c1) != 1:
                return f"the full path jumps from {[r0, c0]} to {[r1, c1]}"
        total = sum(inp.choice.demand[i].mean for i in order)
        if abs(total - ans.expected_demand) > 1e-6 * (1 + total):
            return f"expected demand served is {total:g}; the itinerary says {ans.expected_demand:g}"
        return None

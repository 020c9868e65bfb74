"""``delivery.choose``: which stops to serve and in what order. A greedy value-per-minute
insertion heuristic with 2-opt (:func:`choose_tour`, the tier :class:`TourChooser`), and its
verifier ``delivery.tour`` (:class:`TourVerifier`): it recomputes every distance from the grid
and checks that the tour visits distinct, reachable stops, fits the shift, reports its minutes
and demand honestly, and is *maximal*: no dropped stop with demand fits anywhere in it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt, Verdict
from workers.base import Job, Verifier, Worker

from .payloads import MINUTES_TOL, ChooseInput, ChooseOutput, StopDemand
from .scenario import Cell, distances_from

__all__ = ["TourChooser", "TourVerifier", "choose_tour"]


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
            if used + extra_min > inp.shift_minutes + MINUTES_TOL:
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
        if moves != ans.tour_moves or abs(minutes - ans.tour_minutes) > MINUTES_TOL * (1 + minutes):
            return f"tour takes {moves} moves, {minutes:g} minutes; the answer says {ans.tour_moves} moves, {ans.tour_minutes:g} minutes"
        if minutes > inp.shift_minutes + MINUTES_TOL:
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
            if minutes + ins[0] * inp.minutes_per_move + inp.service_minutes <= inp.shift_minutes + MINUTES_TOL:
                return f"dropped stop {sid!r} (demand {demand[sid].mean:g}) still fits in the shift"
        return None

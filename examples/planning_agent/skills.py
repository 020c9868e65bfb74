"""The planning agent's tool skills and their verifiers.

- ``delivery.choose``: choose and order the stops to serve within the shift. A greedy
  value-per-minute insertion heuristic with 2-opt, then re-insertion until nothing more fits.
  Its verifier (``delivery.tour``) recomputes every distance from the grid and checks that the
  tour visits distinct, reachable stops, fits the shift, reports its minutes and demand
  honestly, and is *maximal*: no dropped stop with demand fits anywhere in it.
- ``delivery.itinerary``: turn the chosen order and the routed legs into arrival times and
  expected demand served. Its verifier (``delivery.schedule``) checks the legs join the stops
  in order, each is a legal shortest path on the grid, and the times add up and fit the shift.

Both are deterministic tools (tier kind ``tool``, run inline in the driver). The payloads live
in :mod:`.payloads`, the tour in :mod:`.tour`, the itinerary in :mod:`.itinerary`; every name
is importable from here as before.
"""

from __future__ import annotations

from workers.base import PoolOptions, Skill, Tier
from workers.builtin import default_registry
from workers.registry import SkillRegistry

from .itinerary import ItineraryBuilder, ItineraryVerifier, build_itinerary
from .payloads import (
    ChooseInput,
    ChooseOutput,
    DemandForecast,
    ItineraryInput,
    ItineraryOutput,
    Leg,
    LegPath,
    StopDemand,
    StopRef,
    Visit,
)
from .tour import TourChooser, TourVerifier, choose_tour

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
    "build_itinerary",
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

_TOOL_POOL = PoolOptions(inline=True, max_batch=64, max_wait_ms=0.0)


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

"""The run loop's steps in flight: each started as a task, at most ``limit`` at once (the rest
wait as ids, in plan order), each reporting itself on a list when it finishes.

So finding the finished steps costs the number that finished, never the number running
(``asyncio.wait`` over n tasks adds and removes n callbacks every time one finishes), and a
plan of 100,000 steps holds at most ``limit`` coroutines (a few kB each) at a time.

:func:`fewer_collections`: while a plan of more than :data:`LARGE_PLAN_STEPS` steps runs,
CPython's cyclic garbage collector looks at its young objects every :data:`YOUNG_THRESHOLD`
allocations instead of every 700. Measured on 100,000 no-op steps: with the default, objects
of steps in flight reach the oldest generation and set off full collections over a heap that
holds the whole plan (18 s of 33 s of driver CPU); raised, the collector took 0.06 ms a step
and the driver's time per step was 1.23x that of a 1,000-step run.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import deque
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

__all__ = ["InFlight", "fewer_collections", "LARGE_PLAN_STEPS", "YOUNG_THRESHOLD"]

LARGE_PLAN_STEPS = 5_000
"""Plans above this many steps run with :func:`fewer_collections`."""
YOUNG_THRESHOLD = 50_000
"""The collector's first threshold (``gc.set_threshold``) while a large plan runs."""

T = TypeVar("T")


class InFlight(Generic[T]):
    """Running steps (task -> step id), the released steps waiting for room, and the finished
    ones the loop has not taken yet."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be >= 1")
        self.limit = limit
        self.running: dict[asyncio.Task[T], str] = {}
        self.waiting: deque[str] = deque()
        self._finished: list[asyncio.Task[T]] = []
        self._failed: asyncio.Task[T] | None = None  # the first step that raised, not yet raised here
        self._wake = asyncio.Event()

    @property
    def full(self) -> bool:
        return len(self.running) >= self.limit

    def start(self, key: str, work: Coroutine[Any, Any, T]) -> None:
        task = asyncio.ensure_future(work)
        task.add_done_callback(self._done)
        self.running[task] = key

    def _done(self, task: asyncio.Task[T]) -> None:
        self._finished.append(task)
        self._wake.set()

    async def finished(self, timeout: float | None) -> list[tuple[str, T]] | None:
        """The steps that finished since the last call with a result, as (step id, result),
        waiting up to ``timeout`` seconds (None: no limit) for the first; None when the time ran
        out first. A step that raised (or was cancelled) is kept for :meth:`raise_failure`, so
        the results that finished beside it are handed back (and journaled) first."""
        if not self._finished:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                if not self._finished:
                    return None
        done, self._finished = self._finished, []
        out: list[tuple[str, T]] = []
        for t in done:
            key = self.running.pop(t)
            if not t.cancelled() and t.exception() is None:
                out.append((key, t.result()))
            elif self._failed is None:
                self._failed = t
        return out

    def raise_failure(self) -> None:
        """Raise what the first step that failed raised (see :meth:`finished`); else nothing."""
        failed, self._failed = self._failed, None
        if failed is not None:
            failed.result()

    async def cancel(self) -> tuple[list[str], list[tuple[str, T]]]:
        """Cancel every running step and wait for them. Returns the ids of the steps stopped,
        and (step id, result) of those that had finished with a result all the same (done in
        the tick of the cancel, not yet handed back by :meth:`finished`)."""
        tasks = list(self.running)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopped: list[str] = []
        finished: list[tuple[str, T]] = []
        for t, key in self.running.items():
            if not t.cancelled() and t.exception() is None:
                finished.append((key, t.result()))
            else:
                stopped.append(key)
        self.running.clear()
        self._finished.clear()
        return stopped, finished


class _Collector:
    """How many large runs are going (in any thread), and the thresholds to put back when the
    last ends (None: this module changed nothing)."""

    lock = threading.Lock()
    runs = 0
    saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections(steps: int) -> Iterator[None]:
    """For a plan of more than :data:`LARGE_PLAN_STEPS` steps, raise the collector's first
    threshold to :data:`YOUNG_THRESHOLD` until the last such run in this process ends, then put
    the thresholds back. A process whose first threshold is already as high, or 0 (automatic
    collection off), keeps its own."""
    if steps <= LARGE_PLAN_STEPS:
        yield
        return
    with _Collector.lock:
        if _Collector.runs == 0:
            current = gc.get_threshold()
            if 0 < current[0] < YOUNG_THRESHOLD:
                _Collector.saved = (current[0], current[1], current[2])
                gc.set_threshold(YOUNG_THRESHOLD, current[1], current[2])
        _Collector.runs += 1
    try:
        yield
    finally:
        with _Collector.lock:
            _Collector.runs -= 1
            if _Collector.runs == 0 and _Collector.saved is not None:
                gc.set_threshold(*_Collector.saved)
                _Collector.saved = None

"""Scale (issue 18, item 5): a large run keeps a summary per step in memory and every attempt
in its journal; the whole report is read back from there (``report_steps``, ``run --json``);
at most ``MAX_RUNNING_STEPS`` steps are in flight; finished steps of one tick share one
journal transaction. Speed and memory numbers are ``tinyfleet bench scale``'s, not asserted
here."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import orchestrator.run as run_module
from orchestrator import Fleet, Task
from orchestrator.inflight import InFlight
from orchestrator.journal import Journal, report_steps, write_report_json
from tinyfleet_core.models import Event, RunReport
from workers.custom import define_skill, tier


class N(BaseModel):
    k: int


class Echo(BaseModel):
    k: int


def _skill() -> Any:
    """Echo k; the verifier rejects k == 3 (that step fails, its trials kept)."""
    return define_skill(
        "test.echo", "Echo k.", N, Echo,
        ladder=[tier("echo", lambda x: Echo(k=x.k), max_batch=16)],
        verifier=lambda x, ans: (ans.k == x.k and x.k != 3, "k 3 is refused"),
    )


def _run(n: int, journal: Path | None, on_event: Any = None, **kw: Any) -> RunReport:
    with Fleet(executor="local") as fleet:
        fleet.add_skill(_skill())
        task = Task(id=f"echo-{n}", skill="test.echo", inputs={"items": [{"k": k} for k in range(n)]})
        return fleet.run_sync(task, journal=journal, on_event=on_event, **kw)


def _without_times(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for s in steps:
        s.pop("started_at"), s.pop("finished_at")
        s["cost"].pop("worker_s"), s["cost"].pop("verifier_s")
        for t in s["trials"]:
            t["attempt"]["cost"].pop("worker_s")
    return steps


def test_a_large_journaled_run_keeps_settled_steps_without_trials_and_reads_them_back(tmp_path: Path) -> None:
    full = _run(40, tmp_path / "full.sqlite", keep_trials=True)
    small = _run(40, tmp_path / "small.sqlite", keep_trials=False)
    assert small.status == full.status == "failed" and small.output == full.output
    assert small.totals.verified == 39 and small.totals.failed == 1
    kept = {s.step_id: bool(s.trials) for s in small.steps}
    assert kept == {f"item{k}": k == 3 for k in range(40)}  # only the failed step keeps its trials in memory
    assert all(s.trials for s in full.steps)
    back = list(report_steps(small))
    assert [s.step_id for s in back] == [f"item{k}" for k in range(40)] and all(s.trials for s in back)
    assert _without_times([s.model_dump() for s in back]) == _without_times([s.model_dump() for s in full.steps])
    assert list(report_steps(full)) == full.steps  # nothing to read back: the report itself


def test_run_json_of_a_large_run_prints_every_step_whole(tmp_path: Path) -> None:
    small = _run(30, tmp_path / "j.sqlite", keep_trials=False)
    out = io.StringIO()
    write_report_json(small, out)
    printed = json.loads(out.getvalue())
    assert set(printed) == set(RunReport.model_fields)
    assert RunReport.model_validate(printed).totals == small.totals
    assert [len(s["trials"]) for s in printed["steps"]] == [1] * 30
    assert printed["steps"][5]["output"] == {"k": 5} and printed["steps"][5]["trials"][0]["verdict"]["ok"] is True
    plain = io.StringIO()
    write_report_json(_run(3, None), plain)  # a report that holds its trials: pydantic's own JSON
    assert json.loads(plain.getvalue())["steps"][0]["trials"]


def test_trials_are_left_out_past_the_threshold_only_with_a_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "TRIALS_KEPT_UP_TO", 10)
    assert not any(s.trials for s in _run(20, tmp_path / "big.sqlite").steps if s.settled)
    assert all(s.trials for s in _run(20, None).steps)  # nowhere else to keep them
    assert all(s.trials for s in _run(10, tmp_path / "ten.sqlite").steps)


def test_a_resumed_large_run_reads_resumed_steps_back_flagged(tmp_path: Path) -> None:
    journal = tmp_path / "r.sqlite"
    first = _run(12, journal, keep_trials=False)
    with Fleet(executor="local") as fleet:
        fleet.add_skill(_skill())
        again = fleet.run_sync(resume=journal, keep_trials=False)
    assert again.totals.resumed == 11 and first.totals.verified == 11  # the failed step ran again
    back = {s.step_id: s for s in report_steps(again)}
    assert back["item0"].resumed and back["item0"].trials and not back["item3"].resumed
    assert Journal.open_existing(journal).settled(trials=False)["item0"].trials == []


def test_no_more_than_max_running_steps_are_in_flight_and_they_start_in_plan_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "MAX_RUNNING_STEPS", 8)
    live: set[str] = set()
    peak = 0
    started: list[str] = []

    def count(ev: Event) -> None:
        nonlocal peak
        if ev.kind == "step_dispatched" and ev.step_id not in live:
            assert ev.step_id is not None
            live.add(ev.step_id)
            started.append(ev.step_id)
            peak = max(peak, len(live))
        elif ev.kind == "step_done" and ev.step_id is not None:
            live.discard(ev.step_id)

    report = _run(200, None, on_event=count)
    assert report.totals.verified == 199 and report.totals.failed == 1
    assert peak == 8
    assert started == [f"item{k}" for k in range(200)]


async def test_inflight_hands_back_what_finished_and_times_out() -> None:
    flight: InFlight[int] = InFlight(2)

    async def after(s: float, v: int) -> int:
        await asyncio.sleep(s)
        return v

    flight.start("a", after(0.0, 1))
    flight.start("b", after(30.0, 2))
    assert flight.full
    assert await flight.finished(10) == [("a", 1)]
    assert await flight.finished(0.05) is None  # b still runs
    assert await flight.cancel() == (["b"], []) and not flight.running


async def test_a_cancel_hands_back_a_step_that_finished_in_its_tick() -> None:
    flight: InFlight[int] = InFlight(2)

    async def value(v: int) -> int:
        return v

    flight.start("a", value(1))
    flight.start("b", asyncio.sleep(30, 2))
    await asyncio.sleep(0)  # a has run to its end; the loop has not taken it yet
    assert await flight.cancel() == (["b"], [("a", 1)]) and not flight.running


def test_steps_finishing_together_share_one_journal_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = Journal.append_many

    def spy(self: Journal, results: Any) -> None:
        results = list(results)
        calls.append(len(results))
        original(self, results)

    monkeypatch.setattr(Journal, "append_many", spy)
    report = _run(64, tmp_path / "t.sqlite")
    assert report.totals.steps == 64 and sum(calls) == 64
    assert len(calls) < 64 and max(calls) > 1  # batches of 16 finish together
    assert len(Journal.open_existing(tmp_path / "t.sqlite").entries()) == 64


@pytest.mark.slow
def test_bench_scale_tiny_runs_each_size_in_a_fresh_process() -> None:
    from tinyfleet.bench import BENCHMARKS, scale

    assert BENCHMARKS["scale"] == ".scale"
    res = scale.run(quick=True, tiny=True)
    assert [r["steps"] for r in res["rows"]] == [50, 500] and res["ok"] is None  # targets are judged at 100,000
    for r in res["rows"]:
        assert r["all verified"] and r["steps with trials in memory"] == r["steps"]  # under the threshold: kept
        assert 1 <= r["peak Ray calls in flight"] <= r["in-flight bound"] == 8
        assert r["peak RSS MiB"] >= r["RSS before MiB"] > 0 and r["report bytes"] > 0 and r["journal bytes"] > 0


def test_a_large_run_raises_the_collectors_young_threshold_and_puts_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import orchestrator.inflight as inflight

    monkeypatch.setattr(inflight, "LARGE_PLAN_STEPS", 10)
    before = gc.get_threshold()
    seen: list[int] = []
    _run(30, None, on_event=lambda ev: seen.append(gc.get_threshold()[0]) if ev.kind == "step_done" else None)
    assert set(seen) == {max(before[0], inflight.YOUNG_THRESHOLD)} and gc.get_threshold() == before
    seen.clear()
    _run(5, None, on_event=lambda ev: seen.append(gc.get_threshold()[0]) if ev.kind == "step_done" else None)
    assert set(seen) == {before[0]}  # a small plan leaves the collector alone
    with inflight.fewer_collections(100), inflight.fewer_collections(100):  # two large runs at once
        assert gc.get_threshold()[0] == max(before[0], inflight.YOUNG_THRESHOLD)
    assert gc.get_threshold() == before


def test_a_step_that_raises_loses_no_result_finished_in_the_same_tick(tmp_path: Path) -> None:
    """A step that raises (here: the run's own event hook, on one step's verdict) ends the run
    with that error; the steps that finished in the same tick are journaled first."""
    dispatched: set[str] = set()

    def hook(ev: Event) -> None:
        if ev.kind == "step_dispatched" and ev.step_id is not None:
            dispatched.add(ev.step_id)
        if ev.kind == "verdict" and ev.step_id == "item2":
            raise RuntimeError("a hook's bug")

    journal = tmp_path / "boom.sqlite"
    with pytest.raises(RuntimeError, match="a hook's bug"):
        _run(8, journal, on_event=hook)
    journaled = {r.step_id for r in Journal.open_existing(journal).entries()}
    assert dispatched == {f"item{k}" for k in range(8)}  # one batch: all eight finished together
    assert journaled == dispatched - {"item2"}


async def test_inflight_hands_back_every_result_of_a_tick_before_a_failure() -> None:
    flight: InFlight[int] = InFlight(4)

    async def value(v: int) -> int:
        return v

    async def fail() -> int:
        raise ValueError("step bug")

    flight.start("a", value(1))
    flight.start("b", fail())
    flight.start("c", value(3))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    done = await flight.finished(10)
    assert done == [("a", 1), ("c", 3)]  # the results first ...
    with pytest.raises(ValueError, match="step bug"):
        flight.raise_failure()  # ... then the failure
    assert not flight.running


def test_a_resumed_step_reads_back_its_settled_entry_not_a_later_failure(tmp_path: Path) -> None:
    """The same journal written by a second fresh run (the same task id: ``runs/<id>.sqlite``)
    in which item0 failed: a resume takes item0's settled entry, and so does report_steps."""
    journal = tmp_path / "again.sqlite"
    _run(12, journal, keep_trials=False)
    refuse0 = define_skill(
        "test.echo", "Echo k.", N, Echo,
        ladder=[tier("echo", lambda x: Echo(k=x.k), max_batch=16)],
        verifier=lambda x, ans: (x.k not in (0, 3), "k 0 and 3 are refused"),
    )
    with Fleet(executor="local") as fleet:
        fleet.add_skill(refuse0)
        second = fleet.run_sync(Task(id="echo-12", skill="test.echo", inputs={"items": [{"k": k} for k in range(12)]}),
                                journal=journal, keep_trials=False)
    assert {s.step_id for s in second.steps if s.status == "failed"} == {"item0", "item3"}
    with Fleet(executor="local") as fleet:
        fleet.add_skill(_skill())
        resumed = fleet.run_sync(resume=journal, keep_trials=False)
    summary = {s.step_id: s for s in resumed.steps}
    assert summary["item0"].resumed and summary["item0"].status == "verified"
    back = {s.step_id: s for s in report_steps(resumed)}
    assert back["item0"].status == "verified" and back["item0"].resumed
    assert back["item0"].trials and all(t.verdict is not None and t.verdict.ok for t in back["item0"].trials)


def test_a_large_run_leaves_a_collector_switched_off_by_threshold_zero_alone() -> None:
    import gc

    import orchestrator.inflight as inflight

    before = gc.get_threshold()
    try:
        gc.set_threshold(0, before[1], before[2])  # automatic collection off, as some services run
        with inflight.fewer_collections(inflight.LARGE_PLAN_STEPS + 1):
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
    with inflight.fewer_collections(inflight.LARGE_PLAN_STEPS + 1):
        assert gc.get_threshold()[0] == max(before[0], inflight.YOUNG_THRESHOLD)
    assert gc.get_threshold() == before


def test_a_failed_commit_leaves_nothing_half_written_and_the_journal_writable(tmp_path: Path) -> None:
    import sqlite3

    from tinyfleet_core.models import StepResult

    jr = Journal(tmp_path / "locked.sqlite")
    jr._db.execute("PRAGMA busy_timeout = 0")  # fail at once instead of after SQLite's 5 s wait
    reader = sqlite3.connect(jr.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM steps").fetchall()  # a reader's lock: the commit cannot take the file
    first = [StepResult(step_id=f"a{k}", skill="s", status="verified") for k in range(3)]
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        jr.append_many(first)
    reader.execute("COMMIT")
    reader.close()
    jr.append_many([StepResult(step_id="b", skill="s", status="verified")])
    jr.close()
    assert [r.step_id for r in Journal(tmp_path / "locked.sqlite").entries()] == ["b"]


def test_resuming_a_large_run_never_holds_every_entrys_trials_at_once(tmp_path: Path) -> None:
    """``settled(trials=False)`` (a large run's resume) reads entries one at a time: its peak
    memory is one entry's payload, not the journal's."""
    import tracemalloc

    from tinyfleet_core.models import Attempt, StepResult, Trial

    jr = Journal(tmp_path / "wide.sqlite")
    blob = "x" * 50_000
    jr.append_many(
        StepResult(step_id=f"s{k}", skill="s", status="verified", output={"k": k},
                   trials=[Trial(attempt=Attempt(output={"blob": blob}, confidence=1.0, worker="w"))])
        for k in range(200)
    )  # 200 entries of 50 kB: 10 MB of trials in the journal
    tracemalloc.start()
    try:
        summary = jr.settled(trials=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        jr.close()
    assert len(summary) == 200 and summary["s7"].output == {"k": 7} and not summary["s7"].trials
    assert peak < 2_000_000, f"settled(trials=False) peaked at {peak / 1e6:.1f} MB for 10 MB of trials"


def test_the_text_report_of_a_large_run_reads_a_climbing_steps_reasons_from_the_journal(tmp_path: Path) -> None:
    from orchestrator.console import escalations_of

    def _ladder() -> Any:
        """The first tier answers k + 1 on odd k (refused: the step climbs with the verifier's reason)."""
        return define_skill(
            "test.climb", "Echo k.", N, Echo,
            ladder=[tier("sloppy", lambda x: Echo(k=x.k + x.k % 2), max_batch=16), tier("exact", lambda x: Echo(k=x.k))],
            verifier=lambda x, ans: (ans.k == x.k, f"wanted {x.k}, got {ans.k}"),
        )

    reports = {}
    for keep in (True, False):
        with Fleet(executor="local") as fleet:
            fleet.add_skill(_ladder())
            task = Task(id=f"climb-{keep}", skill="test.climb", inputs={"items": [{"k": k} for k in range(12)]})
            reports[keep] = fleet.run_sync(task, journal=tmp_path / f"{keep}.sqlite", keep_trials=keep)
    assert not any(s.trials for s in reports[False].steps)  # settled steps kept in the journal only
    whole, small = escalations_of(reports[True]), escalations_of(reports[False])
    assert len(whole) == 6 and [e.reason for e in small] == [e.reason for e in whole]
    assert all("wanted" in e.reason for e in small)


def test_the_run_view_of_a_large_run_shows_every_settled_steps_attempts(tmp_path: Path) -> None:
    from orchestrator.view.document import document_from_report

    small = _run(20, tmp_path / "v.sqlite", keep_trials=False)
    assert not small.steps[0].trials  # kept in the journal only
    doc, details = document_from_report(small, source="live")
    assert [len(details[f"item{k}"]["trials"]) for k in range(20)] == [1] * 20
    assert doc["tiers"]["echo"]["attempts"] == 20  # per-tier counts include the steps read back

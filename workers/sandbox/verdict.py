"""The verdict of a sandboxed run: the judge's report parsed record by record, and the ruling
that turns it, with how each process ended, into a :class:`SandboxResult` naming the first
thing that went wrong. Nothing the candidate says is read here: only the judge's records and
what the relays and the kernel report."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.sandbox.limits import CHANNEL_CAP, Containment, SandboxLimits
from workers.sandbox.plan import TestPlan

__all__ = ["Ending", "Report", "SandboxResult", "TestOutcome", "describe_exit", "parse_report", "rule"]

_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


@dataclass(frozen=True)
class TestOutcome:
    name: str
    ok: bool
    error: str = ""
    """``Type (line N): message`` of the failure, truncated; empty when the test passed."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. ``ok`` only when every test ran, passed, and the harness finished."""

    ok: bool
    reason: str
    tests: tuple[TestOutcome, ...]
    contained: Containment | None = None
    """Why the run was stopped or cut short, when it was."""
    violations: tuple[str, ...] = ()
    stdout: str = ""
    stderr: str = ""
    exit: str = ""
    wall_s: float = 0.0
    cpu_s: float | None = None
    isolation: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(t.ok for t in self.tests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """What the judge said, record by record."""

    load: dict[str, Any] | None = None
    tests: dict[int, dict[str, Any]] = field(default_factory=dict)
    module_error: str = ""
    done: int | None = None
    corrupt: str = ""
    flooded: bool = False


@dataclass(frozen=True)
class Ending:
    """How one sandboxed process ended: what its relay reported (``(how, number, cpu_s)`` with
    ``how`` "signal" or "exit"; None when it reported nothing) and the relay's return code."""

    exit: tuple[str, int, float] | None
    returncode: int | None


def parse_report(raw: bytes) -> Report:
    """The judge's result lines as a Report; a line that is not a JSON record marks it corrupt."""
    rep = Report()
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rep.corrupt = rep.corrupt or f"an unreadable line from the judge: {line[:60]!r}"
            continue
        if not isinstance(rec, dict):
            continue
        k = rec.get("k")
        if k == "load":
            rep.load = rec
        elif k == "test" and isinstance(rec.get("i"), int):
            if rec["i"] in rep.tests:
                rep.corrupt = rep.corrupt or f"test {rec['i']} reported twice"
            rep.tests[rec["i"]] = rec
        elif k == "module_error":
            rep.module_error = str(rec.get("error", ""))
        elif k == "done" and isinstance(rec.get("n"), int):
            rep.done = rec["n"]
    return rep


# --- the ruling ------------------------------------------------------------------------------


def describe_exit(exit: tuple[str, int, float] | None, returncode: int | None) -> str:
    if exit is not None:
        how, number, _ = exit
        return f"signal {_SIGNAL_NAMES.get(number, number)}" if how == "signal" else f"exit {number}"
    return f"exit {returncode}" if returncode is not None and returncode >= 0 else f"signal {-(returncode or 0)}"


def rule(plan: TestPlan, rep: Report, limits: SandboxLimits, timed_out: bool, cand: Ending, judge: Ending,
          outputs: tuple[str, str], wall: float, isolation: dict[str, str], leftovers: list[str]) -> SandboxResult:
    names = plan.names
    outcomes = []
    for i, name in enumerate(names):
        if rep.load is not None and not rep.load.get("ok"):
            outcomes.append(TestOutcome(name, False, "not run: the candidate code failed to load"))
        elif i in rep.tests:
            t = rep.tests[i]
            outcomes.append(TestOutcome(name, bool(t.get("ok")), str(t.get("error", ""))[:1000]))
        else:
            outcomes.append(TestOutcome(name, False, "not run: the run ended first"))
    contained, reason = _reason(plan, rep, outcomes, limits, timed_out, cand, judge)
    violations = tuple(f"{len(leftovers)} process(es) of the sandbox outlived its PID 1 and were killed" for _ in leftovers[:1])
    if violations and contained is None:
        contained, reason = "crash", violations[0]
    ok = contained is None and reason == ""
    if ok:
        reason = f"all {len(names)} tests passed"
    cpu = cand.exit[2] if cand.exit else None
    return SandboxResult(
        ok=ok, reason=reason, tests=tuple(outcomes), contained=contained, violations=violations,
        stdout=outputs[0], stderr=outputs[1], exit=describe_exit(cand.exit, cand.returncode),
        wall_s=round(wall, 4), cpu_s=cpu, isolation=isolation,
    )


def _reason(plan: TestPlan, rep: Report, outcomes: list[TestOutcome], limits: SandboxLimits, timed_out: bool,
            cand: Ending, judge: Ending) -> tuple[Containment | None, str]:
    """The first thing that went wrong, as (containment, reason); (None, "") when nothing did."""
    names = plan.names
    first_missing = next((n for i, n in enumerate(names) if i not in rep.tests), None)
    during = f" (during {first_missing})" if first_missing and rep.load and rep.load.get("ok") else ""
    kinds = [str(t.get("kind")) for t in rep.tests.values()] + ([str(rep.load.get("kind"))] if rep.load else [])
    if rep.flooded:
        return "output", f"the judge flooded the result channel (over {CHANNEL_CAP} bytes); killed both sandboxes"
    if timed_out:
        return "timeout", f"wall-clock timeout: killed both sandboxes' PID 1 after {limits.wall_s:g} s{during}"
    if rep.corrupt:
        return "channel", f"a corrupted report from the judge ({rep.corrupt}); failing closed"
    if "died" in kinds:
        where = next((t.name for t in outcomes if "candidate process ended" in t.error), "loading the code")
        return _candidate_death(cand, limits, where)
    if rep.done is None and not rep.module_error and not (rep.load and not rep.load.get("ok")):
        exit_text = describe_exit(judge.exit, judge.returncode)
        if judge.exit and judge.exit[0] == "signal" and judge.exit[1] == signal.SIGKILL and judge.exit[2] >= _cpu_floor(limits):
            return "cpu", f"CPU time limit ({limits.cpu_s} s) exceeded by the tests{during}"
        return "crash", f"the judge ended before it finished ({exit_text}){during}"
    for kind, containment, text in (
        ("memory", "memory", f"memory limit ({limits.memory_mb} MiB) exceeded"),
        ("output", "output", f"output/file size limit ({limits.file_mb} MiB) exceeded"),
        ("forbidden", "forbidden", "forbidden operation refused by the kernel"),
        ("channel", "channel", "the candidate's answer could not cross the plain-data channel"),
        ("unexpressible", "unexpressible", "a test cannot be expressed across the plain-data channel"),
    ):
        if kind in kinds:
            hit = next((t for i, t in enumerate(outcomes) if rep.tests.get(i, {}).get("kind") == kind), None)
            detail = f" in {hit.name}: {hit.error}" if hit else f": {rep.load.get('error', '') if rep.load else ''}"
            return containment, text + detail  # type: ignore[return-value]
    if rep.load is not None and not rep.load.get("ok"):
        return None, f"the candidate code failed to load: {rep.load.get('error', '')}"
    if rep.module_error:
        return None, rep.module_error
    failed = [t for i, t in enumerate(outcomes) if i in rep.tests and not t.ok]
    if failed:
        return None, f"{len(failed)} of {len(names)} tests failed; first: {failed[0].name}: {failed[0].error}"
    if rep.load is None or len(rep.tests) < len(names) or rep.done != len(names):
        return "early_exit", f"the judge ended before it finished ({len(rep.tests)} of {len(names)} tests reported)"
    return None, ""


def _cpu_floor(limits: SandboxLimits) -> float:
    """CPU seconds at which a kill counts as the CPU limit: the kernel's accounting at the
    kill can read a little under the limit on a loaded machine (0.955 s of 1 s seen)."""
    return limits.cpu_s * 0.9


def _candidate_death(cand: Ending, limits: SandboxLimits, where: str) -> tuple[Containment, str]:
    exit_text = describe_exit(cand.exit, cand.returncode)
    cpu = cand.exit[2] if cand.exit else 0.0
    if cand.exit and cand.exit[0] == "signal":
        if cand.exit[1] in (signal.SIGXCPU, signal.SIGKILL) and cpu >= _cpu_floor(limits):
            return "cpu", f"CPU time limit ({limits.cpu_s} s) exceeded (during {where})"
        if cand.exit[1] == signal.SIGXFSZ:
            return "output", f"output/file size limit ({limits.file_mb} MiB) exceeded (during {where})"
        return "crash", f"the candidate process was killed by {exit_text} (during {where})"
    return "early_exit", (
        f"the candidate process ended itself ({exit_text}) before the judge finished (during {where}): "
        "sys.exit, os._exit or a signal in the code"
    )

"""dag: a wide DAG of I/O-bound steps, run one at a time vs the fleet's parallel dispatch.

Each step is answered by the small-LLM tier (``workers.llm.SmallLLMWorker``, real ``openai``
client over HTTP) against :class:`BenchStubServer` (in its own process) with a fixed latency
per request. The
same fleet runs two plans per width W: W independent steps (the fleet dispatches them
together), and the same W steps chained with ``after`` edges (one at a time). Speed-up =
chained wall time / parallel wall time. Target: >= 0.8 x W for W up to 16.

Latency per call: 0.5 s (full run), 0.2 s (``--quick``): small-LLM calls take that long or
longer. What limits the speed-up at large W on 2 cores is CPU per request in the driver
(the ``openai`` client, ~5 ms a request here, plus ~50 ms to build a client per batch), which
the table shows as the per-step overhead of the one-at-a-time runs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
from typing import Any

from pydantic import BaseModel

from planners.rules import RulePlanner
from workers.base import PoolOptions, Skill, Tier
from workers.llm import SmallLLMWorker
from workers.registry import SkillRegistry

from ..fleet import Fleet
from ..models import Plan, Step, Task
from .stub_server import BenchStubServer, last_user_text

__all__ = ["run", "LookupInput", "LookupOutput", "WIDTHS"]

WIDTHS = (2, 4, 8, 16)


class LookupInput(BaseModel):
    question: str


class LookupOutput(BaseModel):
    answer: str


def _answer(body: dict[str, Any]) -> str:
    return json.dumps({"answer": f"echo: {last_user_text(body)[-40:]}"})


def _skill(stub: BenchStubServer) -> Skill:
    worker = functools.partial(
        SmallLLMWorker,
        "bench.lookup",
        "Answer a question (benchmark stub).",
        LookupOutput,
        settings=stub.settings(),
        max_in_flight=64,
    )
    pool = PoolOptions(inline=True, max_batch=64, max_wait_ms=5.0, max_concurrency=8, num_cpus=0.0, timeout_s=120.0)
    return Skill(
        name="bench.lookup",
        description="Answer a question (an I/O-bound benchmark step).",
        input_model=LookupInput,
        output_model=LookupOutput,
        ladder=[Tier("llm-small", worker, "llm", pool)],
    )


def _plan(width: int, chained: bool, tag: str) -> Plan:
    steps = [
        Step(id=f"q{k}", skill="bench.lookup", inputs={"question": f"{tag} question {k}"}, after=[f"q{k - 1}"] if chained and k else [])
        for k in range(width)
    ]
    return Plan(steps=steps, output=[s.id for s in steps])


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    latency = 0.05 if tiny else (0.2 if quick else 0.5)
    widths = (2, 4) if tiny else WIDTHS
    reps = 1 if tiny else (2 if quick else 3)

    async def go() -> dict[int, tuple[float, float]]:
        out: dict[int, tuple[float, float]] = {}
        with BenchStubServer(_answer, latency_s=latency, process=True) as stub:
            fleet = Fleet(planner=RulePlanner(), registry=SkillRegistry([_skill(stub)]), executor="local")
            try:
                await fleet.run(Task(goal="warm up"), plan=_plan(2, False, "warm"))
                for w in widths:
                    seq: list[float] = []
                    par: list[float] = []
                    for r in range(reps):
                        for chained, bucket in ((True, seq), (False, par)):
                            rep = await fleet.run(Task(goal=f"dag width {w}"), plan=_plan(w, chained, f"r{r}"))
                            if rep.status != "succeeded":
                                raise RuntimeError(f"dag width {w} ({'chained' if chained else 'parallel'}) run {rep.status}: {rep.error}")
                            bucket.append(rep.totals.wall_s)
                    out[w] = (statistics.median(seq), statistics.median(par))
            finally:
                await fleet.close()
        return out

    times = asyncio.run(go())
    rows = []
    ok = True
    worst = ""
    worst_frac = float("inf")
    for w, (t_seq, t_par) in times.items():
        speedup = t_seq / t_par
        frac = speedup / w
        ok &= frac >= 0.8
        if frac < worst_frac:
            worst_frac, worst = frac, f"width {w}: {speedup:.1f}x ({frac:.2f} x width)"
        rows.append({"width": w, "one at a time s": t_seq, "parallel s": t_par, "speed-up": speedup,
                     "target": 0.8 * w, "speed-up / width": frac,
                     "overhead per step ms (one at a time)": 1000 * (t_seq / w - latency)})
    summary = (
        f"{latency * 1000:.0f} ms per LLM call (stub); speed-up at widths {', '.join(str(w) for w in times)}: "
        + ", ".join(f"{r['speed-up']:.1f}x" for r in rows)
        + f" (target >= 0.8 x width; weakest {worst}; median of {reps})"
    )
    return {"rows": rows, "summary": summary, "ok": ok,
            "plot": {"kind": "line", "x": "width", "y": ["speed-up", "target"], "title": f"dag: parallel vs one at a time ({latency * 1000:.0f} ms calls)"}}

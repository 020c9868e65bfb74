"""dag: W independent lookups, the fleet against a sequential ReAct-style agent, on the same
simulated latencies.

Both sides talk over real HTTP to one simulated-LLM server (:mod:`.simulated_llm`, its own
process): the large model is ``GPT4O_CLASS`` (0.40 s to first token, 63 tok/s), the lookups
are answered by ``SMALL_CLASS`` (0.30 s, 100 tok/s); service time is first-token time plus the
reply's tokens at that rate, so a longer answer takes longer on both sides.

- ``fleet``: ``Fleet.run`` with the real ``OpenAIPlanner``: one planning call (the simulated
  model writes a plan of W ``bench.lookup`` steps), then the W steps dispatched together to
  the small-LLM tier (``workers.llm.followers.SmallLLMWorker``).
- ``react``: the agent loop a user would write without a planner: the large model is called
  with the transcript so far, answers ``Thought / Action / Action Input``, the tool (the same
  small model, the same lookup prompt) runs, its ``Observation`` is appended, W times, then
  one more call for the ``Final Answer``. W+1 large calls, each with a longer prompt.

Wall time is measured around the whole run on each side (planning included for the fleet).
Target (can fail): at every width the fleet finishes faster than the ReAct loop. Its
speed-up is capped by the planning call, whose output grows with W. Tokens and dollars (all
LLM calls, large and small) are reported side by side, not judged: the planner's prompt (the
skill list and plan schema) is long, so at small W the fleet sends more tokens than ReAct.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import statistics
import time
from typing import Any

from pydantic import BaseModel

from orchestrator.fleet import Fleet
from planners.openai import OpenAIPlanner
from tinyfleet.bench.escalation import prices
from tinyfleet.bench.simulated_llm import SimConfig
from tinyfleet.bench.stub_server import BenchStubServer, last_user_text
from tinyfleet_core.models import Cost, Task
from workers.base import PoolOptions, Skill, Tier
from workers.llm.client import ChatClient
from workers.llm.followers import SmallLLMWorker
from workers.registry import SkillRegistry

__all__ = ["run", "LookupInput", "LookupOutput", "WIDTHS", "answer", "react"]

WIDTHS = (2, 4, 8, 16)
_REACT_SYSTEM = (
    "You are a ReAct agent. Tools: bench.lookup(question) answers one question. Work one step at a time: reply "
    "'Thought: ...' then 'Action: bench.lookup' and 'Action Input: {\"question\": ...}', or, when every question "
    "is answered, 'Final Answer: ' with a JSON list of the answers in order."
)


class LookupInput(BaseModel):
    question: str


class LookupOutput(BaseModel):
    answer: str


def _questions(body: dict[str, Any]) -> list[str]:
    for m in body.get("messages", []):
        if m.get("role") == "user":
            text = str(m.get("content", ""))
            _, sep, rest = text.partition("inputs (JSON): ")
            if sep:
                doc = json.loads(rest.splitlines()[0])
                return [str(q) for q in doc["questions"]]
    raise ValueError("no task inputs with questions in the request")


def answer(body: dict[str, Any]) -> str:
    """The simulated models' right replies: a plan for the planner, the next ReAct move for the
    agent, a short answer for a lookup."""
    system = next((str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "system"), "")
    if "planner of tinyfleet" in system:
        qs = _questions(body)
        steps = [{"id": f"q{k}", "skill": "bench.lookup", "inputs": {"question": q}} for k, q in enumerate(qs)]
        return json.dumps({"steps": steps, "output": [s["id"] for s in steps]})
    if system.startswith("You are a ReAct agent"):
        qs = _questions(body)
        obs = [m for m in body["messages"] if m.get("role") == "user" and str(m.get("content", "")).startswith("Observation:")]
        k = len(obs)
        if k < len(qs):
            return (f"Thought: I still need the answer to question {k + 1} of {len(qs)}.\nAction: bench.lookup\n"
                    f"Action Input: {json.dumps({'question': qs[k]})}")
        answers = [json.loads(str(m["content"]).removeprefix("Observation: "))["answer"] for m in obs]
        return "Thought: every question is answered.\nFinal Answer: " + json.dumps(answers)
    return json.dumps({"answer": f"echo: {last_user_text(body)[-40:]}"})


def _skill(stub: BenchStubServer) -> Skill:
    worker = functools.partial(
        SmallLLMWorker, "bench.lookup", "Answer a question (benchmark stub).", LookupOutput,
        settings=stub.settings(), max_in_flight=64,
    )
    pool = PoolOptions(inline=True, max_batch=64, max_wait_ms=5.0, max_concurrency=8, num_cpus=0.0, timeout_s=300.0)
    return Skill(
        name="bench.lookup",
        description="Answer a question (an I/O-bound benchmark step).",
        input_model=LookupInput,
        output_model=LookupOutput,
        ladder=[Tier("llm-small", worker, "llm", pool)],
    )


def _task(width: int, tag: str) -> Task:
    return Task(goal="Answer each question with bench.lookup; the output is the list of answers.",
                inputs={"questions": [f"{tag} question {k}" for k in range(width)]})


_ACTION = re.compile(r"Action Input: (\{.*\})")


async def react(large: ChatClient, small: ChatClient, settings: Any, task: Task, skill_system: str) -> tuple[list[str], Cost, int]:
    """The sequential ReAct-style loop: (answers, large-model cost, large calls)."""
    messages = [{"role": "system", "content": _REACT_SYSTEM},
                {"role": "user", "content": f"Task: {task.goal}\nTask inputs (JSON): {json.dumps(task.inputs)}"}]
    cost, calls = Cost(), 0
    for _ in range(len(task.inputs["questions"]) + 2):
        reply = await large.complete(messages, model=settings.large_model, what="react step")
        cost, calls = cost + reply.cost(large=True), calls + 1
        text = reply.text
        if "Final Answer:" in text:
            return list(json.loads(text.split("Final Answer:", 1)[1])), cost, calls
        m = _ACTION.search(text)
        if m is None:
            raise RuntimeError(f"the ReAct reply has no action: {text[:200]!r}")
        tool = await small.complete(
            [{"role": "system", "content": skill_system}, {"role": "user", "content": f"Input (JSON): {m.group(1)}"}],
            model=settings.small_model, what="react tool",
        )
        cost = cost + tool.cost(large=False)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"Observation: {tool.text}"}]
    raise RuntimeError("the ReAct loop did not finish")


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    widths = (2,) if tiny else WIDTHS
    reps = 1 if (tiny or quick) else 2
    sim = SimConfig(error_rates={}, seed=3)
    table = prices(sim)

    async def go() -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        with BenchStubServer(answer, process=True, sim=sim) as stub:
            settings = stub.settings(timeout_s=300.0)
            planner = OpenAIPlanner(settings, prices=table)
            skill = _skill(stub)
            fleet = Fleet(planner=planner, registry=SkillRegistry([skill]), executor="local")
            large, small = ChatClient(settings, prices=table), ChatClient(settings, prices=table)
            schema = json.dumps(LookupOutput.model_json_schema())
            skill_system = (f"Answer one task of skill bench.lookup: {skill.description}\n"
                            f"Reply with one JSON object only, matching this JSON schema:\n{schema}")
            try:
                await fleet.run(_task(2, "warm"))
                for w in widths:
                    f_s: list[float] = []
                    r_s: list[float] = []
                    for r in range(reps):
                        task = _task(w, f"r{r}")
                        t0 = time.perf_counter()
                        rep = await fleet.run(task)
                        f_s.append(time.perf_counter() - t0)
                        if rep.status != "succeeded":
                            raise RuntimeError(f"dag fleet width {w}: {rep.status}: {rep.error}")
                        t0 = time.perf_counter()
                        answers, rcost, rcalls = await react(large, small, settings, task, skill_system)
                        r_s.append(time.perf_counter() - t0)
                        if len(answers) != w:
                            raise RuntimeError(f"dag react width {w}: {len(answers)} answers")
                    out[w] = {"fleet_s": statistics.median(f_s), "react_s": statistics.median(r_s),
                              "fleet_large_calls": rep.totals.planner_calls + rep.totals.large_model_calls,
                              "react_large_calls": rcalls,
                              "fleet_tokens": rep.totals.tokens_in + rep.totals.tokens_out,
                              "react_tokens": rcost.tokens_in + rcost.tokens_out,
                              "fleet_usd": rep.totals.cost_usd, "react_usd": rcost.cost_usd}
            finally:
                await fleet.close()
                await planner.aclose()
                await large.aclose()
                await small.aclose()
        return out

    got = asyncio.run(go())
    rows = []
    ok = True
    for w, g in got.items():
        speedup = g["react_s"] / g["fleet_s"]
        ok &= g["fleet_s"] < g["react_s"]
        rows.append({"width": w, "react s": g["react_s"], "fleet s": g["fleet_s"], "speed-up": speedup,
                     "react large calls": g["react_large_calls"], "fleet LLM calls (plan)": g["fleet_large_calls"],
                     "react tokens": g["react_tokens"], "fleet tokens": g["fleet_tokens"],
                     "react $": g["react_usd"], "fleet $": g["fleet_usd"]})
    summary = (
        f"W lookups, fleet (1 planning call + parallel small-LLM steps) vs a sequential ReAct loop (W+1 large calls, "
        f"W tool calls) on the same simulated latencies; speed-up at widths {', '.join(str(w) for w in got)}: "
        + ", ".join(f"{r['speed-up']:.1f}x" for r in rows)
        + "; tokens " + ", ".join(f"{r['fleet tokens']} vs {r['react tokens']}" for r in rows)
        + f" (fleet vs react; target: fleet faster at every width; tokens not judged; median of {reps})"
    )
    return {"rows": rows, "summary": summary, "ok": ok, "simulated_model": sim.describe(),
            "plot": {"kind": "line", "x": "width", "y": ["react s", "fleet s"], "title": "dag: fleet vs sequential ReAct"}}

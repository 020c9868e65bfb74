"""The OpenAI-compatible planner and large model.

``OpenAIPlanner`` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp
server) with the async ``openai`` client. It

- **plans**: the task and the registered skills in, a typed :class:`~orchestrator.Plan` out,
  through structured output (a strict schema on OpenAI, ``planners.strict_schema``; the
  plain json_schema elsewhere; JSON mode, then plain text, when a server rejects one). The
  prompt carries the skills as short signatures and the task's large inputs as summaries;
  plans pass task data on by ``{"$input": path}`` instead of copying it. Replies are read by
  ``workers.llm.reply_parsing`` (prose, fences, ``<think>`` blocks, ``reasoning_content``). A
  plan with problems goes back once with *all* of them (``planners.plan_problems``) and only
  the last plan, not the whole conversation, a bounded number of times, then
  :class:`~tinyfleet_core.errors.ModelOutputError` (exit 1). A server that says the prompt is
  too long for its context gets smaller prompts, then :class:`ContextTooLong` saying what
  was sent;
- **replans** after failed steps, told what failed and why;
- **solves** escalated steps (the last tier of every ladder), typed by the skill's output
  model; the run loop verifies the answer like any other.

Every call goes through :class:`ChatClient`: tenacity retries with exponential backoff and
jitter on 429, 5xx, timeouts and connection errors (``Retry-After`` honoured up to a cap;
the client's own retries are off so they do not multiply), a timeout per call, token usage
and dollars from a :class:`~orchestrator.PriceTable` (the built-in one of ``workers.llm.prices``
by default). The API key is a ``SecretStr``; every
text that leaves this module (errors, log lines, attempt info) is scrubbed of it.
``http_client=`` (an ``httpx2.AsyncClient``) or ``transport=`` (an ``httpx2.MockTransport``
in tests) replace the network edge; the parsing, retries and billing stay these.

    planner = OpenAIPlanner.from_env(large_model="gpt-4o")      # OPENAI_API_KEY, OPENAI_BASE_URL
    report = await Fleet(planner=planner).run(Task(goal="..."))
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from planners.base import Planned
from planners.plan_problems import plan_problems
from planners.plan_prompt import (
    DETAILS,
    Detail,
    compact,
    failure_text,
    planner_system,
    task_text,
)
from planners.strict_schema import drop_strict_nulls, strict_plan_schema
from tinyfleet_core.errors import (
    ModelOutputError,
)
from tinyfleet_core.models import Attempt, Cost, Plan, Step, StepResult, Task
from tinyfleet_core.prices import PriceTable
from tinyfleet_core.validation import problems
from workers.base import Skill
from workers.llm.client import (  # noqa: F401  (moved; kept importable from here)
    ChatClient,
    Completion,
    ContextTooLong,
    LLMRequestError,
    LLMUnavailable,
    OpenAISettings,
    ResponseFormat,
    log,
    parse_json_reply,
)
from workers.llm.prices import load_price_table
from workers.llm.reply_parsing import ReplyError, excerpt, read_json_reply
from workers.registry import SkillRegistry

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "ChatClient",
    "Completion",
    "ContextTooLong",
    "LLMRequestError",
    "LLMUnavailable",
    "OpenAIPlanner",
    "OpenAISettings",
    "parse_json_reply",
]


# ---------------------------------------------------------------------------- replies


def _fit_error(e: ValidationError, limit: int = 6) -> str:
    parts = [f"{loc}: {msg}" for loc, msg in problems(e, limit)]
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _bare_schema(node: Any) -> Any:
    """A JSON schema without titles and descriptions (what a model needs, in fewer tokens)."""
    if isinstance(node, dict):
        return {k: _bare_schema(v) for k, v in node.items() if k not in ("title", "description")}
    if isinstance(node, list):
        return [_bare_schema(v) for v in node]
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return dict(_bare_schema(model.model_json_schema()))


_PLAN_SCHEMA = model_schema(Plan)

_SOLVE_SYSTEM = """You are the large model of tinyfleet. Smaller workers could not give a verified answer \
to this step, so it is yours. Your answer will be checked.
Skill {name}: {description}
Reply with one JSON object only, matching this JSON schema:
{schema}"""


class _PlanProblems(ValueError):
    """Internal: a reply's plan parsed but has problems (all of them, from ``plan_problems``)."""

    def __init__(self, plan: Plan, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.plan = plan
        self.problems = problems


class _NotAPlan(ValueError):
    """Internal: a JSON value that does not fit the plan schema."""


def _is_planlike(value: Any) -> bool:
    return isinstance(value, dict) and "steps" in value


def _best_failure(err: ReplyError) -> tuple[Any, list[str]]:
    """(the JSON to show the model again, its problems) of the most promising candidate:
    a plan with the fewest problems, else something shaped like a plan, else the first."""
    plans = [(v, e) for v, e in err.failures if isinstance(e, _PlanProblems)]
    if plans:
        value, e = min(plans, key=lambda p: len(p[1].problems))
        return value, list(e.problems)
    shaped = [(v, e) for v, e in err.failures if _is_planlike(v)]
    if shaped:
        return shaped[0][0], [str(shaped[0][1])]
    return None, [str(err)]


# ---------------------------------------------------------------------------- the planner


class OpenAIPlanner:
    """A planner and large model behind an OpenAI-compatible endpoint (see module docs)."""

    has_large_model = True

    def __init__(
        self,
        settings: OpenAISettings | None = None,
        *,
        prices: PriceTable | None = None,
        solve_confidence: float = 0.8,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings if settings is not None else OpenAISettings.from_env()
        self.prices = prices if prices is not None else load_price_table()
        # ConfigError without a key; http_client / transport replace the network edge (see ChatClient)
        self.chat = ChatClient(self.settings, prices=self.prices, http_client=http_client, transport=transport)
        self.model = self.settings.large_model
        self.name = f"openai:{self.model}"
        self.solve_confidence = solve_confidence
        """The large model reports no calibrated confidence; its unverifiable answers carry this."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        prices: PriceTable | None = None,
        solve_confidence: float = 0.8,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> OpenAIPlanner:
        """Build from the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
        ``TINYFLEET_LARGE_MODEL``, ...); keyword overrides that are not None win, e.g.
        ``OpenAIPlanner.from_env(large_model="gpt-4o", base_url="http://localhost:8000/v1")``.
        Raises ConfigError (saying what to set) when the key is missing."""
        return cls(
            OpenAISettings.from_env(env, **overrides), prices=prices, solve_confidence=solve_confidence,
            http_client=http_client, transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIPlanner(model={self.model!r}, base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        await self.chat.aclose()

    # ------------------------------------------------------------------ planning

    async def plan(self, task: Task, skills: SkillRegistry) -> Planned:
        return await self._fitting(task, skills, "plan", lambda d: task_text(task, d))

    async def replan(self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry) -> Planned:
        failed = [failure_text(r) for r in failures]

        def user(detail: Detail) -> str:
            return (
                f"{task_text(task, detail)}\n\nThe previous plan (JSON): {plan.model_dump_json(exclude_defaults=True)}\n"
                "These steps did not succeed (JSON, one per line):\n" + "\n".join(compact(f) for f in failed) + "\n\n"
                "Write a new complete plan for the task that avoids these failures: fix the inputs, split the work "
                "differently, or use another skill."
            )

        return await self._fitting(task, skills, "replan", user)

    async def _fitting(self, task: Task, skills: SkillRegistry, what: str, user: Any) -> Planned:
        """Plan with the fullest prompt; when the server says it does not fit its context,
        again with smaller ones (shorter summaries and skill descriptions); say what did
        not fit when even the smallest does not."""
        cost = Cost()
        too_long: ContextTooLong | None = None
        sizes: list[str] = []
        for level, detail in enumerate(DETAILS):
            system, text = planner_system(skills, detail), user(detail)
            sizes.append(f"level {level}: skills {len(system)} chars, task {len(text)} chars")
            try:
                planned = await self._plan_loop(system, text, task, skills, what)
            except ContextTooLong as e:
                too_long = e
                log.warning("%s: %s; trying a smaller prompt", what, e)
                continue
            if level:
                log.info("%s: the plan fitted with the prompt at detail level %d of %d", what, level, len(DETAILS) - 1)
            return Planned(planned.plan, planned.cost + cost)
        assert too_long is not None
        limit = f"{too_long.limit} tokens" if too_long.limit else "its limit"
        raise ContextTooLong(
            f"{what}: even the smallest prompt does not fit the context window of the model {self.model!r} at "
            f"{self.settings.base_url} ({limit}); what was sent: {'; '.join(sizes)}. The skill list and the task's goal "
            "text are sent whole: register fewer skills for this task, shorten the goal, or use a server with a "
            "longer context",
            limit=too_long.limit,
            requested=too_long.requested,
        )

    def _repair_message(self, shown: Any, problems: list[str]) -> list[dict[str, str]]:
        """The assistant's last plan and all its problems, within ``repair_budget_tokens``
        (counted as characters / 4)."""
        budget_chars = self.settings.repair_budget_tokens * 4
        plan_text = compact(shown) if shown is not None else ""
        lines: list[str] = []
        used = 0
        for k, p in enumerate(problems, 1):
            line = f"{k}. {p}"
            if used + len(line) > budget_chars // 2 and lines:
                lines.append(f"... and {len(problems) - k + 1} more problem(s)")
                break
            lines.append(line)
            used += len(line)
        n = len(problems)
        ask = (
            f"That plan has {n} problem{'s' if n != 1 else ''}; fix all of them at once:\n" + "\n".join(lines) + "\n"
            "Reply with the complete corrected plan as one JSON object."
        )
        out: list[dict[str, str]] = []
        if plan_text and len(plan_text) + used <= budget_chars:
            out.append({"role": "assistant", "content": plan_text})
        elif plan_text:
            ask = f"(Your last plan was {len(plan_text)} characters, too long to show again.)\n" + ask
        out.append({"role": "user", "content": ask})
        return out

    async def _plan_loop(self, system: str, user: str, task: Task, skills: SkillRegistry, what: str) -> Planned:
        base = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        messages = base
        strict = strict_plan_schema(skills) if self.chat.format == "json_schema_strict" else None
        cost = Cost()
        problems: list[str] = []
        last_reply = ""
        tries = self.settings.max_repairs + 1
        for k in range(tries):
            reply = await self.chat.complete(
                messages, model=self.model, schema=_PLAN_SCHEMA, schema_name="tinyfleet_plan", strict_schema=strict,
                what=f"{what} ({self.name})",
            )
            cost = cost + reply.cost(large=True)
            was_strict = reply.format == "json_schema_strict"

            def fit(value: Any, was_strict: bool = was_strict) -> Plan:
                if not isinstance(value, dict):
                    raise _NotAPlan(f"the JSON is a {type(value).__name__}; it must be an object with 'steps' and 'output'")
                if was_strict:
                    value = drop_strict_nulls(value, skills)
                try:
                    plan = Plan.model_validate(value)
                except ValidationError as e:
                    raise _NotAPlan(f"the reply does not fit the plan schema: {_fit_error(e)}") from None
                found = plan_problems(plan, skills, task.budget, task.inputs)
                if found:
                    raise _PlanProblems(plan, found)
                return plan

            try:
                plan = read_json_reply(reply.reply, fit, what="a plan {\"steps\": [...], \"output\": ...}")
                return Planned(plan, cost)
            except ReplyError as e:
                shown, problems = _best_failure(e)
                last_reply = reply.text or reply.reply.reasoning
            log.info("%s: plan %d/%d from %s has %d problem(s): %s", what, k + 1, tries, self.model, len(problems),
                     "; ".join(problems))
            messages = [*base, *self._repair_message(shown, problems)]
        quoted = any("the reply began" in p for p in problems)
        said = f'; its last reply began: "{excerpt(last_reply)}"' if last_reply.strip() and not quoted else ""
        raise ModelOutputError(
            f"the planner model {self.model!r} gave no valid plan in {tries} tries; last problem(s): "
            f"{'; '.join(problems)}{said}. Rephrase the goal, name the skill in the task, or use a stronger "
            "TINYFLEET_LARGE_MODEL"
        )

    # ------------------------------------------------------------------ escalations

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt:
        """Answer an escalated step, typed by the skill's output model. An answer that does not
        fit is re-asked with the problem (bounded); the run loop verifies what comes back."""
        schema = skill.output_model.model_json_schema()
        system = (
            _SOLVE_SYSTEM.replace("{name}", skill.name)
            .replace("{description}", skill.description)
            .replace("{schema}", compact(_bare_schema(schema)))
        )
        base = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Step {step.id!r} input (JSON): {inputs.model_dump_json()}"},
        ]
        messages = base
        cost = Cost()
        problem = ""
        t0 = time.perf_counter()
        tries = self.settings.max_repairs + 1

        def fit(value: Any) -> BaseModel:
            try:
                return skill.output_model.model_validate(value)
            except ValidationError as e:
                raise ValueError(_fit_error(e)) from None

        for k in range(tries):
            reply = await self.chat.complete(
                messages, model=self.model, schema=schema, schema_name=skill.name, what=f"solve {step.id} ({self.name})"
            )
            cost = cost + reply.cost(large=True)
            try:
                out = read_json_reply(reply.reply, fit, what=f"one {skill.output_model.__name__} object")
            except ReplyError as e:
                problem = str(e.failures[0][1]) if len(e.failures) == 1 else str(e)
            else:
                return Attempt(
                    output=out.model_dump(mode="json"),
                    confidence=self.solve_confidence,
                    worker=self.name,
                    # waiting on the model is not our CPU: no worker seconds, the wait is in info
                    cost=cost.model_copy(update={"particles": 1}),
                    info={"model": self.model, "calls": k + 1, "finish_reason": reply.finish_reason, "wait_s": time.perf_counter() - t0},
                )
            log.info("solve %s: answer %d/%d from %s does not fit %s: %s", step.id, k + 1, tries, self.model,
                     skill.output_model.__name__, problem)
            shown = reply.text if len(reply.text) <= self.settings.repair_budget_tokens * 2 else excerpt(reply.text, 400)
            messages = [
                *base,
                {"role": "assistant", "content": shown},
                {"role": "user", "content": f"That answer is invalid: {problem}\nReply with the corrected JSON object only."},
            ]
        return Attempt(
            output=None,
            confidence=0.0,
            worker=self.name,
            error=f"the large model's answer does not fit {skill.output_model.__name__} after {tries} tries: {problem}",
            cost=cost.model_copy(update={"particles": 1}),
            info={"model": self.model, "calls": tries, "wait_s": time.perf_counter() - t0},
        )

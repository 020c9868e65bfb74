"""The OpenAI-compatible planner and large model.

``OpenAIPlanner`` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp
server) with the async ``openai`` client. It

- **plans**: the task and the registered skills in, a typed :class:`~orchestrator.Plan` out,
  through structured output (``response_format`` json_schema from the pydantic model; JSON
  mode, then plain text, when a server rejects it). Plans that do not parse or do not pass
  :func:`~orchestrator.validate_plan` go back to the model with the exact problem, a bounded
  number of times, then :class:`~orchestrator.PlanError`;
- **replans** after failed steps, told what failed and why;
- **solves** escalated steps (the last tier of every ladder), typed by the skill's output
  model; the run loop verifies the answer like any other.

Every call goes through :class:`ChatClient`: tenacity retries with exponential backoff and
jitter on 429, 5xx, timeouts and connection errors (``Retry-After`` honoured up to a cap;
the client's own retries are off so they do not multiply), a timeout per call, token usage
and dollars from a :class:`~orchestrator.PriceTable`. The API key is a ``SecretStr``; every
text that leaves this module (errors, log lines, attempt info) is scrubbed of it.

    planner = OpenAIPlanner.from_env(large_model="gpt-4o")      # OPENAI_API_KEY, OPENAI_BASE_URL
    report = await Fleet(planner=planner).run(Task(goal="..."))
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from orchestrator.errors import ConfigError, PlanError, WorkerError, WorkerUnavailable
from orchestrator.ledger import PriceTable
from orchestrator.models import Attempt, Cost, Plan, Step, StepResult, Task
from orchestrator.plan_check import validate_plan
from workers.base import Skill
from workers.registry import SkillRegistry

from .base import Planned

__all__ = [
    "OpenAIPlanner",
    "OpenAISettings",
    "ChatClient",
    "Completion",
    "LLMUnavailable",
    "LLMRequestError",
    "parse_json_reply",
]

log = logging.getLogger("tinyfleet.llm")

ResponseFormat = Literal["json_schema", "json_object", "none"]
_FORMAT_LADDER: list[ResponseFormat] = ["json_schema", "json_object", "none"]


# ---------------------------------------------------------------------------- errors


class LLMUnavailable(WorkerUnavailable):
    """The model endpoint kept failing (429, 5xx, timeouts, connection errors) past every retry."""


class LLMRequestError(WorkerError):
    """The model endpoint refused a request for a reason retrying cannot fix (a 4xx)."""


# ---------------------------------------------------------------------------- settings


class OpenAISettings(BaseModel):
    """Where the models are and how to call them. ``from_env`` reads ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``, ``TINYFLEET_LARGE_MODEL``, ``TINYFLEET_SMALL_MODEL`` and
    ``TINYFLEET_LLM_TIMEOUT_S``. The key is a SecretStr: its repr shows ``**********``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    large_model: str = "gpt-4o"
    small_model: str = "gpt-4o-mini"
    timeout_s: float = Field(default=60.0, gt=0, description="per HTTP call")
    max_attempts: int = Field(default=5, ge=1, le=20, description="tries per call, first included")
    max_total_s: float = Field(default=300.0, gt=0, description="stop retrying a call after this long")
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=20.0, ge=0)
    retry_after_cap_s: float = Field(default=30.0, ge=0, description="longest Retry-After honoured")
    response_format: ResponseFormat = "json_schema"
    max_repairs: int = Field(default=3, ge=0, le=10, description="re-asks after an invalid plan or answer")
    temperature: float = Field(default=0.0, ge=0, le=2, description="planner and large model")
    small_temperature: float = Field(default=0.8, gt=0, le=2, description="small-LLM particles")
    max_tokens: int | None = Field(default=None, ge=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OpenAISettings:
        """Settings from ``env`` (default ``os.environ``); non-None ``overrides`` win.

        Raises ConfigError naming the bad setting (never echoing its value)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, key in (
            ("OPENAI_API_KEY", "api_key"),
            ("OPENAI_BASE_URL", "base_url"),
            ("TINYFLEET_LARGE_MODEL", "large_model"),
            ("TINYFLEET_SMALL_MODEL", "small_model"),
            ("TINYFLEET_LLM_TIMEOUT_S", "timeout_s"),
        ):
            if env.get(var):
                values[key] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"bad OpenAI settings: {problems}") from None

    def require_key(self) -> str:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if not key.strip():
            raise ConfigError(
                "no API key for the OpenAI-compatible endpoint: set OPENAI_API_KEY (for local servers "
                "such as vLLM or Ollama that ignore it, any non-empty value, e.g. OPENAI_API_KEY=local)"
            )
        return key


# ---------------------------------------------------------------------------- secrets

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\n]+")


class _Redactor:
    """Scrubs a secret (and anything shaped like a bearer token or ``sk-`` key) from text."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def literal(self, text: str) -> str:
        """Only the secrets themselves (for model replies, where 'Authorization: Bearer ...'
        may be legitimate content, e.g. generated code)."""
        for s in self._secrets:
            text = text.replace(s, "[redacted]")
        return text

    def __call__(self, text: str, limit: int = 600) -> str:
        """Secrets and anything shaped like a credential, cut to ``limit`` characters (for
        error messages and log lines)."""
        text = self.literal(text)
        text = _AUTH_HEADER.sub(r"\1[redacted]", text)
        text = _BEARER.sub(r"\1[redacted]", text)
        text = _SK_KEY.sub("[redacted]", text)
        return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Completion:
    """One successful chat completion: the text of each choice, usage and dollars."""

    texts: list[str]
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    finish_reason: str | None
    tries: int

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    def cost(self, *, large: bool) -> Cost:
        return Cost(
            tokens_in=self.tokens_in, tokens_out=self.tokens_out, cost_usd=self.cost_usd, large_calls=1 if large else 0
        )


_ABOUT_FORMAT = re.compile(r"(?i)response_format|json|schema|format|structured|grammar|guided")


class _FormatRejected(Exception):
    """Internal: the server refused our ``response_format``."""


def _transient(e: BaseException) -> bool:
    if isinstance(e, openai.APIStatusError):
        if e.status_code == 429:
            return _error_code(e) != "insufficient_quota"
        return e.status_code >= 500 or e.status_code == 408
    return isinstance(e, (openai.APIConnectionError, TimeoutError))  # APITimeoutError is a connection error


def _error_code(e: openai.APIStatusError) -> str | None:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return str(err["code"])
    return None


def _retry_after(e: BaseException | None) -> float | None:
    if not isinstance(e, openai.APIStatusError):
        return None
    headers = e.response.headers
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class _Backoff:
    """Tenacity wait: Retry-After when the server sends one (capped), else exponential
    backoff with jitter (uniform in the upper half of the exponential step)."""

    def __init__(self, initial: float, maximum: float, cap: float) -> None:
        self.initial, self.maximum, self.cap = initial, maximum, cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        ra = _retry_after(exc)
        if ra is not None:
            return min(ra, self.cap)
        step = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        return random.uniform(step / 2, step)


_CODE_PREFIX = re.compile(r"^Error code: \d+ - ")


def _describe(e: BaseException, redact: _Redactor) -> str:
    if isinstance(e, openai.APIStatusError):
        return redact(f"HTTP {e.status_code}: {_CODE_PREFIX.sub('', e.message)}")
    if isinstance(e, openai.APITimeoutError) or isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, openai.APIConnectionError):
        return redact(f"connection error: {e.message}")
    if isinstance(e, json.JSONDecodeError):
        return "the HTTP body is not JSON"
    return redact(f"{type(e).__name__}: {e}")


class ChatClient:
    """Chat completions against one OpenAI-compatible endpoint, with retries, a timeout per
    call, ``response_format`` fallback, usage and dollars, and secrets scrubbed from every
    error. The underlying ``AsyncOpenAI`` is made per event loop (it must not cross loops)."""

    def __init__(self, settings: OpenAISettings, *, prices: PriceTable | None = None) -> None:
        self.settings = settings
        self._key = settings.require_key()
        self.prices = prices or PriceTable()
        self.redact = _Redactor([self._key])
        self.format: ResponseFormat = settings.response_format
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.settings.base_url!r}, format={self.format!r})"

    def _openai(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = openai.AsyncOpenAI(
                api_key=self._key, base_url=self.settings.base_url, max_retries=0, timeout=self.settings.timeout_s
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client, self._loop = None, None

    def _response_format(self, schema: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
        if schema is None or self.format == "none":
            return None
        if self.format == "json_object":
            return {"type": "json_object"}
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"
        return {"type": "json_schema", "json_schema": {"name": safe, "schema": schema, "strict": False}}

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        schema: dict[str, Any] | None = None,
        schema_name: str = "answer",
        temperature: float | None = None,
        seed: int | None = None,
        what: str = "call",
    ) -> Completion:
        """One chat completion (retried). ``schema`` asks for structured output; when the
        server rejects it, JSON mode and then plain text are tried (and remembered)."""
        while True:
            used = self.format
            fmt = self._response_format(schema, schema_name)
            try:
                return await self._call(messages, model, fmt, temperature, seed, what)
            except _FormatRejected as rejected:
                reason = str(rejected)
            if self.format != used:
                continue  # a concurrent call already fell back
            nxt = _FORMAT_LADDER[_FORMAT_LADDER.index(used) + 1]
            log.warning(
                "%s: %s rejected response_format %r (%s); falling back to %r",
                what, self.settings.base_url, used, reason, nxt,
            )
            self.format = nxt

    async def _call(
        self,
        messages: list[dict[str, str]],
        model: str,
        fmt: dict[str, Any] | None,
        temperature: float | None,
        seed: int | None,
        what: str,
    ) -> Completion:
        s = self.settings
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        kwargs["temperature"] = s.temperature if temperature is None else temperature
        if fmt is not None:
            kwargs["response_format"] = fmt
        if seed is not None:
            kwargs["seed"] = seed
        if s.max_tokens is not None:
            kwargs["max_tokens"] = s.max_tokens
        started = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=_Backoff(s.backoff_initial_s, s.backoff_max_s, s.retry_after_cap_s),
            stop=stop_after_attempt(s.max_attempts) | stop_after_delay(s.max_total_s),
            before_sleep=lambda st: self._log_retry(st, what, model),
            reraise=True,
        )
        failure: BaseException | None = None
        response: Any = None
        try:
            async for attempt in retrying:
                with attempt:
                    response = await asyncio.wait_for(
                        self._openai().chat.completions.create(**kwargs, timeout=s.timeout_s), s.timeout_s + 1.0
                    )
        except (openai.OpenAIError, TimeoutError, json.JSONDecodeError) as e:
            failure = e
        tries = retrying.statistics.get("attempt_number", 1)
        if failure is not None:
            # Raised outside the except block: openai's exception (which may echo request
            # headers or bodies) is neither chained nor kept as context.
            raise self._convert(failure, fmt, model, what, tries, time.monotonic() - started)
        return self._completion(response, model, what, tries)

    def _log_retry(self, state: RetryCallState, what: str, model: str) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: %s (model %s) try %d/%d failed: %s; retrying in %.2f s",
            what, self.settings.base_url, model, state.attempt_number, self.settings.max_attempts,
            _describe(exc, self.redact) if exc else "?", wait,
        )

    def _convert(
        self, e: BaseException, fmt: dict[str, Any] | None, model: str, what: str, tries: int, elapsed: float
    ) -> Exception:
        where = f"{self.settings.base_url} (model {model!r})"
        desc = _describe(e, self.redact)
        if _transient(e):
            return LLMUnavailable(
                f"{what}: the model endpoint {where} failed {tries} time(s) in {elapsed:.1f} s; last error: {desc}. "
                "Check that the server at OPENAI_BASE_URL is up, or raise timeout_s / max_attempts"
            )
        if isinstance(e, openai.APIStatusError):
            code = e.status_code
            if code in (400, 422) and fmt is not None and _ABOUT_FORMAT.search(desc):
                return _FormatRejected(desc)
            if code in (401, 403):
                return ConfigError(f"{what}: the endpoint {where} refused the API key ({desc}); check OPENAI_API_KEY")
            if code == 404:
                return ConfigError(
                    f"{what}: {where} answered 404 ({desc}); check the model name (TINYFLEET_LARGE_MODEL / "
                    "TINYFLEET_SMALL_MODEL) and that OPENAI_BASE_URL ends in /v1"
                )
            if code == 429:
                return ConfigError(f"{what}: the endpoint {where} says the account's quota is spent ({desc})")
            return LLMRequestError(f"{what}: the endpoint {where} refused the request ({desc})")
        return LLMRequestError(f"{what}: the endpoint {where} gave an unusable response ({desc})")

    def _completion(self, response: Any, model: str, what: str, tries: int) -> Completion:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise LLMRequestError(
                f"{what}: {self.settings.base_url} answered with something that is not a chat completion "
                f"({self.redact(type(response).__name__)}); check OPENAI_BASE_URL"
            )
        texts = [self.redact.literal(c.message.content or "") for c in choices if c.message is not None]
        usage = getattr(response, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:
            log.info("%s: %s returned no usage numbers; tokens count as 0", what, self.settings.base_url)
        cost = self.prices.price(model).cost(tin, tout)
        finish = choices[0].finish_reason if choices else None
        return Completion(texts, model, tin, tout, cost, finish, tries)


# ---------------------------------------------------------------------------- replies

_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.S)


def parse_json_reply(text: str) -> Any:
    """The JSON value in a model's reply (code fences tolerated). ValueError says why not."""
    if not text.strip():
        raise ValueError("the reply is empty; it must be one JSON object")
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"the reply is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _fit_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
    return "; ".join(parts)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


_PLAN_SCHEMA = Plan.model_json_schema()

_PLANNER_SYSTEM = """You are the planner of tinyfleet. A fleet of small, fast workers executes your plan; \
each step's answer is checked by a verifier where one exists, and steps that fail climb to stronger models.

Turn the user's task into a plan: one JSON object {"steps": [...], "output": ...}.
- Each step: {"id": a short unique id (letters, digits, _ or -), "skill": one of the skills below, \
"inputs": an object that fits that skill's input_schema}.
- To use an earlier step's output, put {"$ref": "<step id>"} or {"$ref": "<step id>.<field>"} where the \
value goes. Steps that do not depend on each other run in parallel: split independent work into separate steps.
- "after" (optional): ids of steps that must finish first even without a $ref.
- "output": the step id (or "<step id>.<field>", or a list of them) whose output answers the task.
- No cycles; reference only steps of this plan; copy literal data from the task into step inputs exactly.
Reply with the JSON object only, matching this JSON schema:
{plan_schema}

Skills:
{skills}"""

_SOLVE_SYSTEM = """You are the large model of tinyfleet. Smaller workers could not give a verified answer \
to this step, so it is yours. Your answer will be checked.
Skill {name}: {description}
Reply with one JSON object only, matching this JSON schema:
{schema}"""


def _skills_text(skills: SkillRegistry) -> str:
    rows = [
        {
            "skill": s.name,
            "description": s.description,
            "input_schema": s.input_model.model_json_schema(),
            "output_schema": s.output_model.model_json_schema(),
        }
        for s in sorted(skills, key=lambda s: s.name)
    ]
    return "\n".join(_compact(r) for r in rows)


def _task_text(task: Task) -> str:
    lines = [f"Task: {task.goal.strip() or '(no goal text; the inputs and skill say it)'}"]
    if task.skill:
        lines.append(f"Skill named by the user: {task.skill}")
    if task.inputs:
        lines.append(f"Task inputs (JSON): {_compact(task.inputs)}")
    if task.budget.max_steps < 100_000:
        lines.append(f"The plan may have at most {task.budget.max_steps} steps.")
    return "\n".join(lines)


def _failure_text(r: StepResult) -> dict[str, Any]:
    reasons = [t.verdict.reason for t in r.trials if t.verdict is not None and not t.verdict.ok and t.verdict.reason]
    return {
        "step": r.step_id,
        "skill": r.skill,
        "status": r.status,
        "error": r.error,
        "tiers_tried": r.tiers_tried,
        "verifier_said": reasons[-3:],
    }


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
    ) -> None:
        self.settings = settings if settings is not None else OpenAISettings.from_env()
        self.chat = ChatClient(self.settings, prices=prices)  # ConfigError without a key
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
        **overrides: Any,
    ) -> OpenAIPlanner:
        """Build from the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
        ``TINYFLEET_LARGE_MODEL``, ...); keyword overrides that are not None win, e.g.
        ``OpenAIPlanner.from_env(large_model="gpt-4o", base_url="http://localhost:8000/v1")``.
        Raises ConfigError (saying what to set) when the key is missing."""
        return cls(OpenAISettings.from_env(env, **overrides), prices=prices, solve_confidence=solve_confidence)

    def __repr__(self) -> str:
        return f"OpenAIPlanner(model={self.model!r}, base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        await self.chat.aclose()

    # ------------------------------------------------------------------ planning

    async def plan(self, task: Task, skills: SkillRegistry) -> Planned:
        messages = [
            {"role": "system", "content": self._system(skills)},
            {"role": "user", "content": _task_text(task)},
        ]
        return await self._plan_loop(messages, task, skills, "plan")

    async def replan(self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry) -> Planned:
        failed = [_failure_text(r) for r in failures]
        user = (
            f"{_task_text(task)}\n\nThe previous plan (JSON): {plan.model_dump_json(exclude_defaults=True)}\n"
            f"These steps did not succeed (JSON, one per line):\n" + "\n".join(_compact(f) for f in failed) + "\n\n"
            "Write a new complete plan for the task that avoids these failures: fix the inputs, split the work "
            "differently, or use another skill."
        )
        messages = [{"role": "system", "content": self._system(skills)}, {"role": "user", "content": user}]
        return await self._plan_loop(messages, task, skills, "replan")

    def _system(self, skills: SkillRegistry) -> str:
        return _PLANNER_SYSTEM.replace("{plan_schema}", _compact(_PLAN_SCHEMA)).replace("{skills}", _skills_text(skills))

    async def _plan_loop(self, messages: list[dict[str, str]], task: Task, skills: SkillRegistry, what: str) -> Planned:
        cost = Cost()
        problem = ""
        tries = self.settings.max_repairs + 1
        for k in range(tries):
            reply = await self.chat.complete(
                messages, model=self.model, schema=_PLAN_SCHEMA, schema_name="tinyfleet_plan", what=f"{what} ({self.name})"
            )
            cost = cost + reply.cost(large=True)
            try:
                plan = self._parse_plan(reply.text)
                validate_plan(plan, skills, task.budget)
                return Planned(plan, cost)
            except PlanError as e:
                problem = str(e)
            log.info("%s: plan %d/%d from %s is invalid: %s", what, k + 1, tries, self.model, problem)
            messages = [
                *messages,
                {"role": "assistant", "content": reply.text},
                {
                    "role": "user",
                    "content": f"That plan is invalid: {problem}\nFix exactly this problem and reply with the "
                    "complete corrected plan as one JSON object.",
                },
            ]
        raise PlanError(
            f"the planner model {self.model!r} gave no valid plan in {tries} tries; last problem: {problem}. "
            "Rephrase the goal, name the skill in the task, or use a stronger TINYFLEET_LARGE_MODEL"
        )

    @staticmethod
    def _parse_plan(text: str) -> Plan:
        try:
            doc = parse_json_reply(text)
        except ValueError as e:
            raise PlanError(str(e)) from None
        if not isinstance(doc, dict):
            raise PlanError(f"the reply is a JSON {type(doc).__name__}; it must be an object with 'steps' and 'output'")
        try:
            return Plan.model_validate(doc)
        except ValidationError as e:
            raise PlanError(f"the reply does not fit the plan schema: {_fit_error(e)}") from None

    # ------------------------------------------------------------------ escalations

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt:
        """Answer an escalated step, typed by the skill's output model. An answer that does not
        fit is re-asked with the problem (bounded); the run loop verifies what comes back."""
        schema = skill.output_model.model_json_schema()
        system = (
            _SOLVE_SYSTEM.replace("{name}", skill.name)
            .replace("{description}", skill.description)
            .replace("{schema}", _compact(schema))
        )
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Step {step.id!r} input (JSON): {inputs.model_dump_json()}"},
        ]
        cost = Cost()
        problem = ""
        t0 = time.perf_counter()
        tries = self.settings.max_repairs + 1
        for k in range(tries):
            reply = await self.chat.complete(
                messages, model=self.model, schema=schema, schema_name=skill.name, what=f"solve {step.id} ({self.name})"
            )
            cost = cost + reply.cost(large=True)
            try:
                doc = parse_json_reply(reply.text)
                out = skill.output_model.model_validate(doc)
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                problem = _fit_error(e) if isinstance(e, ValidationError) else str(e)
            else:
                return Attempt(
                    output=out.model_dump(mode="json"),
                    confidence=self.solve_confidence,
                    worker=self.name,
                    cost=cost.model_copy(update={"worker_s": time.perf_counter() - t0, "particles": 1}),
                    info={"model": self.model, "calls": k + 1, "finish_reason": reply.finish_reason},
                )
            log.info("solve %s: answer %d/%d from %s does not fit %s: %s", step.id, k + 1, tries, self.model,
                     skill.output_model.__name__, problem)
            messages = [
                *messages,
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": f"That answer is invalid: {problem}\nReply with the corrected JSON object only."},
            ]
        return Attempt(
            output=None,
            confidence=0.0,
            worker=self.name,
            error=f"the large model's answer does not fit {skill.output_model.__name__} after {tries} tries: {problem}",
            cost=cost.model_copy(update={"worker_s": time.perf_counter() - t0, "particles": 1}),
            info={"model": self.model, "calls": tries},
        )

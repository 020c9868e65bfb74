"""The OpenAI-compatible chat client that every LLM-backed part uses (planner, large model,
small-model followers): settings, retries with back-off, the response-format ladder, token
accounting and secret redaction."""

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
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from tinyfleet_core.errors import (
    ConfigError,
    WorkerError,
    WorkerUnavailable,
)
from tinyfleet_core.models import Cost
from tinyfleet_core.prices import PriceTable
from tinyfleet_core.validation import problems
from workers.llm.prices import load_price_table, model_price
from workers.llm.reply_parsing import ModelReply, read_json_reply

__all__ = ["ChatClient", "Completion", "ContextTooLong", "LLMRequestError", "LLMUnavailable", "OpenAISettings", "ResponseFormat", "parse_json_reply"]


log = logging.getLogger("tinyfleet.llm")


ResponseFormat = Literal["auto", "json_schema_strict", "json_schema", "json_object", "none"]


_FORMAT_LADDER: list[ResponseFormat] = ["json_schema_strict", "json_schema", "json_object", "none"]


_STRICT_HOSTS = re.compile(r"^https://(api\.openai\.com|[^/]+\.openai\.azure\.com)(/|$)")


class LLMUnavailable(WorkerUnavailable):
    """The model endpoint kept failing (429, 5xx, timeouts, connection errors) past every retry."""


class LLMRequestError(WorkerError):
    """The model endpoint refused a request for a reason retrying cannot fix (a 4xx)."""


class ContextTooLong(LLMRequestError):
    """The server said the prompt does not fit its context window. ``limit`` and
    ``requested`` are the token counts it named (None when it named none)."""

    def __init__(self, message: str, *, limit: int | None = None, requested: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.requested = requested


_CONTEXT_ERROR = re.compile(
    r"(?i)context[ _]length|context window|maximum context|too many tokens|prompt is too long|exceeds the (model's )?context"
)


_TOKEN_COUNT = re.compile(r"(?i)\b(\d+)\s*(?:input\s+)?tokens\b")


_ENV_SETTINGS = (
    ("OPENAI_API_KEY", "api_key"),
    ("OPENAI_BASE_URL", "base_url"),
    ("TINYFLEET_LARGE_MODEL", "large_model"),
    ("TINYFLEET_SMALL_MODEL", "small_model"),
    ("TINYFLEET_LLM_TIMEOUT_S", "timeout_s"),
    ("TINYFLEET_RESPONSE_FORMAT", "response_format"),
    ("TINYFLEET_SEED", "seed"),
)


class OpenAISettings(BaseModel):
    """Where the models are and how to call them. ``from_env`` reads ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``, ``TINYFLEET_LARGE_MODEL``, ``TINYFLEET_SMALL_MODEL``,
    ``TINYFLEET_LLM_TIMEOUT_S``, ``TINYFLEET_RESPONSE_FORMAT`` and ``TINYFLEET_SEED``. The key
    is a SecretStr: its repr shows ``**********``.

    ``response_format="auto"`` asks OpenAI itself (api.openai.com, Azure OpenAI) for a strict
    schema (``planners.strict_schema``) and other servers for the plain one; a server that
    rejects a format steps down the ladder strict -> json_schema -> json_object -> none."""

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
    response_format: ResponseFormat = "auto"
    max_repairs: int = Field(default=3, ge=0, le=10, description="re-asks after an invalid plan or answer")
    repair_budget_tokens: int = Field(
        default=4000, ge=200, description="most tokens (chars / 4) a re-ask adds: the last plan and its problems"
    )
    seed: int | None = Field(default=None, description="base of the small model's particle seeds (None: drawn per batch)")
    temperature: float = Field(default=0.0, ge=0, le=2, description="planner and large model")
    small_temperature: float = Field(default=0.8, gt=0, le=2, description="small-LLM particles")
    max_tokens: int | None = Field(default=None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the value is not echoed: a URL may carry credentials (user:password@host)
            raise ValueError("must be an http(s) URL with a host, such as https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
        return v.strip()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OpenAISettings:
        """Settings from ``env`` (default ``os.environ``); non-None ``overrides`` win.

        Raises ConfigError naming the bad setting (the variable, when the value came from
        one), never echoing its value: bad configuration is refused here, before any request
        or retry."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        var_of: dict[str, str] = {}
        for var, key in _ENV_SETTINGS:
            if env.get(var):
                values[key] = env[var]
                var_of[key] = var
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        try:
            return cls(**values)
        except ValidationError as e:
            found = "; ".join(f"{var_of[loc] if loc in var_of and loc not in given else loc}: {msg}" for loc, msg in problems(e))
            raise ConfigError(f"bad OpenAI settings: {found}") from None

    def require_key(self) -> str:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if not key.strip():
            raise ConfigError(
                "no API key for the OpenAI-compatible endpoint: set OPENAI_API_KEY (for local servers "
                "such as vLLM or Ollama that ignore it, any non-empty value, e.g. OPENAI_API_KEY=local)"
            )
        return key


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
    reasonings: list[str] = field(default_factory=list)
    format: str = "none"

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    @property
    def reply(self) -> ModelReply:
        """The first choice's content and reasoning, for :func:`read_json_reply`."""
        return ModelReply(self.text, self.reasonings[0] if self.reasonings else "")

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
        self.prices = prices if prices is not None else load_price_table()
        self.redact = _Redactor([self._key])
        self.format: ResponseFormat = settings.response_format
        if self.format == "auto":
            self.format = "json_schema_strict" if _STRICT_HOSTS.match(settings.base_url) else "json_schema"
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

    def _effective_format(self, strict_schema: dict[str, Any] | None) -> ResponseFormat:
        if self.format == "json_schema_strict" and strict_schema is None:
            return "json_schema"  # no strict form of this schema: send the plain one
        return self.format

    def _response_format(
        self, schema: dict[str, Any] | None, name: str, strict_schema: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        fmt = self._effective_format(strict_schema)
        if schema is None or fmt == "none":
            return None
        if fmt == "json_object":
            return {"type": "json_object"}
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"
        if fmt == "json_schema_strict" and strict_schema is not None:
            return {"type": "json_schema", "json_schema": {"name": safe, "schema": strict_schema, "strict": True}}
        return {"type": "json_schema", "json_schema": {"name": safe, "schema": schema, "strict": False}}

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        schema: dict[str, Any] | None = None,
        schema_name: str = "answer",
        strict_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        what: str = "call",
    ) -> Completion:
        """One chat completion (retried). ``schema`` asks for structured output (as
        ``strict_schema`` with ``strict: true`` where the server takes it); when the server
        rejects a format, the next one down the ladder is tried (and remembered)."""
        while True:
            used = self.format
            effective = self._effective_format(strict_schema)
            fmt = self._response_format(schema, schema_name, strict_schema)
            try:
                done = await self._call(messages, model, fmt, temperature, seed, what)
                return done if fmt is None else _with_format(done, effective)
            except _FormatRejected as rejected:
                reason = str(rejected)
            if self.format != used:
                continue  # a concurrent call already fell back
            nxt = _FORMAT_LADDER[_FORMAT_LADDER.index(effective) + 1]
            log.warning(
                "%s: %s rejected response_format %r (%s); falling back to %r",
                what, self.settings.base_url, effective, reason, nxt,
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
            if code in (400, 413, 422) and (_error_code(e) == "context_length_exceeded" or _CONTEXT_ERROR.search(desc)):
                numbers = [int(n) for n in _TOKEN_COUNT.findall(desc)]
                return ContextTooLong(
                    f"{what}: the prompt does not fit the context window of {where} ({desc})",
                    limit=numbers[0] if numbers else None,
                    requested=numbers[1] if len(numbers) > 1 else None,
                )
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
        reasonings = [self.redact.literal(_reasoning_of(c.message)) for c in choices if c.message is not None]
        usage = getattr(response, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:
            log.info("%s: %s returned no usage numbers; tokens count as 0", what, self.settings.base_url)
        cost = model_price(self.prices, model).cost(tin, tout)
        finish = choices[0].finish_reason if choices else None
        return Completion(texts, model, tin, tout, cost, finish, tries, reasonings)


def _reasoning_of(message: Any) -> str:
    """A message's reasoning text: ``reasoning_content`` (DeepSeek, vLLM, SGLang) or
    ``reasoning`` (Ollama, OpenRouter); empty when the server sends none."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _with_format(done: Completion, fmt: str) -> Completion:
    return Completion(
        done.texts, done.model, done.tokens_in, done.tokens_out, done.cost_usd, done.finish_reason, done.tries,
        done.reasonings, fmt,
    )


def parse_json_reply(text: str | ModelReply) -> Any:
    """The first JSON value in a model's reply (prose, fences and ``<think>`` blocks
    tolerated; see ``workers.llm.reply_parsing``). ValueError says why there is none."""
    return read_json_reply(text, lambda value: value, what="a JSON value")

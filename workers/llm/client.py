"""The OpenAI-compatible chat client that every LLM-backed part uses (planner, large model,
small-model followers): retries with back-off, the response-format ladder, token accounting
and secret redaction, over an HTTP client the caller may inject.

The pieces live in small modules, re-exported here: :mod:`workers.llm.settings`
(:class:`OpenAISettings`), :mod:`workers.llm.errors` (what a failed call raises),
:mod:`workers.llm.backoff` (Retry-After and jitter), :mod:`workers.llm.redaction`.

**The HTTP seam.** ``ChatClient(settings, http_client=...)`` sends through the caller's async
HTTP client (an ``httpx2.AsyncClient``, the library the ``openai`` client is built on; its
own headers, proxies and limits apply); ``transport=...`` keeps the library's client but
sends through the caller's transport (``httpx2.MockTransport`` in tests: no socket, no
thread). Either way the retries, format ladder, parsing and billing are this module's. An
injected client or transport is the caller's to close; credentials in the injected client's
own headers are scrubbed from every error and log line like the API key."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Cost
from tinyfleet_core.prices import PriceTable
from workers.llm.backoff import Backoff
from workers.llm.errors import (
    ContextTooLong,
    FormatRejected,
    LLMRequestError,
    LLMUnavailable,
    convert_error,
    describe,
    transient,
)
from workers.llm.prices import load_price_table, model_price
from workers.llm.redaction import Redactor, header_secrets
from workers.llm.reply_parsing import ModelReply, read_json_reply
from workers.llm.settings import OpenAISettings, ResponseFormat

if TYPE_CHECKING:
    import httpx2
    import openai

__all__ = ["ChatClient", "Completion", "ContextTooLong", "LLMRequestError", "LLMUnavailable", "OpenAISettings", "ResponseFormat", "parse_json_reply"]


log = logging.getLogger("tinyfleet.llm")


_FORMAT_LADDER: list[ResponseFormat] = ["json_schema_strict", "json_schema", "json_object", "none"]


_STRICT_HOSTS = re.compile(r"^https://(api\.openai\.com|[^/]+\.openai\.azure\.com)(/|$)")


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


def _check_http_seam(http_client: Any, transport: Any) -> None:
    """ConfigError for an HTTP client or transport this async client cannot send through."""
    if http_client is not None and transport is not None:
        raise ConfigError("give http_client or transport, not both: an HTTP client brings its own transport")
    if http_client is not None and not callable(getattr(http_client, "aclose", None)):
        raise ConfigError(
            f"http_client must be an async HTTP client such as httpx2.AsyncClient, got {type(http_client).__name__}: "
            "the chat client is async; to reuse a sync client's transport, pass transport= instead"
        )
    if transport is not None and not callable(getattr(transport, "handle_async_request", None)):
        raise ConfigError(
            f"transport must be an async HTTP transport such as httpx2.MockTransport or httpx2.AsyncHTTPTransport, "
            f"got {type(transport).__name__}"
        )


class ChatClient:
    """Chat completions against one OpenAI-compatible endpoint, with retries, a timeout per
    call, ``response_format`` fallback, usage and dollars, and secrets scrubbed from every
    error. The underlying ``AsyncOpenAI`` is made per event loop (it must not cross loops).

    ``http_client`` (an async HTTP client, used on one event loop) or ``transport`` (an async
    transport, any loop) replace the network edge; see the module docs."""

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        prices: PriceTable | None = None,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._key = settings.require_key()
        _check_http_seam(http_client, transport)
        self._http_client, self._transport = http_client, transport
        self.prices = prices if prices is not None else load_price_table()
        own_headers = header_secrets(getattr(http_client, "headers", None) or {})
        self.redact = Redactor([self._key, *own_headers])
        self.format: ResponseFormat = settings.response_format
        if self.format == "auto":
            self.format = "json_schema_strict" if _STRICT_HOSTS.match(settings.base_url) else "json_schema"

        import openai  # noqa: F401 - loaded with the first client, not with the package, nor inside a call's time budget

        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.settings.base_url!r}, format={self.format!r})"

    def _openai(self) -> openai.AsyncOpenAI:
        import openai

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            http = self._http_client
            if http is None and self._transport is not None:
                http = openai.DefaultAsyncHttpxClient(transport=self._transport)
            self._client = openai.AsyncOpenAI(
                api_key=self._key, base_url=self.settings.base_url, max_retries=0, timeout=self.settings.timeout_s,
                http_client=http,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client this object made; an injected client or transport stays
        open (it is the caller's)."""
        owned = self._http_client is None and self._transport is None
        if owned and self._client is not None and self._loop is asyncio.get_running_loop():
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
            except FormatRejected as rejected:
                reason = str(rejected)
            if self.format != used:
                continue  # a concurrent call already fell back
            nxt = _FORMAT_LADDER[_FORMAT_LADDER.index(effective) + 1]
            log.warning(
                "%s: %s rejected response_format %r (%s); falling back to %r",
                what, self.settings.base_url, effective, reason, nxt,
            )
            self.format = nxt

    def _request(
        self, messages: list[dict[str, str]], model: str, fmt: dict[str, Any] | None, temperature: float | None,
        seed: int | None,
    ) -> dict[str, Any]:
        """The keyword arguments of one ``chat.completions.create`` call."""
        s = self.settings
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        kwargs["temperature"] = s.temperature if temperature is None else temperature
        if fmt is not None:
            kwargs["response_format"] = fmt
        if seed is not None:
            kwargs["seed"] = seed
        if s.max_tokens is not None:
            kwargs["max_tokens"] = s.max_tokens
        return kwargs

    async def _call(
        self,
        messages: list[dict[str, str]],
        model: str,
        fmt: dict[str, Any] | None,
        temperature: float | None,
        seed: int | None,
        what: str,
    ) -> Completion:
        import openai

        s = self.settings
        kwargs = self._request(messages, model, fmt, temperature, seed)
        started = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=Backoff(s.backoff_initial_s, s.backoff_max_s, s.retry_after_cap_s),
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
            raise convert_error(
                failure, base_url=s.base_url, redact=self.redact, fmt_sent=fmt is not None, model=model, what=what,
                tries=tries, elapsed=time.monotonic() - started,
            )
        return self._completion(response, model, what, tries)

    def _log_retry(self, state: RetryCallState, what: str, model: str) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: %s (model %s) try %d/%d failed: %s; retrying in %.2f s",
            what, self.settings.base_url, model, state.attempt_number, self.settings.max_attempts,
            describe(exc, self.redact) if exc else "?", wait,
        )

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

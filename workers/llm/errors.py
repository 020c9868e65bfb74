"""What the LLM layer raises, and how a failed call becomes one of those errors: which
failures are transient (retried), and the one-line description of each, scrubbed of secrets."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from tinyfleet_core.errors import ConfigError, WorkerError, WorkerUnavailable
from workers.llm.redaction import Redactor

if TYPE_CHECKING:
    import openai  # imported where used: the SDK's import costs ~0.8 s

__all__ = ["ContextTooLong", "FormatRejected", "LLMRequestError", "LLMUnavailable", "convert_error", "describe", "transient"]


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


class FormatRejected(Exception):
    """Internal to :class:`~workers.llm.client.ChatClient`: the server refused our
    ``response_format`` (the client steps down the format ladder)."""


_CONTEXT_ERROR = re.compile(
    r"(?i)context[ _]length|context window|maximum context|too many tokens|prompt is too long|exceeds the (model's )?context"
)


_TOKEN_COUNT = re.compile(r"(?i)\b(\d+)\s*(?:input\s+)?tokens\b")


_ABOUT_FORMAT = re.compile(r"(?i)response_format|json|schema|format|structured|grammar|guided")


_CODE_PREFIX = re.compile(r"^Error code: \d+ - ")


def transient(e: BaseException) -> bool:
    """Worth another try: 429 (not a spent quota), 5xx, 408, timeouts, connection errors."""
    import openai

    if isinstance(e, openai.APIStatusError):
        if e.status_code == 429:
            return error_code(e) != "insufficient_quota"
        return e.status_code >= 500 or e.status_code == 408
    return isinstance(e, (openai.APIConnectionError, TimeoutError))  # APITimeoutError is a connection error


def error_code(e: openai.APIStatusError) -> str | None:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return str(err["code"])
    return None


def describe(e: BaseException, redact: Redactor) -> str:
    """One line saying what went wrong with a call, secrets scrubbed."""
    import openai

    if isinstance(e, openai.APIStatusError):
        return redact(f"HTTP {e.status_code}: {_CODE_PREFIX.sub('', e.message)}")
    if isinstance(e, openai.APITimeoutError) or isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, openai.APIConnectionError):
        return redact(f"connection error: {e.message}")
    if isinstance(e, json.JSONDecodeError):
        return "the HTTP body is not JSON"
    return redact(f"{type(e).__name__}: {e}")


def convert_error(
    e: BaseException, *, base_url: str, redact: Redactor, fmt_sent: bool, model: str, what: str, tries: int, elapsed: float
) -> Exception:
    """The error to raise for a call that failed with ``e`` after ``tries`` tries
    (``fmt_sent``: the request carried a ``response_format``)."""
    import openai

    where = f"{base_url} (model {model!r})"
    desc = describe(e, redact)
    if transient(e):
        return LLMUnavailable(
            f"{what}: the model endpoint {where} failed {tries} time(s) in {elapsed:.1f} s; last error: {desc}. "
            "Check that the server at OPENAI_BASE_URL is up, or raise timeout_s / max_attempts"
        )
    if isinstance(e, openai.APIStatusError):
        return _status_error(e, where, desc, fmt_sent, what)
    return LLMRequestError(f"{what}: the endpoint {where} gave an unusable response ({desc})")


def _status_error(e: openai.APIStatusError, where: str, desc: str, fmt_sent: bool, what: str) -> Exception:
    code = e.status_code
    if code in (400, 413, 422) and (error_code(e) == "context_length_exceeded" or _CONTEXT_ERROR.search(desc)):
        numbers = [int(n) for n in _TOKEN_COUNT.findall(desc)]
        return ContextTooLong(
            f"{what}: the prompt does not fit the context window of {where} ({desc})",
            limit=numbers[0] if numbers else None,
            requested=numbers[1] if len(numbers) > 1 else None,
        )
    if code in (400, 422) and fmt_sent and _ABOUT_FORMAT.search(desc):
        return FormatRejected(desc)
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

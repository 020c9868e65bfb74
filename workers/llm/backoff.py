"""How long to wait before the next try of a chat call: the server's ``Retry-After`` when it
sends one (capped), else exponential back-off with jitter."""

from __future__ import annotations

import email.utils
import random
import time
from typing import TYPE_CHECKING

from tenacity import RetryCallState

if TYPE_CHECKING:
    pass  # imported where used: the SDK's import costs ~0.8 s

__all__ = ["Backoff", "retry_after"]


def retry_after(e: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``, in seconds
    or as an HTTP date); None when it asked nothing."""
    import openai

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


class Backoff:
    """Tenacity wait: Retry-After when the server sends one (capped), else exponential
    backoff with jitter (uniform in the upper half of the exponential step)."""

    def __init__(self, initial: float, maximum: float, cap: float) -> None:
        self.initial, self.maximum, self.cap = initial, maximum, cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        ra = retry_after(exc)
        if ra is not None:
            return min(ra, self.cap)
        step = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        return random.uniform(step / 2, step)

"""Strip anything that looks like a secret from data before it reaches a page.

Reports never hold keys (settings are never written into traces), but a worker's ``info``, an
error message or a task input can carry text a user pasted. Every string the viewer shows goes
through :func:`redact` first: values under key-like names (``api_key``, ``authorization``,
``password`` ...) are replaced whole, and key-shaped substrings anywhere (``sk-...``,
``Bearer ...``, ``ghp_...``, AWS ``AKIA...``, ``xox?-...``, ``key=...`` pairs) are masked.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "redact", "redact_text"]

REDACTED = "[redacted]"

# names whose value is a secret; "tokens_in" / "tokens_out" (counts) do not match
_SECRET_NAME = re.compile(
    r"(api[_-]?key|apikey|secret|passw(or)?d|authorization|auth[_-]?token|access[_-]?token|refresh[_-]?token"
    r"|bearer|private[_-]?key|credential|session[_-]?token|^token$|_token$)",
    re.I,
)
_SECRET_TEXT = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys (sk-..., sk-proj-...)
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{16,}"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack tokens
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
    re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),  # JWTs
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*"),  # Authorization: Bearer ...
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
]
# key=value / "key": "value" pairs inside free text (an error message quoting a URL or a header)
_PAIR = re.compile(
    r"(?i)\b(api[_-]?key|apikey|access[_-]?token|auth[_-]?token|password|passwd|secret|token)"
    r"(\s*[=:]\s*[\"']?)([^\s\"'&,;]{6,})"
)


def redact_text(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``[redacted]``."""
    for pattern in _SECRET_TEXT:
        text = pattern.sub(REDACTED, text)
    return _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON-like data) with secrets removed; see the module docstring."""
    if isinstance(value, str):
        return redact_text(value)
    if _depth > 64:  # payloads are depth-checked on the way in; this only bounds the walk
        return REDACTED
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if _SECRET_NAME.search(key) and isinstance(v, str | bytes) and v:
                out[redact_text(key)] = REDACTED
            else:
                out[redact_text(key)] = redact(v, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    return value

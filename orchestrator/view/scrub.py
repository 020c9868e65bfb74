"""Strip anything that looks like a secret from what the run viewer sends.

Reports never hold keys (settings are never written into traces), but a worker's ``info``, an
error message or a task input can carry text a user pasted. Every page, ``run.json``,
``step/<id>`` and event goes through :func:`redact_json` on its way out; :func:`redact` does the
same on Python data. The rules:

- a value under a key-like name (``api_key``, ``authorization``, ``password``, ``secret``,
  ``token``, ``*_token`` ...) is replaced whole; counts such as ``tokens_in`` are not names
  of secrets;
- key-shaped text anywhere is masked: ``sk-...``, ``ghp_...`` / ``github_pat_...``,
  ``xox?-...``, ``AKIA...``, ``hf_...``, JWTs, ``Bearer ...``, PEM private keys, and
  ``name=value`` / ``name: value`` pairs for those names.

Each rule starts with a literal and runs only when its literal occurs, so a 10 MB page of
10,000 steps is scrubbed in well under a second.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["REDACTED", "redact", "redact_json", "redact_text"]

REDACTED = "[redacted]"

# names whose value is a secret; "tokens_in" / "tokens_out" (counts) do not match
_SECRET_NAME = re.compile(
    r"(api[_-]?key|apikey|secret|passw(or)?d|authorization|auth[_-]?token|access[_-]?token|refresh[_-]?token"
    r"|bearer|private[_-]?key|credential|session[_-]?token|^token$|_token$)",
    re.I,
)
# (literal that must occur, case-insensitive?, pattern starting with that literal)
_TEXT_RULES: list[tuple[str, bool, re.Pattern[str]]] = [
    ("sk-", False, re.compile(r"sk-[A-Za-z0-9_\-]{8,}")),  # OpenAI-style keys (sk-..., sk-proj-...)
    ("gh", False, re.compile(r"gh[pousr]_[A-Za-z0-9_]{16,}")),  # GitHub tokens
    ("github_pat_", False, re.compile(r"github_pat_[A-Za-z0-9_]{16,}")),
    ("xox", False, re.compile(r"xox[abprs]-[A-Za-z0-9\-]{10,}")),  # Slack tokens
    ("AKIA", False, re.compile(r"AKIA[0-9A-Z]{16}\b")),  # AWS access key ids
    ("hf_", False, re.compile(r"hf_[A-Za-z0-9]{20,}")),  # Hugging Face tokens
    ("eyJ", False, re.compile(r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}")),  # JWTs
    ("bearer", True, re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/\-]{8,}=*")),  # Authorization: Bearer ...
    ("-----BEGIN", False, re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[^\"\\]|\\.)*")),  # to the string's end
]
_PAIR_NAMES = ["api_key", "api-key", "apikey", "access_token", "access-token", "auth_token", "auth-token",
               "password", "passwd", "secret", "token"]
# name=value / name: value inside text (a URL's query, a quoted header); never a backslash in
# the value, so a JSON escape is never cut in two
_PAIR_RULES = [(n, re.compile(rf"(?i){re.escape(n)}(\s*[=:]\s*(?:\\?[\"'])?)([^\s\"'&,;\\]{{6,}})")) for n in _PAIR_NAMES]
# a "name": "string" pair of JSON text
_JSON_PAIR = re.compile(r'"([^"\\]{1,120})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')
_JSON_SENTINELS = ["api", "secret", "passw", "authorization", "token\"", "_token", "-token", "bearer", "private", "credential"]


def _after_word(m: re.Match[str]) -> bool:
    """The match continues a word (``task-sk-12345678``): not a key's start."""
    i = m.start()
    return i > 0 and (m.string[i - 1].isalnum() or m.string[i - 1] == "_")


def _mask(text: str) -> str:
    low = text.lower()
    for literal, folded, pattern in _TEXT_RULES:
        if literal in (low if folded else text):
            text = pattern.sub(lambda m: m.group(0) if _after_word(m) else REDACTED, text)
    low = text.lower()
    for name, pattern in _PAIR_RULES:
        if name in low:
            text = pattern.sub(lambda m: m.group(0) if _after_word(m) else m.group(0)[: m.start(1) - m.start()] + m.group(1) + REDACTED, text)
    return text


_mask_short = lru_cache(maxsize=1 << 16)(_mask)  # names and labels repeat in every step


def redact_text(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``[redacted]``."""
    if len(text) < 8:  # nothing that short is a key or a key=value pair
        return text
    return _mask_short(text) if len(text) <= 256 else _mask(text)


@lru_cache(maxsize=1 << 12)
def _secret_name(key: str) -> bool:
    return _SECRET_NAME.search(key) is not None


_PLAIN = (int, float, bool, type(None))


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
            if isinstance(v, str | bytes) and v and _secret_name(key):
                out[redact_text(key)] = REDACTED
            else:
                out[redact_text(key)] = redact(v, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        if all(type(v) in _PLAIN for v in value):  # numbers (series, grid rows): nothing to mask
            return list(value)
        return [redact(v, _depth + 1) for v in value]
    return value


def redact_json(text: str) -> str:
    """JSON text with secrets removed, by the same rules as :func:`redact`."""
    low = text.lower()
    if any(s in low for s in _JSON_SENTINELS):

        def pair(m: re.Match[str]) -> str:
            return f'"{m.group(1)}"{m.group(2)}"{REDACTED}"' if m.group(3) and _secret_name(m.group(1)) else m.group(0)

        text = _JSON_PAIR.sub(pair, text)
    return _mask(text)

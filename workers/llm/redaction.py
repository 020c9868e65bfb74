"""Secret scrubbing for everything the LLM layer lets out (errors, log lines, attempt info):
the API key, the credentials an injected HTTP client sends in its own headers, and anything
shaped like a bearer token or an ``sk-`` key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["Redactor", "header_secrets"]


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")


_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\n]+")


# A header whose (lower-case) name contains one of these words carries a credential: auth
# schemes (authorization, proxy-authorization, x-auth-token), API keys of gateways and Azure
# (x-api-key, api-key, ocp-apim-subscription-key), cookies.
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "cookie", "password", "signature")


def header_secrets(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    """The credential values among ``headers`` (an injected HTTP client's own): every value of
    a header whose name says it carries one, and the token part of ``Bearer ...`` / ``Basic ...``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: list[str] = []
    for name, value in items:
        if not any(word in str(name).lower() for word in _CREDENTIAL_WORDS):
            continue
        found.append(str(value))
        scheme, _, token = str(value).partition(" ")
        if token.strip() and scheme.isalpha():
            found.append(token.strip())
    return found


class Redactor:
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

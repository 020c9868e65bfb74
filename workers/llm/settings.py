"""Where the models are and how to call them: :class:`OpenAISettings` and the
``response_format`` names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.validation import problems

__all__ = ["OpenAISettings", "ResponseFormat"]


ResponseFormat = Literal["auto", "json_schema_strict", "json_schema", "json_object", "none"]


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

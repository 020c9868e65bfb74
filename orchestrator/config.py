"""Fleet configuration from code, the environment and a config file, validated with clear
errors. Precedence: arguments in code > environment > file > defaults.

Environment: ``TINYFLEET_EXECUTOR`` (ray|local), ``TINYFLEET_RAY_ADDRESS`` (or ``RAY_ADDRESS``),
``TINYFLEET_PLANNER`` (rules|openai), ``TINYFLEET_POLICY`` (ladder|tiny_only|final_only),
``TINYFLEET_JOURNAL_DIR``, ``TINYFLEET_MAX_LARGE_CALLS``, ``TINYFLEET_MAX_TOKENS``,
``TINYFLEET_MAX_COST_USD``, ``TINYFLEET_DEADLINE_S``. File: JSON or TOML with the same keys
as :class:`FleetConfig` (``[budget]`` as a table).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Budget
from tinyfleet_core.validation import first_problem

__all__ = ["FleetConfig"]

_ENV = {
    "TINYFLEET_EXECUTOR": ("executor", str),
    "TINYFLEET_RAY_ADDRESS": ("address", str),
    "TINYFLEET_PLANNER": ("planner", str),
    "TINYFLEET_POLICY": ("policy", str),
    "TINYFLEET_JOURNAL_DIR": ("journal_dir", str),
}
_ENV_BUDGET = {
    "TINYFLEET_MAX_LARGE_CALLS": "max_large_calls",
    "TINYFLEET_MAX_TOKENS": "max_tokens",
    "TINYFLEET_MAX_COST_USD": "max_cost_usd",
    "TINYFLEET_DEADLINE_S": "deadline_s",
}


class FleetConfig(BaseModel):
    """Everything a Fleet is built from, as data."""

    model_config = ConfigDict(extra="forbid")
    executor: Literal["ray", "local"] = "ray"
    address: str | None = None
    planner: Literal["rules", "openai"] = "rules"
    policy: Literal["ladder", "tiny_only", "final_only"] = "ladder"
    journal_dir: str | None = None
    budget: Budget = Field(default_factory=Budget)

    @classmethod
    def _validate(cls, data: Mapping[str, Any], source: str, from_env: Mapping[str, str] | None = None) -> FleetConfig:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            loc, msg = first_problem(e)
            loc = (from_env or {}).get(loc, loc)  # a value that came from a variable is named by it
            raise ConfigError(f"{source}: '{loc}': {msg}") from None

    @classmethod
    def load(
        cls, file: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> FleetConfig:
        """Merge defaults, ``file``, ``env`` (default: os.environ) and ``overrides``."""
        data: dict[str, Any] = {}
        if file is not None:
            data.update(_read_file(Path(file)))
        env = os.environ if env is None else env
        source = "environment"
        for var, (key, _) in _ENV.items():
            if env.get(var):
                data[key] = env[var]
        if "address" not in data and env.get("RAY_ADDRESS"):
            data["address"] = env["RAY_ADDRESS"]
        budget = dict(data.get("budget") or {})
        for var, key in _ENV_BUDGET.items():
            if env.get(var):
                budget[key] = env[var]
        if budget:
            data["budget"] = budget
        from_env = {key: var for var, (key, _) in _ENV.items() if env.get(var)}
        from_env |= {f"budget.{key}": var for var, key in _ENV_BUDGET.items() if env.get(var)}
        for k, v in overrides.items():
            if v is not None:
                data[k] = v
                from_env.pop(k, None)
                source = "arguments"
        return cls._validate(data, f"tinyfleet config ({source}{', ' + str(file) if file else ''})", from_env)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object at the top level")
    section = data.get("tinyfleet", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [tinyfleet] must be a table")
    return section

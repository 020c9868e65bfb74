"""Fleet configuration from code, the environment and a config file, validated with clear
errors. Precedence: arguments in code > environment > file > defaults (``pydantic-settings``
merges the sources, one :class:`~pydantic_settings.PydanticBaseSettingsSource` each).

Environment: ``TINYFLEET_EXECUTOR`` (ray|local), ``TINYFLEET_RAY_ADDRESS`` (or ``RAY_ADDRESS``,
which ranks below the file: it is Ray's own variable, a fallback), ``TINYFLEET_PLANNER``
(rules|openai), ``TINYFLEET_POLICY`` (ladder|tiny_only|final_only), ``TINYFLEET_JOURNAL_DIR``,
``TINYFLEET_MAX_LARGE_CALLS``, ``TINYFLEET_MAX_TOKENS``, ``TINYFLEET_MAX_COST_USD``,
``TINYFLEET_DEADLINE_S``; an empty variable counts as unset. File: JSON or TOML with the same
keys as :class:`FleetConfig` (``[budget]`` as a table), at the top level or under ``[tinyfleet]``.

A bad value is a :class:`~tinyfleet_core.errors.ConfigError` naming the environment variable
when the value came from one, the field (``budget.max_tokens``) otherwise.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Budget
from tinyfleet_core.validation import first_problem

__all__ = ["FleetConfig"]

ENV_VARS: dict[str, str] = {
    "TINYFLEET_EXECUTOR": "executor",
    "TINYFLEET_RAY_ADDRESS": "address",
    "TINYFLEET_PLANNER": "planner",
    "TINYFLEET_POLICY": "policy",
    "TINYFLEET_JOURNAL_DIR": "journal_dir",
    "TINYFLEET_MAX_LARGE_CALLS": "budget.max_large_calls",
    "TINYFLEET_MAX_TOKENS": "budget.max_tokens",
    "TINYFLEET_MAX_COST_USD": "budget.max_cost_usd",
    "TINYFLEET_DEADLINE_S": "budget.deadline_s",
}
"""Environment variable -> the field it sets (dotted: a field of ``budget``)."""

# what one FleetConfig.load call reads (the sources read it; the default: os.environ, no file)
_SOURCES: ContextVar[tuple[Path | None, Mapping[str, str]] | None] = ContextVar("tinyfleet_config_sources", default=None)


class FleetConfig(BaseSettings):
    """Everything a Fleet is built from, as data. ``FleetConfig(**values)`` reads the
    environment for what ``values`` leave out; :meth:`load` also reads a file."""

    model_config = SettingsConfigDict(extra="forbid")
    executor: Literal["ray", "local"] = "ray"
    address: str | None = None
    planner: Literal["rules", "openai"] = "rules"
    policy: Literal["ladder", "tiny_only", "final_only"] = "ladder"
    journal_dir: str | None = None
    budget: Budget = Field(default_factory=Budget)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: arguments, ``TINYFLEET_*``, the file, ``RAY_ADDRESS`` (then the defaults).
        A field given as an argument is replaced whole (a ``budget`` argument is the whole budget)."""
        file, env = _SOURCES.get() or (None, os.environ)
        given = frozenset(init_settings.init_kwargs) if isinstance(init_settings, InitSettingsSource) else frozenset()
        return (
            init_settings,
            _Environment(settings_cls, given, env),
            _ConfigFile(settings_cls, given, file),
            _RayAddress(settings_cls, given, env),
        )

    @classmethod
    def load(
        cls, file: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> FleetConfig:
        """Merge defaults, ``file``, ``env`` (default: os.environ) and ``overrides`` (a None
        override counts as not given)."""
        env = os.environ if env is None else env
        given = {k: v for k, v in overrides.items() if v is not None}
        source = f"tinyfleet config ({'arguments' if given else 'environment'}{', ' + str(file) if file else ''})"
        # a bad value that came from a variable is named by it (unless an argument replaced it)
        named = {field: var for var, field in ENV_VARS.items() if env.get(var) and field.split(".")[0] not in given}
        with _reading(Path(file) if file is not None else None, env):
            try:
                return cls(**given)
            except ValidationError as e:
                loc, msg = first_problem(e)
                raise ConfigError(f"{source}: '{named.get(loc, loc)}': {msg}") from None


@contextmanager
def _reading(file: Path | None, env: Mapping[str, str]) -> Iterator[None]:
    token = _SOURCES.set((file, env))
    try:
        yield
    finally:
        _SOURCES.reset(token)


class _Source(PydanticBaseSettingsSource):
    """A source below the arguments: reads its whole dict at once (:meth:`read`) and leaves
    out the fields the arguments give."""

    def __init__(self, settings_cls: type[BaseSettings], replaced: frozenset[str]) -> None:
        super().__init__(settings_cls)
        self.replaced = replaced

    def read(self) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.read().items() if k not in self.replaced}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once


class _Environment(_Source):
    """The ``TINYFLEET_*`` variables (:data:`ENV_VARS`)."""

    def __init__(self, settings_cls: type[BaseSettings], replaced: frozenset[str], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls, replaced)
        self.env = env

    def read(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for var, field in ENV_VARS.items():
            if self.env.get(var):
                head, _, sub = field.partition(".")
                if sub:
                    data.setdefault(head, {})[sub] = self.env[var]
                else:
                    data[head] = self.env[var]
        return data


class _RayAddress(_Environment):
    """``RAY_ADDRESS``: the address when nothing above it gives one."""

    def read(self) -> dict[str, Any]:
        return {"address": self.env["RAY_ADDRESS"]} if self.env.get("RAY_ADDRESS") else {}


class _ConfigFile(_Source):
    """A JSON or TOML file (``[tinyfleet]`` table or the top level)."""

    def __init__(self, settings_cls: type[BaseSettings], replaced: frozenset[str], path: Path | None) -> None:
        super().__init__(settings_cls, replaced)
        self.path = path

    def read(self) -> dict[str, Any]:
        return {} if self.path is None else _read_file(self.path)


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

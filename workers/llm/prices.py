"""Built-in prices of common hosted models, so a run's cost per thought is not 0.

List prices in US dollars per million tokens, standard tier (no cached-input, batch or
priority rates), as published on https://openai.com/api/pricing and read in August 2025
(``PRICES_AS_OF``). Prices change: override them with a JSON file named by
``TINYFLEET_PRICES`` (``{"models": {"my-model": {"per_mtok_in": 1.0, "per_mtok_out": 2.0}}}``,
merged over these; a ``"default"`` entry prices every model not listed), or pass a
:class:`~orchestrator.PriceTable` to the planner or worker.

Models not listed (a local vLLM, Ollama or llama.cpp server) cost 0 unless priced. A dated
snapshot ("gpt-4o-2024-08-06") or a provider prefix ("openai/gpt-4o") takes the price of the
longest listed name it extends (:meth:`~tinyfleet_core.prices.PriceTable.price`, one rule for
every table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.prices import Price, PriceTable
from tinyfleet_core.validation import first_problem

__all__ = ["BUILTIN_PRICES", "PRICES_AS_OF", "PRICES_SOURCE", "builtin_price_table", "load_price_table", "model_price"]

PRICES_AS_OF = "2025-08"
PRICES_SOURCE = "https://openai.com/api/pricing (standard tier, USD per 1M tokens)"

BUILTIN_PRICES: dict[str, Price] = {
    "gpt-5": Price(per_mtok_in=1.25, per_mtok_out=10.00),
    "gpt-5-mini": Price(per_mtok_in=0.25, per_mtok_out=2.00),
    "gpt-5-nano": Price(per_mtok_in=0.05, per_mtok_out=0.40),
    "gpt-4.1": Price(per_mtok_in=2.00, per_mtok_out=8.00),
    "gpt-4.1-mini": Price(per_mtok_in=0.40, per_mtok_out=1.60),
    "gpt-4.1-nano": Price(per_mtok_in=0.10, per_mtok_out=0.40),
    "gpt-4o": Price(per_mtok_in=2.50, per_mtok_out=10.00),
    "gpt-4o-mini": Price(per_mtok_in=0.15, per_mtok_out=0.60),
    "o3": Price(per_mtok_in=2.00, per_mtok_out=8.00),
    "o3-mini": Price(per_mtok_in=1.10, per_mtok_out=4.40),
    "o4-mini": Price(per_mtok_in=1.10, per_mtok_out=4.40),
    "o1": Price(per_mtok_in=15.00, per_mtok_out=60.00),
}
"""Model name -> list price (see the module docs for date and source)."""


def builtin_price_table() -> PriceTable:
    return PriceTable(models=dict(BUILTIN_PRICES))


def load_price_table(env: Mapping[str, str] | None = None) -> PriceTable:
    """The built-in table with the file named by ``TINYFLEET_PRICES`` merged over it.
    ConfigError names a file that is missing or does not fit."""
    env = os.environ if env is None else env
    table = builtin_price_table()
    path = env.get("TINYFLEET_PRICES", "").strip()
    if not path:
        return table
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        override = PriceTable.model_validate(doc)
    except OSError as e:
        raise ConfigError(f"TINYFLEET_PRICES={path!r}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"TINYFLEET_PRICES={path!r} is not JSON ({e.msg} at line {e.lineno})") from None
    except ValidationError as e:
        loc, msg = first_problem(e)
        raise ConfigError(
            f"TINYFLEET_PRICES={path!r}: {loc}: {msg}; write "
            '{"models": {"name": {"per_mtok_in": 1.0, "per_mtok_out": 2.0}}}'
        ) from None
    fields = override.model_fields_set
    update: dict[str, object] = {"models": {**table.models, **override.models}}
    if "default" in fields:
        update["default"] = override.default
    return table.model_copy(update=update)


def model_price(table: PriceTable, model: str) -> Price:
    """``table.price(model)`` (kept for existing callers; the matching rule is
    :meth:`~tinyfleet_core.prices.PriceTable.price`'s)."""
    return table.price(model)

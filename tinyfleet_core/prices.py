"""Prices: dollars per million tokens for each model, and the table a run is priced with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CPU_CORE_HOUR_USD", "Price", "PriceTable"]

CPU_CORE_HOUR_USD = 0.0446
"""Default price of one CPU core for an hour: AWS EC2 on-demand c7i.large (2 vCPUs) in
us-east-1 lists at $0.08925/hour, so $0.0446 per vCPU-hour. Set your own with
``PriceTable(cpu_core_hour_usd=...)``."""


class Price(BaseModel):
    """Dollars per million tokens in and out, plus a fixed price per call."""

    model_config = ConfigDict(extra="forbid")
    per_mtok_in: float = Field(default=0.0, ge=0)
    per_mtok_out: float = Field(default=0.0, ge=0)
    per_call: float = Field(default=0.0, ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in * self.per_mtok_in / 1e6 + tokens_out * self.per_mtok_out / 1e6 + self.per_call


class PriceTable(BaseModel):
    """Prices by model name (a dated snapshot takes its model's price, :meth:`price`); ``default``
    for models not listed; ``cpu_core_hour_usd`` for every second of worker, verifier and driver
    time (see :data:`CPU_CORE_HOUR_USD`)."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, Price] = Field(default_factory=dict)
    default: Price = Field(default_factory=Price)
    cpu_core_hour_usd: float = Field(default=CPU_CORE_HOUR_USD, ge=0)

    def price(self, model: str) -> Price:
        """``model``'s price: its own entry, else the longest listed name it extends ("gpt-4o-2024-08-06"
        -> "gpt-4o", "openai/gpt-4o-mini" -> "gpt-4o-mini": a provider prefix is dropped, the name
        goes on with one of ``-:@_``), else ``default``. "gpt-4.1" does not take "gpt-4"'s price."""
        if model in self.models:
            return self.models[model]
        name = model.rsplit("/", 1)[-1]
        if name in self.models:
            return self.models[name]
        best = ""
        for listed in self.models:
            if len(listed) > len(best) and name.startswith(listed) and name[len(listed)] in _SNAPSHOT_SEPARATORS:
                best = listed
        return self.models[best] if best else self.default


_SNAPSHOT_SEPARATORS = "-:@_"
"""What may follow a listed name in a snapshot or variant of it (``gpt-4o-2024-08-06``, ``qwen3:8b``)."""

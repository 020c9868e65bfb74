"""One ``$ref`` walker (tinyfleet_core.refs) that plan validation reads dependencies from, and
one price-matching rule (PriceTable.price) for every price table."""

from __future__ import annotations

import pytest

from planners.plan_check import dependencies, references, split_ref
from tinyfleet_core.errors import PlanError
from tinyfleet_core.models import Step
from tinyfleet_core.prices import Price, PriceTable
from tinyfleet_core.refs import REF, walk_references
from workers.llm.prices import builtin_price_table, model_price


def test_plan_check_reads_references_from_the_one_walker() -> None:
    inputs = {"a": {"$ref": "leg0.path"}, "b": [{"$input": "grid"}, {"x": {"$ref": " leg1 "}}], "c": {"$ref": "leg0", "extra": 1}}
    step = Step(id="s", skill="maze.route", inputs=inputs, after=["leg2", "leg0"])
    walked = [r.head for r in walk_references(step.inputs) if r.kind == REF]
    assert references(step) == walked == ["leg0", "leg1"]  # a dict with more keys than $ref is data, not a reference
    assert dependencies(step) == ["leg0", "leg1", "leg2"]
    assert split_ref("leg0.path.3") == ("leg0", ["path", "3"])
    for bad in ("", "   ", 3):
        with pytest.raises(PlanError, match=r"step 's': '\$ref' must be a non-empty string"):
            references(Step(id="s", skill="maze.route", inputs={"a": {"$ref": bad}}))


def test_one_price_rule_matches_snapshots_and_provider_prefixes() -> None:
    table = PriceTable(
        models={"gpt-4o": Price(per_mtok_in=2.5), "gpt-4o-mini": Price(per_mtok_in=0.15), "gpt-4": Price(per_mtok_in=30.0)},
        default=Price(per_call=0.01),
    )
    assert table.price("gpt-4o").per_mtok_in == 2.5
    assert table.price("gpt-4o-2024-08-06").per_mtok_in == 2.5  # a dated snapshot takes its model's price
    assert table.price("gpt-4o-mini-2024-07-18").per_mtok_in == 0.15  # the longest listed name it extends
    assert table.price("openai/gpt-4o-mini").per_mtok_in == 0.15  # a provider prefix is dropped
    assert table.price("gpt-4.1") == table.default  # "gpt-4" followed by ".1" is another model
    assert table.price("gpt-4ox") == table.default
    assert table.price("qwen3:8b") == table.default
    builtin = builtin_price_table()  # the LLM layer's table: snapshots priced as their model, unknowns at the default
    assert model_price(builtin, "gpt-4o-2024-08-06") == model_price(builtin, "gpt-4o") != builtin.default
    assert model_price(builtin, "llama3") == builtin.default

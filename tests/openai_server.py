"""The tests' handle on the one fake OpenAI-compatible server (:mod:`tinyfleet.testing`, which
the benchmarks use too): its names, and the ``openai_server`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinyfleet.testing import (
    Fault,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    count_pieces,
    count_tokens,
)

__all__ = ["ScriptedOpenAIServer", "Reply", "Fault", "RecordedRequest", "openai_server", "count_tokens", "count_pieces"]


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAIServer]:
    """A started ScriptedOpenAIServer, stopped after the test."""
    with ScriptedOpenAIServer() as server:
        yield server

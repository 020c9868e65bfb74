"""The one fake OpenAI-compatible server (tinyfleet.testing), over real HTTP on 127.0.0.1: a
queue serves at most its ``max_in_flight`` replies at once, and the bench's simulated LLM is a
handler on the same server (an answer it cannot give is a 400 that says why)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tinyfleet.bench.simulated_llm import SimConfig, count_prompt_tokens, count_tokens
from tinyfleet.bench.stub_server import simulated_server
from tinyfleet.testing import Reply, ScriptedOpenAIServer


def _post(base_url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_queue_serves_at_most_its_limit_at_once() -> None:
    with ScriptedOpenAIServer(max_in_flight={"model-a": 2}) as server:
        server.always(Reply(content="ok", delay_s=1.0, queue="model-a"))
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda _: _post(server.base_url, {"model": "m", "messages": []}), range(6)))
    assert [status for status, _ in got] == [200] * 6
    assert server.peak_in_flight == {"model-a": 2}  # six waited for two slots


def test_the_simulated_llm_is_a_handler_on_the_same_server() -> None:
    def answer(body: dict[str, Any]) -> str:
        if "refuse" in body["messages"][-1]["content"]:
            raise ValueError("no right answer for this request")
        return json.dumps({"answer": 42})

    sim = SimConfig(seed=0)
    body = {"model": sim.profiles[0].name, "messages": [{"role": "user", "content": "what is it?"}]}
    with simulated_server(answer, sim) as server:
        status, doc = _post(server.base_url, body)
        assert status == 200 and doc["choices"][0]["message"]["content"] == '{"answer": 42}'
        assert doc["usage"]["prompt_tokens"] == count_prompt_tokens(body)
        assert doc["usage"]["completion_tokens"] == count_tokens('{"answer": 42}')
        status, doc = _post(server.base_url, {**body, "messages": [{"role": "user", "content": "refuse"}]})
    assert status == 400 and "no right answer for this request" in doc["error"]["message"]
    assert [r.answered for r in server.chat_requests()] == ["reply", "fault:400"]

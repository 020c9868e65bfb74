"""``BenchStubServer``: the benchmarks' simulated large model, served over OpenAI-compatible
HTTP on 127.0.0.1 by the one fake server (:class:`tinyfleet.testing.ScriptedOpenAIServer`).

It is not a model. Its ``answer`` function gives the right reply text for a request; the
simulated LLM of :mod:`.simulated_llm` then makes it wrong at the stated rates (escalated steps
only), picks the profile by the request's model name (time to first token, output tokens/s, at
most so many requests in flight: the rest queue in the server), and counts usage from the real
prompt and the reply actually sent (the stated token rule). So the real ``openai`` client, the
planner's ``solve`` path and the small-LLM tier run end to end over real HTTP.

    with BenchStubServer(answer=my_answer, sim=SimConfig(seed=1), process=True) as stub:
        settings = stub.settings()          # OpenAISettings pointing at the stub

``process=True`` serves from a child process (``python -m tinyfleet.bench.stub_server``;
``answer`` must then be a module-level function), so the stub's own CPU time does not compete
with the process being measured, as a real model server's would not.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tinyfleet.bench.simulated_llm import SimConfig, count_prompt_tokens, count_tokens, respond
from tinyfleet.testing import Fault, Handler, RecordedRequest, Reply, ScriptedOpenAIServer, last_user_text

if TYPE_CHECKING:
    from workers.llm.client import OpenAISettings

__all__ = ["BenchStubServer", "Answer", "last_user_text", "simulated_handler", "simulated_server"]

Answer = Callable[[dict[str, Any]], str]
"""Request body (parsed JSON) -> the right reply's message text."""


def simulated_handler(answer: Answer, sim: SimConfig) -> Handler:
    """The fake server's handler for the simulated LLM: the right answer, made wrong at
    ``sim``'s rates, served for the profile's service time in the profile's queue. An answer the
    stub cannot give (a bad request) is a 400."""

    def handle(req: RecordedRequest) -> Reply | Fault:
        body = req.body or {}
        try:
            text, _ = respond(sim, body, answer(body))
        except (ValueError, KeyError, TypeError) as e:
            return Fault(status=400, message=f"bench stub: {type(e).__name__}: {e}")
        prof = sim.profile(str(body.get("model", "")))
        out = count_tokens(text)
        return Reply(content=text, prompt_tokens=count_prompt_tokens(body), completion_tokens=out, delay_s=prof.seconds(out), queue=prof.name)

    return handle


def simulated_server(answer: Answer, sim: SimConfig, *, keep_requests: bool = True) -> ScriptedOpenAIServer:
    """A (not yet started) fake server playing the simulated LLM."""
    server = ScriptedOpenAIServer(max_in_flight={p.name: p.max_concurrent for p in sim.profiles}, keep_requests=keep_requests)
    return server.on(simulated_handler(answer, sim))


def _load_answer(ref: str) -> Answer:
    mod, _, name = ref.partition(":")
    fn = getattr(importlib.import_module(mod), name)
    if not callable(fn):
        raise TypeError(f"{ref} is not callable")
    return fn  # type: ignore[no-any-return]


def _answer_ref(answer: Answer) -> str:
    mod, name = getattr(answer, "__module__", ""), getattr(answer, "__qualname__", "")
    if not mod or not name or "<" in name or "." in name:
        raise ValueError("process=True needs a module-level answer function")
    return f"{mod}:{name}"


def main(argv: list[str] | None = None) -> None:
    """``python -m tinyfleet.bench.stub_server --answer MODULE:FUNC --sim JSON``: serve until
    killed; prints the port on the first line of stdout."""
    ap = argparse.ArgumentParser(description="the benchmarks' simulated LLM over OpenAI-compatible HTTP (not a model)")
    ap.add_argument("--answer", required=True)
    ap.add_argument("--sim", required=True, help="SimConfig as JSON")
    args = ap.parse_args(argv)
    server = simulated_server(_load_answer(args.answer), SimConfig.from_json(args.sim), keep_requests=False).start()
    print(server.port, flush=True)
    threading.Event().wait()  # serve until the parent terminates this process


class BenchStubServer:
    """The simulated LLM on 127.0.0.1 (see module docs). Counts the requests it answered
    (in-process only)."""

    def __init__(self, answer: Answer, *, sim: SimConfig | None = None, process: bool = False) -> None:
        self.answer = answer
        self.sim = sim or SimConfig()
        self.process = process
        self._port = 0
        self._server: ScriptedOpenAIServer | None = None
        self._child: subprocess.Popen[str] | None = None

    @property
    def requests(self) -> int:
        """Chat requests answered so far (by an in-process stub; a child process does not report)."""
        return len(self._server.chat_requests()) if self._server is not None else 0

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("the stub server is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def settings(self, **overrides: Any) -> OpenAISettings:
        """Settings for the planner / small-LLM tier: this stub, a dummy key, the default retries;
        the large and small model names are the first two profiles'."""
        from workers.llm.client import OpenAISettings

        names = [p.name for p in self.sim.profiles]
        values: dict[str, Any] = {
            "api_key": "bench-stub-key",
            "base_url": self.base_url,
            "large_model": names[0],
            "small_model": names[1 % len(names)],
            "timeout_s": 30.0,
        }
        values.update(overrides)
        return OpenAISettings(**values)

    def start(self) -> BenchStubServer:
        if self.process:
            cmd = [sys.executable, "-m", "tinyfleet.bench.stub_server", "--answer", _answer_ref(self.answer), "--sim", self.sim.to_json()]
            self._child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert self._child.stdout is not None
            line = self._child.stdout.readline().strip()
            if not line.isdigit():
                self._child.kill()
                raise RuntimeError(f"the benchmark stub server process did not start (said {line!r})")
            self._port = int(line)
            return self
        self._server = simulated_server(self.answer, self.sim).start()
        self._port = self._server.port
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._child.terminate()
            self._child.wait(10)
            if self._child.stdout is not None:
                self._child.stdout.close()
            self._child = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> BenchStubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()

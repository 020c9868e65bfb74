"""``BenchStubServer``: an OpenAI-compatible HTTP server on 127.0.0.1 for the benchmarks.

It is not a model. It answers ``POST /v1/chat/completions`` with whatever its ``answer``
function returns for the request, so the real ``openai`` client, the planner's ``solve``
path and the small-LLM tier run end to end over real HTTP. Two modes:

- ``sim=SimConfig(...)``: the simulated LLM of :mod:`.simulated_llm`: the request's model
  name picks a profile (time to first token, output tokens/s, at most so many requests in
  flight, the rest queue), usage counts the real prompt and the reply actually sent (the
  stated token rule), and escalated steps are answered wrongly at the stated rates.
- no ``sim``: a fixed delay of ``latency_s`` per request; usage is characters / 4.

    with BenchStubServer(answer=my_answer, sim=SimConfig(seed=1), process=True) as stub:
        settings = stub.settings()          # OpenAISettings pointing at the stub

``process=True`` serves from a child process (``python -m tinyfleet.bench.stub_server``;
``answer`` must then be a module-level function), so the stub's own CPU time does not compete with the process being measured,
as a real model server's would not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tinyfleet.bench.simulated_llm import SimConfig, count_prompt_tokens, count_tokens, respond

if TYPE_CHECKING:
    from workers.llm.client import OpenAISettings

__all__ = ["BenchStubServer", "Answer", "estimate_tokens", "last_user_text"]

Answer = Callable[[dict[str, Any]], str]
"""Request body (parsed JSON) -> the reply's message text."""


def estimate_tokens(text: str) -> int:
    """A stated estimate: one token per 4 characters (at least 1)."""
    return max(1, len(text) // 4)


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class _Slots:
    """One bounded semaphore per simulated model: its requests in flight."""

    def __init__(self, sim: SimConfig | None) -> None:
        self._sems = {p.name: threading.BoundedSemaphore(p.max_concurrent) for p in (sim.profiles if sim else ())}

    def get(self, name: str) -> threading.BoundedSemaphore | None:
        return self._sems.get(name)


def _handler(answer: Answer, latency_s: float, model: str, count: Any, sim: SimConfig | None = None) -> type[BaseHTTPRequestHandler]:
    slots = _Slots(sim)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            t0 = time.perf_counter()
            delay, sem = latency_s, None
            try:
                body = json.loads(raw)
                text = answer(body)
                status = 200
                if sim is not None:
                    text, _ = respond(sim, body, text)
                    prof = sim.profile(str(body.get("model", "")))
                    p_tok, c_tok = count_prompt_tokens(body), count_tokens(text)
                    delay, sem = prof.seconds(c_tok), slots.get(prof.name)
                else:
                    prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
                    p_tok, c_tok = estimate_tokens(prompt), estimate_tokens(text)
                doc: dict[str, Any] = {
                    "id": "stub",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", model),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok},
                }
            except (ValueError, KeyError, TypeError) as e:  # a bad request or an answer the stub cannot give
                status = 400
                doc = {"error": {"message": f"bench stub: {type(e).__name__}: {e}", "type": "invalid_request_error"}}
            if sem is not None:  # queue for a slot of the simulated model, then serve for `delay`
                spent = time.perf_counter() - t0  # computing the answer counts toward the service time
                with sem:
                    time.sleep(max(0.0, delay - spent))
            else:
                left = delay - (time.perf_counter() - t0)
                if left > 0:
                    time.sleep(left)
            data = json.dumps(doc).encode()
            with count.get_lock():
                count.value += 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _Count:
    """A request counter (thread-safe)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


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
    """``python -m tinyfleet.bench.stub_server --answer MODULE:FUNC [--latency S]``: serve
    until killed; prints the port on the first line of stdout."""
    ap = argparse.ArgumentParser(description="fixed-latency OpenAI-compatible benchmark stub (not a model)")
    ap.add_argument("--answer", required=True)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--model", default="bench-stub")
    ap.add_argument("--sim", default="", help="SimConfig as JSON: serve as the simulated LLM")
    args = ap.parse_args(argv)
    sim = SimConfig.from_json(args.sim) if args.sim else None
    server = _Server(("127.0.0.1", 0), _handler(_load_answer(args.answer), args.latency, args.model, _Count(), sim))
    print(server.server_address[1], flush=True)
    server.serve_forever()


class BenchStubServer:
    """An OpenAI-compatible stub, simulated LLM when ``sim`` is given (see module docs).
    Counts the requests it answered (in-process only)."""

    def __init__(
        self, answer: Answer, *, latency_s: float = 0.0, model: str = "bench-stub", process: bool = False, sim: SimConfig | None = None
    ) -> None:
        self.answer = answer
        self.latency_s = latency_s
        self.sim = sim
        self.model = model
        self.process = process
        self._count = _Count()
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None

    @property
    def requests(self) -> int:
        """Requests answered so far (by an in-process stub; a child process does not report)."""
        return int(self._count.value)

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("the stub server is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def settings(self, **overrides: Any) -> OpenAISettings:
        """Settings for the planner / small-LLM tier: this stub, a dummy key, the default retries;
        with ``sim``, the large and small model names are its first two profiles'."""
        from workers.llm.client import OpenAISettings

        names = [p.name for p in self.sim.profiles] if self.sim else [f"{self.model}-large", f"{self.model}-small"]
        values: dict[str, Any] = {
            "api_key": "bench-stub-key",
            "base_url": self.base_url,
            "large_model": names[0],
            "small_model": names[1 % len(names)],
            "timeout_s": max(30.0, 10 * self.latency_s),
        }
        values.update(overrides)
        return OpenAISettings(**values)

    def start(self) -> BenchStubServer:
        if self.process:
            cmd = [sys.executable, "-m", "tinyfleet.bench.stub_server", "--answer", _answer_ref(self.answer),
                   "--latency", str(self.latency_s), "--model", self.model, *(["--sim", self.sim.to_json()] if self.sim else [])]
            self._child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert self._child.stdout is not None
            line = self._child.stdout.readline().strip()
            if not line.isdigit():
                self._child.kill()
                raise RuntimeError(f"the benchmark stub server process did not start (said {line!r})")
            self._port = int(line)
            return self
        self._server = _Server(("127.0.0.1", 0), _handler(self.answer, self.latency_s, self.model, self._count, self.sim))
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._child.terminate()
            self._child.wait(10)
            if self._child.stdout is not None:
                self._child.stdout.close()
            self._child = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BenchStubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()

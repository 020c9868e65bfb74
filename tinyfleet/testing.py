"""``ScriptedOpenAIServer``: a fake OpenAI-compatible HTTP server on 127.0.0.1, the one that
the tests and the benchmarks both use.

It is not a model. Every answer is scripted by whoever starts it: a queue of replies and
faults, or a function of the request (a test's scripted model; the benchmarks' simulated LLM,
:mod:`tinyfleet.bench.stub_server`). The real ``openai`` client talks to it over real HTTP,
so retries, timeouts, ``response_format`` handling and usage accounting are exercised end
to end. Nothing here imports the rest of tinyfleet.

    server.push(Fault.rate_limited(retry_after=0.05), Reply.json({"steps": [...], "output": "a"}))
    server.on(lambda req: Reply.json(answer_for(req)))      # when the queue is empty

Faults: HTTP errors with ``Retry-After`` (429) or without (500, 503), slow replies past the
client's timeout, bodies that are not JSON, error bodies that echo the Authorization header
(to test that secrets are scrubbed). ``json_schema_supported=False`` makes it reject
``response_format={"type": "json_schema"}`` with a 400, as some servers do.

Every request is recorded (``server.requests``, unless ``keep_requests=False``) with its
headers and body, and every successful reply's usage numbers are summed (``server.usage_totals()``).

Service time: a reply (or fault) with ``delay_s`` is sent that long after its request came in
(the time spent computing the answer counts toward it). ``Reply(queue=NAME)`` serves it in the
queue ``NAME``, where at most ``max_in_flight[NAME]`` replies are served at once and the rest
wait: a model server's concurrency limit.

Usage numbers are the scripted ones (``Reply.prompt_tokens``...) unless the server is started
with ``count_usage=True``: it then counts them itself from what went over the wire, with
:func:`count_tokens` (characters / 4; ``counter=count_pieces`` counts stricter), prompt =
every message's content plus the ``response_format`` JSON, completion = the reply's content
plus its reasoning. ``context_limit=N`` then answers a
request whose prompt counts more than N tokens with the 400 ``context_length_exceeded`` that
OpenAI and vLLM send. ``Reply(reasoning=...)`` puts text in ``reasoning_content`` (as
DeepSeek-R1 / Qwen3 servers with a reasoning parser do); ``Reply(content=None)`` sends a null
content.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedOpenAIServer", "Reply", "Fault", "RecordedRequest", "Script", "Handler", "count_tokens", "count_pieces", "last_user_text"]

_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]")


def count_tokens(text: str) -> int:
    """Tokens as this fixture counts them: characters / 4, rounded up, the estimate the
    project's benchmark states and the one issue 21 measured with (OpenAI's rule of thumb
    for English). No tokenizer file is needed, nothing downloads."""
    return -(-len(text) // 4)


def count_pieces(text: str) -> int:
    """A stricter count, for comparison: every run of letters, every group of up to three
    digits and every other non-space character is one token (a BPE tokenizer such as
    cl100k merges punctuation like '":"', so it counts JSON at or below this)."""
    return len(_PIECE.findall(text))


@dataclass(frozen=True)
class Reply:
    """A successful chat completion. ``content`` is the message text (a list gives one text
    per choice); usage numbers are returned as given."""

    content: str | list[str] | None = ""
    prompt_tokens: int = 100
    completion_tokens: int = 20
    finish_reason: str = "stop"
    delay_s: float = 0.0
    reasoning: str | None = None
    queue: str | None = None
    """Serve in this queue of the server's ``max_in_flight`` (a model's concurrency limit)."""

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)


@dataclass(frozen=True)
class Fault:
    """An injected failure: an HTTP error status, optionally after a delay, optionally with a
    ``Retry-After`` header, a raw (non-JSON) body, or an error message that echoes the
    request's Authorization header."""

    status: int = 500
    message: str = "injected server error"
    retry_after: float | None = None
    delay_s: float = 0.0
    raw_body: str | None = None
    echo_auth: bool = False

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0.05, **kw: Any) -> Fault:
        return cls(status=429, message="Rate limit reached; try again later", retry_after=retry_after, **kw)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Fault:
        return cls(status=status, **kw)

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Sleeps ``delay_s`` then answers 504 (the client should have given up by then)."""
        return cls(status=504, message="slow reply (the client should have timed out)", delay_s=delay_s)

    @classmethod
    def bad_body(cls) -> Fault:
        """HTTP 200 whose body is not JSON."""
        return cls(status=200, raw_body="<html>upstream proxy says hello</html>")


Script = Reply | Fault
_Answer = tuple[int, dict[str, str], bytes, float, str | None]
"""(status, headers, body, delay_s, queue)"""
Handler = Callable[["RecordedRequest"], Script]


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    raw: str
    body: dict[str, Any] | None
    at: float = field(default_factory=time.monotonic)
    answered: str = ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", []))

    @property
    def last_user(self) -> str:
        return last_user_text(self.body or {})

    @property
    def system(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "system")

    @property
    def response_format(self) -> dict[str, Any] | None:
        rf = (self.body or {}).get("response_format")
        return rf if isinstance(rf, dict) else None

    @property
    def schema_name(self) -> str | None:
        rf = self.response_format or {}
        return (rf.get("json_schema") or {}).get("name") if rf.get("type") == "json_schema" else None


def last_user_text(body: Mapping[str, Any]) -> str:
    """The content of the last user message of a chat request body ("" when there is none)."""
    for m in reversed(list(body.get("messages") or [])):
        if isinstance(m, dict) and m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a benchmark sends hundreds of requests at once


class ScriptedOpenAIServer:
    """A fake OpenAI-compatible server: ``/v1/chat/completions`` and ``/v1/models`` on 127.0.0.1."""

    def __init__(
        self,
        *,
        json_schema_supported: bool = True,
        json_object_supported: bool = True,
        strict_supported: bool = True,
        count_usage: bool = False,
        context_limit: int | None = None,
        counter: Callable[[str], int] = count_tokens,
        max_in_flight: Mapping[str, int] | None = None,
        keep_requests: bool = True,
    ) -> None:
        self.json_schema_supported = json_schema_supported
        self.json_object_supported = json_object_supported
        self.strict_supported = strict_supported
        self.count_usage = count_usage
        self.context_limit = context_limit
        self.counter = counter
        self.keep_requests = keep_requests
        self._queues = {name: threading.BoundedSemaphore(n) for name, n in (max_in_flight or {}).items()}
        self._in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}
        """Per queue: the most replies it served at once."""
        self.requests: list[RecordedRequest] = []
        self.usage: list[tuple[str, int, int]] = []  # (model, prompt, completion) per successful reply
        self._queue: deque[Script] = deque()
        self._handler: Handler | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ scripting

    def push(self, *items: Script) -> ScriptedOpenAIServer:
        """Queue replies/faults, answered in order, one per request."""
        with self._lock:
            self._queue.extend(items)
        return self

    def on(self, handler: Handler) -> ScriptedOpenAIServer:
        """Answer with ``handler(request)`` whenever the queue is empty."""
        self._handler = handler
        return self

    def always(self, item: Script) -> ScriptedOpenAIServer:
        return self.on(lambda _req: item)

    def usage_totals(self) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) summed over every successful reply."""
        with self._lock:
            return sum(u[1] for u in self.usage), sum(u[2] for u in self.usage)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started; call start() or use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        server = self

        class _Handler(_RequestHandler):
            owner = server

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ answering

    def _count_in_flight(self, queue: str, step: int) -> None:
        with self._lock:
            n = self._in_flight[queue] = self._in_flight.get(queue, 0) + step
            self.peak_in_flight[queue] = max(self.peak_in_flight.get(queue, 0), n)

    def _next(self, req: RecordedRequest) -> Script:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self._handler is not None:
            return self._handler(req)
        return Fault(status=500, message="ScriptedOpenAIServer: the test scripted no reply for this request")

    def _respond(self, req: RecordedRequest) -> _Answer:
        body = req.body or {}
        rf = req.response_format or {}
        if rf.get("type") == "json_schema" and not self.json_schema_supported:
            return _error(400, "response_format type 'json_schema' is not supported by this server", param="response_format")
        if rf.get("type") == "json_object" and not self.json_object_supported:
            return _error(400, "response_format type 'json_object' is not supported by this server", param="response_format")
        if (rf.get("json_schema") or {}).get("strict") and not self.strict_supported:
            return _error(400, "Invalid schema for response_format: strict mode is not supported", param="response_format")
        prompt_count = self.counter(_prompt_text(req)) if self.count_usage else 0
        if self.context_limit is not None and prompt_count > self.context_limit:
            req.answered = "fault:400"
            return _error(
                400,
                f"This model's maximum context length is {self.context_limit} tokens. However, your messages "
                f"resulted in {prompt_count} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        item = self._next(req)
        if isinstance(item, Fault):
            req.answered = f"fault:{item.status}"
            message = item.message
            if item.echo_auth:
                message += f" (request headers: Authorization: {req.headers.get('authorization', '')})"
            status, headers, payload, _, _ = _error(item.status, message)
            if item.retry_after is not None:
                headers["Retry-After"] = f"{item.retry_after:g}"
            if item.raw_body is not None:
                payload = item.raw_body.encode()
                headers["Content-Type"] = "application/json"
            return status, headers, payload, item.delay_s, None
        req.answered = "reply"
        n = int(body.get("n") or 1)
        texts = item.content if isinstance(item.content, list) else [item.content] * n
        model = str(body.get("model", ""))
        prompt, completion = item.prompt_tokens, item.completion_tokens
        if self.count_usage:
            prompt = prompt_count
            completion = sum(self.counter(t or "") + self.counter(item.reasoning or "") for t in texts)
        with self._lock:
            self.usage.append((model, prompt, completion))
        doc = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": i, "message": _message(t, item.reasoning), "finish_reason": item.finish_reason}
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode(), item.delay_s, item.queue


def _message(content: str | None, reasoning: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    return msg


def _prompt_text(req: RecordedRequest) -> str:
    """What the prompt of ``req`` is counted from: every message's content and the response_format."""
    text = "\n".join(str(m.get("content") or "") for m in req.messages)
    rf = req.response_format
    if rf is not None:
        text += "\n" + json.dumps(rf, separators=(",", ":"))
    return text


def _error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> _Answer:
    kind = "rate_limit_error" if status == 429 else ("invalid_request_error" if status < 500 else "server_error")
    doc = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode(), 0.0, None


class _RequestHandler(BaseHTTPRequestHandler):
    owner: ScriptedOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean (and headers out of stderr)

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        req = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            raw=raw,
            body=body if isinstance(body, dict) else None,
        )
        if self.owner.keep_requests:
            with self.owner._lock:
                self.owner.requests.append(req)
        return req

    def _send(
        self, status: int, headers: dict[str, str], payload: bytes, delay_s: float, queue: str | None, since: float | None = None
    ) -> None:
        """Send the answer ``delay_s`` after ``since`` (the request's arrival), in ``queue``'s slots."""
        slot = self.owner._queues.get(queue) if queue is not None else None
        left = delay_s - (time.monotonic() - since if since is not None else 0.0)
        if slot is not None:
            with slot:  # wait for a slot of the queue, then serve for the time left
                self.owner._count_in_flight(str(queue), +1)
                try:
                    if left > 0 and self.owner._stopping.wait(left):
                        return
                finally:
                    self.owner._count_in_flight(str(queue), -1)
        elif left > 0 and self.owner._stopping.wait(left):
            return
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the slow reply came

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record()
        if self.path.rstrip("/").endswith("/models"):
            doc = {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "tinyfleet.testing"}]}
            self._send(200, {"Content-Type": "application/json"}, json.dumps(doc).encode(), 0.0, None)
        else:
            self._send(*_error(404, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        req = self._record()
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(*_error(404, f"no route {self.path}"))
            return
        if req.body is None:
            self._send(*_error(400, "request body is not a JSON object"))
            return
        self._send(*self.owner._respond(req), since=req.at)


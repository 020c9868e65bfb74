"""Serving the run viewer on 127.0.0.1: the standard library's ``ThreadingHTTPServer`` in a
daemon thread, and server-sent events for a live run.

Routes: ``/`` the page; ``/run.json`` the view document (without the per-step details);
``/step/<id>`` one step's details; ``/events?after=N`` the run's events from message N on, as
server-sent events (several per message when they come fast); ``/run.html`` the
self-contained page of what is known now. Every body goes through
:func:`~orchestrator.view.scrub.redact_json`. Requests whose ``Host`` is not this loopback
address are refused (a page elsewhere cannot read a run through DNS rebinding).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.view.document import ViewDocument
from orchestrator.view.page import render_page
from orchestrator.view.scrub import redact_json
from tinyfleet_core.errors import ConfigError

__all__ = ["ViewState", "ViewServer"]

KEEPALIVE_S = 10.0
MAX_MESSAGES_PER_WRITE = 2000


class ViewState:
    """What a view server shows: the current view document and, for a live run, the list of
    messages (events, and "the document changed") that pages follow. Thread-safe: the run's
    event loop writes, the server's threads read."""

    def __init__(self, document: ViewDocument | None = None) -> None:
        self._cond = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._doc: dict[str, Any] | None = document[0] if document is not None else None
        self._details: Mapping[str, dict[str, Any]] = document[1] if document is not None else {}
        self._doc_seq = 0
        self.closed = False

    def set_document(self, document: ViewDocument, *, seq: int | None = None) -> None:
        """Show ``document``; pages reload it. A page that loads it replays the messages
        after ``seq`` (default: none, the document already holds them)."""
        with self._cond:
            self._doc, self._details = document
            self._messages.append({"seq": len(self._messages) + 1, "type": "doc"})
            self._doc_seq = len(self._messages) if seq is None else seq
            self._cond.notify_all()

    def add(self, message: dict[str, Any]) -> int:
        """Append a message for the pages; return its number."""
        with self._cond:
            n = len(self._messages) + 1
            self._messages.append({"seq": n, **message})
            self._cond.notify_all()
            return n

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._messages)

    def snapshot(self) -> dict[str, Any] | None:
        with self._cond:
            if self._doc is None:
                return None
            return {**self._doc, "seq": self._doc_seq, "live": True}

    def detail(self, step_id: str) -> dict[str, Any] | None:
        with self._cond:
            return self._details.get(step_id)

    def document(self) -> ViewDocument | None:
        with self._cond:
            return None if self._doc is None else (self._doc, self._details)

    def wait_after(self, seq: int, timeout: float) -> list[dict[str, Any]]:
        """Messages after number ``seq``, waiting up to ``timeout`` seconds for one."""
        with self._cond:
            if len(self._messages) <= seq and not self.closed:
                self._cond.wait(timeout)
            return self._messages[seq : seq + MAX_MESSAGES_PER_WRITE]

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no request log on stderr
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, redact_json(json.dumps(value, default=str)).encode(), "application/json")

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1", self.server.host):
            self._send(HTTPStatus.FORBIDDEN, b"this viewer answers on its loopback address only\n", "text/plain")
            return
        url = urlsplit(self.path)
        state = self.server.state
        try:
            if url.path in ("/", "/index.html"):
                self._send(200, render_page(None, title="(live)").encode(), "text/html; charset=utf-8")
            elif url.path == "/run.json":
                snap = state.snapshot()
                self._json(snap if snap is not None else {"waiting": "no run has started on this fleet yet"})
            elif url.path.startswith("/step/"):
                d = state.detail(unquote(url.path[len("/step/") :]))
                self._json(d if d is not None else {"error": "no such step"}, 200 if d is not None else 404)
            elif url.path == "/run.html":
                document = state.document()
                if document is None:
                    self._send(503, b"no run yet\n", "text/plain")
                else:
                    self._send(200, render_page(document).encode(), "text/html; charset=utf-8")
            elif url.path == "/events":
                self._events(int((parse_qs(url.query).get("after") or ["0"])[0] or 0))
            else:
                self._send(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            return  # the page went away

    def _events(self, after: int) -> None:
        last = self.headers.get("Last-Event-ID")
        if last and last.isdigit():
            after = max(after, int(last))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        state = self.server.state
        while not state.closed and not self.server.stopping:
            msgs = state.wait_after(after, KEEPALIVE_S)
            if msgs:
                after = msgs[-1]["seq"]
                chunk = f"id: {after}\ndata: {redact_json(json.dumps(msgs, default=str))}\n\n"
            else:
                chunk = ": keep-alive\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        self.wfile.write(b"event: end\ndata: []\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: ViewState) -> None:
        self.state = state
        self.host = addr[0]
        self.stopping = False
        super().__init__(addr, _Handler)


class ViewServer:
    """Serves a :class:`ViewState` on ``host:port`` (port 0: a free one) in a daemon thread."""

    def __init__(self, state: ViewState, port: int = 0, host: str = "127.0.0.1") -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"view port must be 0-65535, got {port}")
        try:
            self._server = _Server((host, port), state)
        except OSError as e:
            raise ConfigError(f"cannot serve the run viewer on {host}:{port} ({e.strerror or e}); pick another port with --port") from None
        self.state = state
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"tinyfleet-view:{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        """Stop serving (open event streams end)."""
        self._server.stopping = True
        self.state.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

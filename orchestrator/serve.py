"""A long-lived local fleet: ``tinyfleet serve`` starts Ray and keeps it, with every pool a run
has started, warm between commands; ``tinyfleet run`` sends its task there when one is
running, so a repeated command pays neither Ray's start nor a pool's, nor even torch's import
(the client imports no model code: it sends the task and renders the report).

Transport: one Unix-domain socket per user, in a directory only that user can enter
(``$XDG_RUNTIME_DIR/tinyfleet/`` or ``/tmp/tinyfleet-<uid>/``, mode 0700, owned by the user;
a directory that is not private is refused), and the server also checks each peer's uid
(``SO_PEERCRED``): another local user can neither submit tasks nor read reports. No TCP port
is opened. ``TINYFLEET_SERVE_SOCKET`` names another socket.

Protocol: the client sends one JSON line, a :class:`ServeRequest`; the server answers with JSON
lines: ``{"event": Event}`` while the run goes, then ``{"report": RunReport}`` or
``{"error": {"type", "message"}}`` (a typed tinyfleet error, which the client raises again, so
the command line prints the same one line and exit status as a local run). A client that goes
away (Ctrl-C) cancels its run; its journal keeps every finished step, as for a local run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyfleet_core import errors as _errors
from tinyfleet_core.errors import ConfigError, InputError, TinyfleetError
from tinyfleet_core.models import Event, RunReport, Task

__all__ = [
    "SOCKET_ENV",
    "ServeRequest",
    "ServerInfo",
    "FleetServer",
    "default_socket",
    "find_server",
    "run_on_server",
    "stop_server",
]

SOCKET_ENV = "TINYFLEET_SERVE_SOCKET"
MAX_LINE = 64 * 1024 * 1024  # one request or reply line (a task with large inputs fits)
_CONNECT_TIMEOUT_S = 2.0


def default_socket() -> Path:
    """``$TINYFLEET_SERVE_SOCKET``, else ``fleet.sock`` in this user's private directory."""
    named = os.environ.get(SOCKET_ENV)
    if named:
        return Path(named)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "tinyfleet" if runtime else Path("/tmp") / f"tinyfleet-{os.getuid()}"
    return base / "fleet.sock"


def _private_dir(path: Path, *, create: bool) -> None:
    """The socket's directory exists (created 0700 when ``create``), is owned by this user and
    is closed to everyone else; else ConfigError saying what to do."""
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is not a directory; remove it or set {SOCKET_ENV} to a socket in a private directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{path} is not private to this user (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); "
            f"a served fleet needs a directory only you can enter: chmod 700 it, or set {SOCKET_ENV}"
        )


class ServeRequest(BaseModel):
    """What a client asks a served fleet."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["run", "ping", "stop"] = Field(description="run a task, say who you are, or stop serving")
    task: Task | None = Field(default=None, description="the task to run (op run, unless resume is given)")
    resume: str | None = Field(default=None, description="an absolute journal path to continue")
    journal: str | None = Field(default=None, description="an absolute journal path to write")
    policy: Literal["ladder", "tiny_only", "final_only"] | None = Field(default=None, description="the run's policy")
    particles: int | None = Field(default=None, ge=1, description="particles per step (rule planner)")
    planner: str = Field(default="rules", description="the planner the client asks for; must be the server's")


class ServerInfo(BaseModel):
    """A served fleet's answer to ``ping``."""

    pid: int
    planner: str
    executor: str
    started_at: float
    runs: int = 0
    socket: str = ""


@dataclass
class FleetServer:
    """Serves runs on one executor, shared by every request (its pools stay warm), with a
    fresh :class:`~orchestrator.fleet.Fleet` per request for the request's planner and policy."""

    executor: Any  # orchestrator.executor.Executor
    planner: str = "rules"
    path: Path = field(default_factory=default_socket)
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    runs: int = 0
    started_at: float = field(default_factory=time.time)
    _server: asyncio.AbstractServer | None = None
    _stopped: asyncio.Event | None = None
    _registry: Any = None

    async def start(self) -> None:
        """Start Ray (or whatever the executor needs), then listen. A live server on the same
        socket is a ConfigError; a stale socket file (its server died) is replaced."""
        _private_dir(self.path.parent, create=True)
        if self.path.exists() or self.path.is_symlink():
            live = find_server(self.path)
            if live is not None:
                raise ConfigError(f"a fleet is already served at {self.path} (pid {live.pid}); stop it with: tinyfleet serve --stop")
            self.path.unlink()
        from workers.builtin import default_registry

        self._registry = default_registry()
        await self.executor.start()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o600)

    async def serve_until_stopped(self) -> None:
        assert self._stopped is not None, "call start() first"
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        await self.executor.close()

    def info(self) -> ServerInfo:
        return ServerInfo(pid=os.getpid(), planner=self.planner, executor=self.executor.name, started_at=self.started_at,
                          runs=self.runs, socket=str(self.path))

    # ------------------------------------------------------------------ one connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(obj: dict[str, Any]) -> None:
            writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and _peer_uid(sock) not in (os.getuid(), None):
                send({"error": {"type": "ConfigError", "message": "this fleet serves only the user who started it"}})
                return
            try:
                line = await reader.readline()
                request = ServeRequest.model_validate_json(line)
            except (ValueError, ValidationError, asyncio.LimitOverrunError) as e:
                send({"error": {"type": "InputError", "message": f"bad request to the served fleet: {_short(e)}"}})
                return
            if request.op == "ping":
                send({"info": self.info().model_dump()})
            elif request.op == "stop":
                send({"info": self.info().model_dump()})
                assert self._stopped is not None
                self._stopped.set()
            else:
                await self._serve_run(request, reader, send, writer)
            await writer.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # the client went away; its run (if any) was cancelled
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_run(
        self, request: ServeRequest, reader: asyncio.StreamReader, send: Callable[[dict[str, Any]], None],
        writer: asyncio.StreamWriter,
    ) -> None:
        if request.planner != self.planner:
            send({"error": {"type": "ConfigError", "message": f"this fleet serves the {self.planner!r} planner, not {request.planner!r}"}})
            return
        try:
            fleet = self._fleet_for(request)
        except TinyfleetError as e:
            send({"error": {"type": type(e).__name__, "message": str(e)}})
            return
        self.runs += 1
        t0 = time.monotonic()
        run = asyncio.ensure_future(fleet.run(
            task=request.task, journal=request.journal, resume=request.resume,
            on_event=lambda ev: send({"event": ev.model_dump(mode="json")}),
        ))
        gone = asyncio.ensure_future(reader.read(1))  # b"" when the client hangs up
        await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():  # the client went away (Ctrl-C): stop its run; the journal keeps what finished
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
            self.log(f"tinyfleet serve: run {self.runs} cancelled: its client went away")
            return
        gone.cancel()
        try:
            report = run.result()
        except TinyfleetError as e:
            send({"error": {"type": type(e).__name__, "message": str(e)}})
            self.log(f"tinyfleet serve: run {self.runs} refused: {type(e).__name__}: {e}")
            return
        send({"report": json.loads(report.model_dump_json())})
        self.log(f"tinyfleet serve: run {self.runs} ({report.task_id}) {report.status}: "
                 f"{len(report.steps)} step(s) in {time.monotonic() - t0:.2f} s")
        await writer.drain()

    def _fleet_for(self, request: ServeRequest) -> Any:
        from orchestrator.escalation import Policy
        from orchestrator.fleet import Fleet, _planner_named
        from planners.rules import RulePlanner
        from tinyfleet_core.models import Strategy

        planner = _planner_named(self.planner)
        if request.particles is not None:
            if not isinstance(planner, RulePlanner):
                raise InputError("particles apply to the rule planner's plans; an LLM planner sets strategies itself")
            planner.strategy = Strategy(particles=request.particles, select="vote")
        return Fleet(
            planner=planner,
            registry=self._registry,
            executor=self.executor,
            policy=Policy(mode=request.policy) if request.policy else None,
        )


def _peer_uid(sock: socket.socket) -> int | None:
    """The connecting process's uid (Linux ``SO_PEERCRED``); None where the platform has none."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    return int(uid)


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:300]


# ---------------------------------------------------------------------- the client side


def _connect(path: Path) -> socket.socket | None:
    """A connection to the served fleet at ``path``, or None when none answers there (no
    socket, a stale one, a directory that is not private: never someone else's server)."""
    try:
        _private_dir(path.parent, create=False)
    except (OSError, ConfigError):
        return None
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(_CONNECT_TIMEOUT_S)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None
    s.settimeout(None)
    return s


def _request(path: Path, request: ServeRequest, on_event: Callable[[Event], None] | None = None) -> dict[str, Any] | None:
    s = _connect(path)
    if s is None:
        return None
    with s, s.makefile("rb") as lines:
        s.sendall(request.model_dump_json(exclude_none=True).encode() + b"\n")
        for raw in lines:
            msg = json.loads(raw)
            if "event" in msg:
                if on_event is not None:
                    on_event(Event.model_validate(msg["event"]))
                continue
            return dict(msg)
    raise TinyfleetError(f"the fleet served at {path} closed the connection before answering (see its log)")


def find_server(path: Path | None = None) -> ServerInfo | None:
    """The fleet served at ``path`` (default :func:`default_socket`), or None."""
    path = path or default_socket()
    try:
        reply = _request(path, ServeRequest(op="ping"))
    except (OSError, ValueError, TinyfleetError):
        return None
    if reply is None or "info" not in reply:
        return None
    return ServerInfo.model_validate(reply["info"])


def stop_server(path: Path | None = None) -> ServerInfo | None:
    """Ask the fleet served at ``path`` to stop; its info, or None when none was serving."""
    path = path or default_socket()
    reply = _request(path, ServeRequest(op="stop"))
    return ServerInfo.model_validate(reply["info"]) if reply and "info" in reply else None


def run_on_server(path: Path, request: ServeRequest, on_event: Callable[[Event], None] | None = None) -> RunReport:
    """Run ``request`` on the fleet served at ``path``: its events go to ``on_event`` as they
    happen, its report comes back. A typed error on the server is raised here as the same type."""
    reply = _request(path, request, on_event)
    if reply is None:
        raise ConfigError(f"no fleet is served at {path}; start one with: tinyfleet serve")
    if "report" in reply:
        return RunReport.model_validate(reply["report"])
    err = reply.get("error") or {}
    cls = getattr(_errors, str(err.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, TinyfleetError)):
        cls = TinyfleetError
    raise cls(str(err.get("message", "the served fleet answered with an error")))

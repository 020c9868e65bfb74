"""The two roles of a sandboxed process, once it is sealed (step 6 of ``_child.py``).

The **candidate** loads the candidate's code, then only answers calls; nothing it says is a
verdict. The **judge** runs the tests, whose references to the candidate's functions are
proxies that cross the plain-data channel (``codec.py``), and reports each outcome to the
parent on the result pipe, which the candidate never holds.

Child side: imported by ``_child.py`` by file name (the top-level module ``_roles``) in the
sandboxed interpreter, so it imports only the standard library and its sibling ``codec``.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import sys
import types
from typing import Any

import codec

_EXCERPT = 800


# --- the candidate ------------------------------------------------------------------------


def _describe(e: BaseException, filename: str) -> tuple[str, str, int]:
    """(type name, message, innermost line in ``filename``) of an exception, each bounded."""
    try:
        msg = str(e)[:_EXCERPT]
    except BaseException:  # noqa: BLE001 - a hostile __str__; the message is only a courtesy
        msg = "<unprintable>"
    kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__name__} (not a builtin exception)"
    line = 0
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return str(kind)[:100], msg, line


def candidate(cfg: dict[str, Any]) -> None:
    """Load the code, then answer calls until the channel closes. Nothing said here is a
    verdict: the judge decodes every answer as plain data and decides by itself."""
    req, resp = cfg["fds"]["req"], cfg["fds"]["resp"]
    module = types.ModuleType("candidate")
    sys.modules["candidate"] = module
    ns = module.__dict__
    ns["__builtins__"] = builtins
    loaded: dict[str, Any] | None = None
    source = cfg.pop("code")
    lines = source.splitlines()
    try:
        exec(compile(source, "<candidate>", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - whatever the code raised is the load failure
        kind, msg, line = _describe(e, "<candidate>")
        loaded = {"load": "error", "error": [kind, msg, line, lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""]}
    while True:
        try:
            msg = codec.read_frame(req)
        except (EOFError, codec.ChannelError, OSError):
            return
        if not isinstance(msg, dict):
            return
        if msg.get("op") == "names":
            _reply(resp, loaded or _exports(ns, msg.get("refs", [])))
            continue
        if loaded is not None or msg.get("op") != "call":
            return
        _reply(resp, _answer(ns, msg, lines))


def _reply(fd: int, answer: dict[str, Any]) -> None:
    for stream in (sys.stdout, sys.stderr):  # the parent kills this process at the end: flush now
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        codec.write_frame(fd, answer)
    except codec.ChannelError as e:  # too big
        codec.write_frame(fd, {"refused": str(e)})


def _exports(ns: dict[str, Any], refs: list[str]) -> dict[str, Any]:
    names: dict[str, str] = {}
    data: dict[str, Any] = {}
    for name in refs:
        if type(name) is not str or name not in ns:
            continue
        value = ns[name]
        if callable(value):
            names[name] = "callable"
            continue
        try:
            data[name] = codec.encode(value)
            names[name] = "data"
        except codec.ChannelError:
            names[name] = f"opaque {type(value).__name__}"
    return {"load": "ok", "names": names, "data": data}


def _answer(ns: dict[str, Any], msg: dict[str, Any], lines: list[str]) -> dict[str, Any]:
    name = msg.get("name")
    fn = ns.get(name) if type(name) is str else None
    if not callable(fn):
        return {"raise": ["NameError", f"name {str(name)[:80]!r} is not defined by the candidate", 0, ""]}
    try:
        args, kwargs = codec.decode(msg.get("args")), codec.decode(msg.get("kwargs"))
        result = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - reported to the judge as the call's exception
        kind, text, line = _describe(e, "<candidate>")
        return {"raise": [kind, text, line, lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""]}
    try:
        return {"ok": codec.encode(result)}
    except codec.ChannelError as e:
        return {"refused": str(e)}
    except RecursionError:
        return {"refused": "the value is nested too deeply"}


# --- the judge ----------------------------------------------------------------------------


class ChannelFault(BaseException):
    """The candidate's side of the channel broke (it died, sent what is not plain data, or
    returned an object that cannot cross); the test fails whatever it catches."""


class Unexpressible(BaseException):
    """The test passed something into the candidate that is not plain data (a function, an
    object); such a test cannot run across the channel and fails with that reason."""


class CandidateError(Exception):
    """An exception the candidate raised that has no builtin counterpart here."""


_RAISABLE = {n: c for n, c in vars(builtins).items()
             if isinstance(c, type) and issubclass(c, Exception) and c not in (StopIteration, StopAsyncIteration)}


class _Link:
    """The judge's end of the channel to the candidate."""

    def __init__(self, req: int, resp: int) -> None:
        self.req, self.resp = req, resp
        self.dead = ""
        self.fault: tuple[str, str] | None = None  # (kind, message) of the current test

    def _fail(self, kind: str, message: str, exc: type[BaseException] = ChannelFault) -> BaseException:
        if self.fault is None:
            self.fault = (kind, message)
        return exc(message)

    def exchange(self, message: dict[str, Any]) -> Any:
        if self.dead:
            raise self._fail("died", self.dead)
        try:
            codec.write_frame(self.req, message)
            return codec.read_frame(self.resp)
        except (EOFError, BrokenPipeError):
            self.dead = "the candidate process ended"
            raise self._fail("died", self.dead) from None
        except codec.ChannelError as e:
            self.dead = f"the candidate sent what is not a plain-data answer ({e})"
            raise self._fail("channel", self.dead) from None

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            message = {"op": "call", "name": name, "args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        except codec.ChannelError as e:
            raise self._fail("unexpressible", f"the test passes what is not plain data into {name}(): {e}", Unexpressible) from None
        answer = self.exchange(message)
        if type(answer) is not dict or len(answer) != 1:
            raise self._fail("channel", f"{name}(): a malformed answer on the channel")
        (key, body), = answer.items()
        if key == "ok":
            try:
                return codec.decode(body)
            except (codec.ChannelError, RecursionError) as e:
                raise self._fail("channel", f"{name}() returned what is not plain data: {e}") from None
        if key == "refused" and type(body) is str:
            raise self._fail("channel", f"{name}() returned what the plain-data channel cannot carry: {body[:200]}")
        if key == "raise" and type(body) is list and len(body) == 4 and all(type(x) in (str, int) for x in body):
            kind, msg, line, text = str(body[0])[:100], str(body[1])[:_EXCERPT], body[2], str(body[3])[:120]
            where = f" [raised in {name}(), <candidate> line {line}: {text}]" if line else f" [raised in {name}()]"
            cls = _RAISABLE.get(kind)
            if cls is not None:
                try:
                    exc = cls(msg + where)
                except TypeError:
                    exc = CandidateError(f"{kind}: {msg}{where}")
            else:
                exc = CandidateError(f"{kind}: {msg}{where}")
            exc.from_candidate = True  # type: ignore[attr-defined]
            raise exc
        raise self._fail("channel", f"{name}(): a malformed answer on the channel")


def _proxy(link: _Link, name: str) -> types.FunctionType:
    def proxy(*args: Any, **kwargs: Any) -> Any:
        return link.call(name, args, kwargs)

    proxy.__name__ = proxy.__qualname__ = name
    return proxy  # type: ignore[return-value]


def _kind(e: BaseException, link: _Link) -> str:
    if link.fault is not None:
        return link.fault[0]
    if isinstance(e, MemoryError):
        return "memory"
    if isinstance(e, OSError) and (e.errno == errno.EFBIG or "[Errno 27]" in str(e)):
        return "output"
    if getattr(e, "from_candidate", False) and isinstance(e, OSError) and any(f"[Errno {n}]" in str(e) for n in (1, 13, 30)):
        return "forbidden"
    return "fail"


def _tests_namespace(refs: list[str], link: _Link, send: Any) -> dict[str, Any] | None:
    """Ask the candidate which of ``refs`` it defines and build the tests' namespace from the
    answer: a proxy per function, a decoded copy per plain-data value, builtins the judge's own.
    Reports the load either way; None when the candidate did not load."""
    try:
        names = link.exchange({"op": "names", "refs": refs})
    except ChannelFault:
        send(k="load", ok=False, kind=link.fault[0] if link.fault else "died",
             error=f"{link.dead} before it loaded")
        return None
    if type(names) is not dict or names.get("load") != "ok":
        err = names.get("error") if type(names) is dict else None
        kind = "fail"
        if type(err) is list and len(err) == 4 and all(type(x) in (str, int) for x in err):
            name, msg, line, src = str(err[0])[:100], str(err[1])[:_EXCERPT], err[2], str(err[3])[:120]
            text = f"{name} (line {line}): {msg} [<candidate> line {line}: {src}]" if line else f"{name}: {msg}"
            if name == "MemoryError":
                kind = "memory"
            elif name == "PermissionError" and any(f"[Errno {n}]" in msg for n in (1, 13, 30)):
                kind = "forbidden"
        else:
            text = "a malformed load report"
        send(k="load", ok=False, kind=kind, error=text)
        return None
    ns: dict[str, Any] = {"__name__": "tests", "__builtins__": builtins}
    kinds = names.get("names") if type(names.get("names")) is dict else {}
    data = names.get("data") if type(names.get("data")) is dict else {}
    for name in refs:
        kind = kinds.get(name)
        if kind == "callable":
            ns[name] = _proxy(link, name)
        elif kind == "data" and name in data:
            try:
                ns[name] = codec.decode(data[name])
            except codec.ChannelError:
                pass
    send(k="load", ok=True, exports=sorted(n for n in kinds if type(n) is str)[:100])
    return ns


def judge(cfg: dict[str, Any]) -> None:
    fds = cfg["fds"]
    out = fds["result"]
    link = _Link(fds["req"], fds["resp"])

    def send(**record: Any) -> None:
        os.write(out, (json.dumps(record) + "\n").encode())

    def outcome(index: int, e: BaseException) -> None:
        kind, msg, line = _describe(e, "<tests>")
        text = kind + (f" (line {line})" if line else "") + (f": {msg}" if msg else "")
        if link.fault is not None:
            text = f"{link.fault[1]} (the test saw: {text})" if link.fault[1] not in text else text
        send(k="test", i=index, ok=False, kind=_kind(e, link), error=text[:_EXCERPT])

    ns = _tests_namespace(cfg["refs"], link, send)
    if ns is None:
        return

    tests_names, toplevel = cfg["names"], cfg["toplevel"]
    index = 0
    link.fault = None
    try:
        tests_code = compile(cfg["tests"], "<tests>", "exec")
        exec(tests_code, ns)
        if toplevel:
            send(k="test", i=0, ok=link.fault is None, kind=link.fault[0] if link.fault else "ok",
                 error=link.fault[1] if link.fault else "")
            index = 1
    except AssertionError as e:
        if not toplevel:
            send(k="module_error", error="the tests module failed: " + _describe(e, "<tests>")[1])
            return
        outcome(0, e)
        index = 1
    except BaseException as e:  # noqa: BLE001 - the tests module failed; reported, not raised
        kind, msg, line = _describe(e, "<tests>")
        where = f" (line {line})" if line else ""
        fault = f" ({link.fault[1]})" if link.fault else ""
        send(k="module_error", error=f"the tests module failed: {kind}{where}: {msg}{fault}"[:_EXCERPT])
        return
    for name in tests_names:
        link.fault = None
        fn = ns.get(name)
        if not callable(fn):
            send(k="test", i=index, ok=False, kind="fail", error=f"not defined: {name}")
        else:
            try:
                fn()
                if link.fault is not None:  # the test caught the fault; it still fails
                    send(k="test", i=index, ok=False, kind=link.fault[0], error=link.fault[1])
                else:
                    send(k="test", i=index, ok=True, kind="ok", error="")
            except BaseException as e:  # noqa: BLE001 - a failing test, reported
                outcome(index, e)
        index += 1
    send(k="done", n=index)

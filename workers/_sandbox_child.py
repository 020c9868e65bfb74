"""The process side of the code sandbox (see ``workers/sandbox.py`` and the README, section
"Verifiers and the code sandbox").

Run as ``python -I -S -B _sandbox_child.py`` by :func:`workers.sandbox.run_tests`, twice per
verification: once as the **candidate** (loads the candidate's code, then only answers calls)
and once as the **judge** (runs the tests, which call the candidate's functions through the
plain-data channel of ``sandbox_codec.py``, and reports each outcome to the parent). The two
never share a process, a PID namespace or a filesystem; the candidate holds neither the
judge's result pipe nor any way to name the judge.

Order of events in each, all before any untrusted byte runs (any layer that fails ends the
process with exit status 71 and one line on stderr: the parent then refuses the run):

1. read the JSON config on stdin and close it;
2. ``unshare`` new mount, PID, network, IPC and UTS namespaces (plus a user namespace when not
   root); fork: the first process (the *relay*) tells the parent the PID of the second, waits
   for the parent's go, then waits for it and reports how it ended; the second is PID 1 of the
   new PID namespace and dies with the relay (``PR_SET_PDEATHSIG``);
3. a new root: a small tmpfs holding bind mounts of the interpreter's own files (the stdlib
   without site-packages, the shared libraries it links) and ``/work`` (a size-capped tmpfs,
   ``noexec,nosuid,nodev``); ``pivot_root`` into it, detach the old root, make every mount
   read-only except ``/work``. No ``/proc``, ``/dev``, ``/tmp``, ``/run`` or home directory;
4. drop every capability, set ``no_new_privs``, rlimits (CPU, address space, file size, open
   files, core dumps; processes inside a user namespace);
5. the seccomp allowlist of ``sandbox_seccomp.py``;
6. the role's work.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import resource
import signal
import sys
import types
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_codec as codec
import sandbox_seccomp

del sys.path[0]

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_SYS_PIVOT_ROOT, _SYS_MOUNT_SETATTR, _SYS_CAPSET = 155, 442, 126
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP = 1, 24
_SETUP_FAILED = 71
_EXCERPT = 800


class SetupError(OSError):
    """A layer of the sandbox could not be applied; the process ends with status 71."""


# --- isolation ----------------------------------------------------------------------------


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


def _check(ctypes, rc: int, what: str) -> None:  # type: ignore[no-untyped-def]
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(err, f"{what}: {os.strerror(err)}")


def _unshare() -> None:
    ctypes, libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
    if uid != 0:
        flags |= _CLONE_NEWUSER
    _check(ctypes, libc.unshare(flags), "unshare(mount, pid, net, ipc, uts" + (", user)" if uid else ")"))
    if uid != 0:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    _check(ctypes, libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make mounts private")


def _mount_setattr(ctypes, libc, path: bytes, flags: int, attr_set: int, attr_clr: int) -> None:  # type: ignore[no-untyped-def]
    class MountAttr(ctypes.Structure):  # type: ignore[name-defined,misc]
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    rc = libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path, flags, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(ctypes, int(rc), f"mount_setattr({path.decode()})")


def _new_root(root: str, plan: list[list[str]], disk_bytes: int) -> None:
    """Build the new root on a tmpfs at ``root``, pivot into it and seal it."""
    ctypes, libc = _libc()
    r = os.fsencode(root)
    _check(ctypes, libc.mount(b"tmpfs", r, b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,nr_inodes=4096,mode=0755"), "mount the new root")
    for op in plan:
        kind, path = op[0], op[1]
        inside = root + path
        if kind == "dir":
            os.makedirs(inside, mode=0o755, exist_ok=True)
        elif kind == "link":
            os.symlink(op[2], inside)
        elif kind == "file":
            os.close(os.open(inside, os.O_CREAT | os.O_WRONLY, 0o644))
            _check(ctypes, libc.mount(os.fsencode(path), os.fsencode(inside), None, _MS_BIND, None), f"bind {path}")
        elif kind == "tree":
            os.makedirs(inside, mode=0o755, exist_ok=True)
            _check(ctypes, libc.mount(os.fsencode(path), os.fsencode(inside), None, _MS_BIND | _MS_REC, None), f"bind {path}")
        elif kind == "hide":
            _check(ctypes, libc.mount(b"tmpfs", os.fsencode(inside), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                                      b"size=4k,nr_inodes=2,mode=0555"), f"hide {path}")
    os.mkdir(root + "/work", 0o700)
    opts = f"size={disk_bytes},nr_inodes=4096,mode=0700".encode()
    _check(ctypes, libc.mount(b"tmpfs", r + b"/work", b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts), "mount /work")
    os.chdir(root)
    _check(ctypes, int(libc.syscall(_SYS_PIVOT_ROOT, b".", b".")), "pivot_root")
    _check(ctypes, libc.umount2(b".", _MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount_setattr(ctypes, libc, b"/", _AT_RECURSIVE, _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0)
    _mount_setattr(ctypes, libc, b"/work", 0, 0, _MOUNT_ATTR_RDONLY)
    os.chdir("/work")


def _drop_capabilities() -> None:
    ctypes, libc = _libc()
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words: all zero
    _check(ctypes, int(libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data))), "drop capabilities")


def _set_limits(limits: dict[str, int], in_userns: bool) -> None:
    cpu = limits["cpu_s"]
    # PID 1 of a namespace ignores SIGXCPU, so the hard limit (SIGKILL) is the one that bites.
    caps = {
        resource.RLIMIT_CPU: (cpu, cpu),
        resource.RLIMIT_AS: (limits["memory_bytes"],) * 2,
        resource.RLIMIT_FSIZE: (limits["file_bytes"],) * 2,
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if in_userns:  # the kernel exempts uid 0 of the host from RLIMIT_NPROC
        caps[resource.RLIMIT_NPROC] = (limits["processes"],) * 2
    for which, pair in caps.items():
        resource.setrlimit(which, pair)


def _relay(pid: int, status_fd: int, ctl_fd: int) -> None:
    """The first process: name PID 1 to the parent, wait for its go (it now holds a pidfd, so
    the PID cannot be reused under it), then reap PID 1 and report how it ended."""
    os.write(status_fd, f"P {pid}\n".encode())
    go = os.read(ctl_fd, 1)
    if go != b"1":  # the parent is gone or refused: end the namespace now
        os.kill(pid, signal.SIGKILL)
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        os.write(status_fd, f"X signal {os.WTERMSIG(status)} {cpu:.3f}\n".encode())
    else:
        os.write(status_fd, f"X exit {os.WEXITSTATUS(status)} {cpu:.3f}\n".encode())
    os._exit(0)


def _isolate(cfg: dict[str, Any]) -> None:
    """Every layer, in order; SetupError when one cannot be applied."""
    ctypes, libc = _libc()
    fds = cfg["fds"]
    _check(ctypes, libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    _unshare()
    pid = os.fork()
    if pid != 0:
        for name, fd in fds.items():
            if name not in ("status", "ctl"):
                os.close(fd)
        _relay(pid, fds["status"], fds["ctl"])
    _check(ctypes, libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    os.close(fds.pop("status"))
    os.close(fds.pop("ctl"))
    _new_root(cfg["root"], cfg["plan"], cfg["limits"]["disk_bytes"])
    _drop_capabilities()
    _set_limits(cfg["limits"], in_userns=os.geteuid() != 0 or cfg.get("userns", False))
    if cfg["seccomp"]:
        sandbox_seccomp.install()


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


def _candidate(cfg: dict[str, Any]) -> None:
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


def _judge(cfg: dict[str, Any]) -> None:
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

    try:
        names = link.exchange({"op": "names", "refs": cfg["refs"]})
    except ChannelFault:
        send(k="load", ok=False, kind=link.fault[0] if link.fault else "died",
             error=f"{link.dead} before it loaded")
        return
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
        return
    ns: dict[str, Any] = {"__name__": "tests", "__builtins__": builtins}
    kinds = names.get("names") if type(names.get("names")) is dict else {}
    data = names.get("data") if type(names.get("data")) is dict else {}
    for name in cfg["refs"]:
        kind = kinds.get(name)
        if kind == "callable":
            ns[name] = _proxy(link, name)
        elif kind == "data" and name in data:
            try:
                ns[name] = codec.decode(data[name])
            except codec.ChannelError:
                pass
    send(k="load", ok=True, exports=sorted(n for n in kinds if type(n) is str)[:100])

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


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        _isolate(cfg)
    except (OSError, ValueError) as e:
        os.write(2, f"sandbox setup failed: {e}\n".encode())
        os._exit(_SETUP_FAILED)
    if cfg["role"] == "candidate":
        _candidate(cfg)
    else:
        _judge(cfg)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the code closed or broke its own stdout; nothing to keep
    os._exit(0)


if __name__ == "__main__":
    _write, _exit = os.write, os._exit
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - the process boundary: report, then exit non-zero
        _write(2, f"sandbox harness failed: {type(e).__name__}: {str(e)[:200]}\n".encode())
        _exit(70)

"""The process side of the code sandbox (see ``workers/sandbox.py`` and the README, section "Verifiers and the code sandbox").

Run as ``python -I -S -B _sandbox_child.py`` by :func:`workers.sandbox.run_tests` with a JSON
config on stdin; stdlib only, because ``-S`` keeps site-packages off ``sys.path``.

Order of events, all before any untrusted byte runs:

1. read the config (code, tests, the expected test names, an HMAC key, limits) and close stdin;
2. isolate: new network, mount and PID namespaces (root, or an unprivileged user namespace);
   the process forks once so that the candidate runs as PID 1 of its own PID namespace, with a
   fresh ``/proc``, every mount read-only except the work directory, no capabilities and
   ``no_new_privs``. The first process only waits and reports how the second one ended;
3. rlimits (CPU, address space, file size, processes, open files, core dumps);
4. the audit hook, which from then on denies sockets, subprocesses, forks, exec, signals to
   other processes, ctypes, frame and gc introspection, writes and deletions outside the work
   directory and reads outside the interpreter's own files, and reports each denial;
5. a worker thread loads the candidate, runs the tests module, then each ``test_*`` function,
   and writes one authenticated line per result to the result pipe.

Every line on the result pipe carries an HMAC-SHA256 tag made with a per-run key that only this
process received. The key and the sending function live only in the worker thread's bottom frame
and in the audit hook's closure; the untrusted code cannot reach frames (``sys._getframe``,
``tb_frame``, ``gi_frame``, ``sys._current_frames``, tracing and ``gc`` are all denied) and
cannot install signal handlers (it runs outside the main thread).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import resource
import sys
import threading
import types
from typing import Any

try:
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # an interpreter built without OpenSSL
    import hmac as _hmac

    def _hmac_digest(key: bytes, msg: bytes, digest: str) -> bytes:  # type: ignore[misc]
        return _hmac.digest(key, msg, digest)


# Namespace and mount constants (linux/sched.h, linux/mount.h); x86_64 and aarch64 share these.
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 24, 38
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}

_EXCERPT_BYTES = 800

# --- the authenticated channel ------------------------------------------------------------


def _make_sender(key: bytes, fd: int) -> types.FunctionType:
    """A function that writes one ``payload tag`` line; the key stays in its closure."""
    write, digest, encode = os.write, _hmac_digest, str.encode

    def send(payload: str) -> None:
        data = encode(payload, "ascii")
        tag = digest(key, data, "sha256")[:16].hex()
        try:
            write(fd, data + b" " + encode(tag, "ascii") + b"\n")
        except OSError:
            pass  # the code closed or replaced the pipe: the parent then misses lines and fails

    return send  # type: ignore[return-value]


def _hex(text: str) -> str:
    return str.encode(text, "utf-8", "replace")[:_EXCERPT_BYTES].hex()


def _make_hex():  # type: ignore[no-untyped-def]
    """``_hex`` as a closure over captured values, for use after the code ran: patching this
    module's globals cannot change it."""
    encode, limit, bytes_hex = str.encode, _EXCERPT_BYTES, bytes.hex

    def hexed(text: str) -> str:
        return bytes_hex(encode(text, "utf-8", "replace")[:limit])

    return hexed


# --- isolation ----------------------------------------------------------------------------


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


def _check(ctypes, rc: int, what: str) -> None:  # type: ignore[no-untyped-def]
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write_id_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _unshare(report: dict[str, str]) -> bool:
    """New net, mount and PID namespaces; True when they exist (the caller then forks)."""
    ctypes, libc = _libc()
    flags = _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWPID
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= _CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        report["namespaces"] = f"unavailable ({os.strerror(err)})"
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET if uid != 0 else _CLONE_NEWNET) == 0:
            report["network"] = "cut (network namespace)"
        return False
    if uid != 0:
        _write_id_maps(uid, gid)
    _check(ctypes, libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make mounts private")
    report["namespaces"] = "net+mount+pid" + ("+user" if uid != 0 else "")
    report["network"] = "cut (network namespace: loopback down, no interfaces)"
    return True


def _seal_filesystem(work: str, disk_bytes: int, report: dict[str, str]) -> None:
    """In the new mount namespace: fresh /proc, a size-capped tmpfs on ``work``, every other
    mount read-only. The host's copy of ``work`` stays empty."""
    ctypes, libc = _libc()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    _check(ctypes, libc.mount(b"proc", b"/proc", b"proc", flags, None), "mount a fresh /proc")
    w = os.fsencode(work)
    opts = f"size={disk_bytes},nr_inodes=4096,mode=0700".encode()
    _check(ctypes, libc.mount(b"tmpfs", w, b"tmpfs", _MS_NOSUID | _MS_NODEV, opts), "mount a tmpfs on the work directory")

    class MountAttr(ctypes.Structure):  # type: ignore[name-defined,misc]
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    ro = MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, 0, 0)
    rc = libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(ro), ctypes.sizeof(ro))
    _check(ctypes, int(rc), "make every mount read-only")
    rw = MountAttr(0, _MOUNT_ATTR_RDONLY, 0, 0)
    rc = libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, w, 0, ctypes.byref(rw), ctypes.sizeof(rw))
    _check(ctypes, int(rc), "make the work directory writable")
    report["filesystem"] = f"read-only except the work directory (a {disk_bytes >> 20} MiB tmpfs); fresh /proc"


def _drop_capabilities(report: dict[str, str]) -> None:
    ctypes, libc = _libc()
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all zero
    nr = _SYS_CAPSET.get(os.uname().machine)
    if nr is None:
        report["capabilities"] = "kept (unknown architecture for capset)"
    else:
        _check(ctypes, int(libc.syscall(nr, ctypes.byref(header), ctypes.byref(data))), "drop capabilities")
        report["capabilities"] = "none"
    _check(ctypes, libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def _forget_ctypes() -> None:
    """Drop ctypes from sys.modules so the code cannot reuse it (re-importing it is denied)."""
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _relay_child(pid: int, send: types.FunctionType) -> None:
    """The first process: wait for the sandboxed PID 1 and report how it ended, then exit."""
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        send(f"X signal {os.WTERMSIG(status)} {cpu:.3f}")
    else:
        send(f"X exit {os.WEXITSTATUS(status)} {cpu:.3f}")
    os._exit(0)


def _set_limits(limits: dict[str, int], pid1: bool, count_processes: bool) -> None:
    cpu = limits["cpu_s"]
    # PID 1 of a namespace ignores SIGXCPU, so the hard limit (SIGKILL) is the one that bites.
    caps = {
        resource.RLIMIT_CPU: (cpu, cpu if pid1 else cpu + 1),
        resource.RLIMIT_AS: (limits["memory_bytes"],) * 2,
        resource.RLIMIT_FSIZE: (limits["file_bytes"],) * 2,
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if count_processes:
        # The kernel counts processes per user (per user namespace since Linux 5.14) and exempts
        # uid 0: so this bites in a fresh user namespace, is a no-op for root, and is skipped for
        # an unprivileged user without namespaces (it would count all of that user's processes).
        caps[resource.RLIMIT_NPROC] = (limits["processes"],) * 2
    for which, (soft, hard) in caps.items():
        resource.setrlimit(which, (soft, hard))


def _isolate(cfg: dict, send: types.FunctionType) -> dict[str, str]:  # type: ignore[type-arg]
    """Apply every layer the host allows; returns what was applied, for the report."""
    report: dict[str, str] = {"network": "audit hook only", "filesystem": "audit hook only"}
    pid1 = False
    if _unshare(report):
        pid = os.fork()
        if pid != 0:
            _relay_child(pid, send)
        pid1 = True
        try:
            _seal_filesystem(cfg["work"], cfg["limits"]["disk_bytes"], report)
        except OSError as e:
            report["filesystem"] = f"audit hook only ({e.strerror})"
        try:
            _drop_capabilities(report)
        except OSError as e:
            report["capabilities"] = f"kept ({e.strerror})"
    _forget_ctypes()
    os.chdir(cfg["work"])
    in_userns = "+user" in report.get("namespaces", "")
    _set_limits(cfg["limits"], pid1, count_processes=in_userns or os.geteuid() == 0)
    report["pid"] = "1 in its own PID namespace" if pid1 else "host PID namespace"
    return report


# --- the audit hook -----------------------------------------------------------------------

_DENY_PREFIXES = (
    "socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
    "os.forkpty", "os.system", "os.kill", "os.killpg", "signal.pthread_kill", "pty.", "gc.get_",
    "sys._current_frames", "sys.settrace", "sys.setprofile", "resource.setrlimit", "resource.prlimit",
    "cpython.", "_xxsubinterpreters", "webbrowser.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
    "nntplib.", "http.client.", "urllib.", "telnetlib.", "syslog.", "os.setuid", "os.setgid",
    "os.startfile", "winreg.", "os.symlink",
)
_PATH_EVENTS = frozenset({
    "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.link", "os.truncate", "os.chmod",
    "os.chown", "os.utime", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags",
    "os.lchmod", "os.mknod", "os.mkfifo", "shutil.rmtree", "shutil.copyfile", "shutil.copymode",
    "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.make_archive",
    "shutil.unpack_archive", "sqlite3.connect", "dbm.open", "tempfile.mkstemp", "tempfile.mkdtemp",
})
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_DENIED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxinterpchannels",
    "_testcapi", "_testinternalcapi", "_testmultiphase", "_testbuffer", "_testimportmultiple",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class _Denied(PermissionError):
    """What the audit hook raises; a PermissionError so ordinary code sees a familiar error."""


def _readable_roots(work: str) -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, work}
    roots |= {"/usr/lib", "/usr/lib64", "/usr/share/zoneinfo", "/etc/localtime", "/dev/null", "/dev/urandom"}
    return tuple(sorted(os.path.realpath(r) for r in roots))


def _normpath(path: str) -> str:
    """``os.path.normpath`` for absolute paths, from str methods only (nothing patchable)."""
    out: list[str] = []
    for part in str.split(path, "/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def _make_hook(work: str, send: types.FunctionType, trusted: list[int]):  # type: ignore[no-untyped-def]
    """The audit hook: deny (and report) what sandboxed code must not do.

    Paths are resolved with string operations against the real working directory; no symlink
    can be created, and the work directory starts empty, so no link inside it leads out.
    Every function the hook calls is captured now, so patching ``os`` later changes nothing.
    """
    fspath, fsdecode, getcwd, getpid, stat, isdir = os.fspath, os.fsdecode, os.getcwd, os.getpid, os.stat, __import__("stat").S_ISDIR
    get_ident, startswith, isinstance_, str_, bytes_, int_ = threading.get_ident, str.startswith, isinstance, str, bytes, int
    normpath, hexed, any_, describe_args = _normpath, _make_hex(), any, _describe
    type_, FunctionType = type, types.FunctionType
    path_events, frame_attrs, deny_prefixes, denied_imports = _PATH_EVENTS, _FRAME_ATTRS, _DENY_PREFIXES, _DENIED_IMPORTS
    Denied, EPERM, write_flags = _Denied, errno.EPERM, _WRITE_FLAGS
    roots = _readable_roots(work)
    work = _normpath(work)
    work_prefix = work + "/"
    reported = [0]

    def in_work(path: str) -> bool:
        return path == work or startswith(path, work_prefix)

    def readable(path: str) -> bool:
        return any_(path == r or startswith(path, r + "/") for r in roots)

    def resolve(arg: object) -> str | None:
        if isinstance_(arg, int_):
            return None  # an already-open descriptor
        try:
            p = fsdecode(fspath(arg))  # type: ignore[call-overload]
        except TypeError:
            return None
        return normpath(p if startswith(p, "/") else getcwd() + "/" + p)

    def proc_forbidden(path: str) -> bool:
        parts = str.split(path, "/")
        if len(parts) < 3 or parts[1] != "proc":
            return False
        own = parts[2] in ("self", "thread-self", str_(getpid()))
        sensitive = len(parts) > 3 and parts[3] in ("environ", "mem", "fd", "map_files", "root", "cwd", "exe")
        return sensitive or (str.isdigit(parts[2]) and not own)

    def deny(what: str) -> None:
        if reported[0] < 20:  # enough to say why; a loop of denials must not flood the channel
            reported[0] += 1
            send(f"V {hexed(what)}")
        raise Denied(EPERM, f"sandbox: {what} is not allowed")

    def check_open(args: tuple) -> None:  # type: ignore[type-arg]
        path = resolve(args[0])
        if path is None:
            return
        mode, flags = args[1], args[2]
        writes = (isinstance_(mode, str_) and any_(c in mode for c in "wax+")) or (
            isinstance_(flags, int_) and flags != -1 and bool(flags & write_flags)
        )
        if writes:
            if not in_work(path):
                deny(f"writing {path} (outside the work directory)")
            return
        if proc_forbidden(path):
            deny(f"reading {path}")
        if not readable(path) and not startswith(path, "/proc/"):
            deny(f"reading {path} (outside the interpreter and the work directory)")
        if not in_work(path):
            try:
                if isdir(stat(path).st_mode):
                    deny(f"opening the directory {path} (outside the work directory)")
            except OSError:
                pass

    def check_paths(event: str, args: tuple) -> None:  # type: ignore[type-arg]
        two = event in ("os.rename", "os.link", "shutil.copyfile", "shutil.copytree", "shutil.move")
        for a in args[:2] if two else args[:1]:
            path = resolve(a)
            if path is not None and not in_work(path):
                deny(f"{event} on {path} (outside the work directory)")

    def hook(event: str, args: tuple) -> None:  # type: ignore[type-arg]
        # No re-entrancy guard: an object's __fspath__ runs inside this hook, and whatever it
        # does raises its own events, which must be checked like any other.
        if event == "open":
            check_open(args)
        elif event in path_events:
            check_paths(event, args)
        elif event == "sys._getframe":
            # a soft denial: namedtuple, typing and enum fall back gracefully on ValueError
            raise ValueError("sandbox: frame introspection is not available")
        elif event == "object.__getattr__":
            if args[1] in frame_attrs and trusted[0] != get_ident():
                raise AttributeError(f"sandbox: {args[1]} is not available")
        elif event in ("object.__setattr__", "object.__delattr__"):
            if type_(args[0]) is FunctionType and args[1] == "__code__":  # swapping a function's code
                deny(f"{event}('__code__') on a function")
        elif event == "import":
            if args[0] in denied_imports:
                deny(f"import {args[0]}")
        elif event == "sys.addaudithook":
            raise RuntimeError("sandbox: adding audit hooks is not allowed")
        elif startswith(event, deny_prefixes):
            deny(f"{event}{describe_args(args)}")

    return hook


def _describe(args: tuple) -> str:  # type: ignore[type-arg]
    shown = [a for a in args[:2] if isinstance(a, (int, str, bytes))]
    return "(" + ", ".join(repr(a)[:80] for a in shown) + ")" if shown else ""


# --- running the candidate and its tests --------------------------------------------------


def _run(ctx: dict) -> None:  # type: ignore[type-arg]
    """The worker thread's body. Every name it uses once the code has run is a local, bound
    before the code ran: patching builtins, ``os`` or this module changes nothing here."""
    send, trusted = ctx.pop("send"), ctx.pop("trusted")
    code_src, tests_src, names, toplevel = ctx.pop("code"), ctx.pop("tests"), ctx.pop("names"), ctx.pop("toplevel")
    BaseException_, AssertionError_, MemoryError_, OSError_ = BaseException, AssertionError, MemoryError, OSError
    type_, str_, len_, range_, list_, isinstance_, any_ = type, str, len, range, list, isinstance, any
    get_ident, FunctionType, TracebackType, CodeType = threading.get_ident, types.FunctionType, types.TracebackType, types.CodeType
    hexed, set_ = _make_hex(), set

    def test_codes(tests_code: types.CodeType, wanted: list[str]) -> dict[str, types.CodeType]:
        """The code object of each expected test function, as compiled here (the last def wins)."""
        names_ = set_(wanted)
        return {c.co_name: c for c in tests_code.co_consts if type_(c) is CodeType and c.co_name in names_}
    get_tb = vars(BaseException)["__traceback__"].__get__  # the C getter: a subclass cannot override it
    compile_, exec_, builtins_dict, builtins_module = compile, exec, builtins.__dict__, builtins
    snapshot = dict(builtins_dict)
    snapshot_items = list_(snapshot.items())

    def describe(e: BaseException, filename: str) -> str:
        """``Type (line N): message`` for the innermost line of ``filename``; no frame leaves."""
        try:
            msg = str_(e)
            msg = str_.encode(msg, "utf-8", "replace").decode() if isinstance_(msg, str_) else "<unprintable>"
        except BaseException_:
            msg = "<unprintable>"
        kind = type_(e).__name__
        kind = kind if type_(kind) is str_ else "Exception"
        line = 0
        tb = get_tb(e)
        trusted[0] = get_ident()  # lets this thread read tb_frame; only C getters run meanwhile
        try:
            while type_(tb) is TracebackType:
                fname = tb.tb_frame.f_code.co_filename
                if type_(fname) is str_ and fname == filename:
                    line = tb.tb_lineno
                tb = tb.tb_next
        finally:
            trusted[0] = 0
        where = f" (line {line})" if line else ""
        return f"{kind}{where}: {msg}" if msg else f"{kind}{where}"

    def tampered(ns: dict) -> str:  # type: ignore[type-arg]
        b = ns.get("__builtins__")
        if b is not builtins_dict and b is not builtins_module:
            return "the code replaced __builtins__"
        if len_(builtins_dict) != len_(snapshot) or any_(type_(k) is not str_ for k in list_(builtins_dict)):
            return "the code added or removed builtins"
        for k, v in snapshot_items:
            if builtins_dict.get(k) is not v:
                return f"the code replaced the builtin {k}"
        return ""

    def outcome(e: BaseException, filename: str) -> str:
        """``0|M|F excerpt``: failed, out of memory, or over the file size limit."""
        if type_(e) is MemoryError_:
            return "M " + hexed(describe(e, filename))
        if isinstance_(e, OSError_) and e.errno == errno.EFBIG:  # type: ignore[attr-defined]
            return "F " + hexed(describe(e, filename))
        return "0 " + hexed(describe(e, filename))

    module = types.ModuleType("candidate")  # a real module, so dataclasses, pickle & co. find it
    sys.modules["candidate"] = module
    ns: dict = module.__dict__  # type: ignore[type-arg]
    ns["__builtins__"] = builtins_dict
    try:
        exec_(compile_(code_src, "<candidate>", "exec"), ns)
    except BaseException_ as e:
        send("L " + outcome(e, "<candidate>"))
        return
    problem = tampered(ns)
    send("L 1" if not problem else "L 0 " + hexed(problem))
    if problem:
        return

    total = len_(names) + (1 if toplevel else 0)
    index = 0
    stopped = ""
    try:
        tests_code = compile_(tests_src, "<tests>", "exec")
        codes = test_codes(tests_code, names)
        exec_(tests_code, ns)
        if toplevel:
            problem = tampered(ns)
            send("T 0 1" if not problem else "T 0 0 " + hexed(problem))
            index = 1
    except AssertionError_ as e:
        if not toplevel:
            send("E " + hexed("the tests module failed: " + describe(e, "<tests>")))
            return
        send("T 0 " + outcome(e, "<tests>"))
        index, stopped = 1, "a top-level assert failed"
    except BaseException_ as e:
        send("E " + hexed("the tests module failed: " + describe(e, "<tests>")))
        return

    for k in range_(len_(names)):
        name = names[k]
        fn: Any = ns.get(name)
        if fn is None and stopped:
            send(f"T {index} 0 " + hexed(f"not defined: the tests module stopped early ({stopped})"))
        elif type_(fn) is not FunctionType or fn.__code__ is not codes.get(name):
            send(f"T {index} 0 " + hexed(f"{name} was replaced by the code"))
        else:
            try:
                fn()
                problem = tampered(ns)
                send(f"T {index} 1" if not problem else f"T {index} 0 " + hexed(problem))
            except BaseException_ as e:
                send(f"T {index} " + outcome(e, "<tests>"))
        index += 1
    send(f"D {total}")


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()  # nothing of the config stays buffered for the code to peek at
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    send = _make_sender(bytes.fromhex(cfg.pop("key")), cfg.pop("fd"))
    report = _isolate(cfg, send)
    send("S " + _hex(json.dumps(report, separators=(",", ":"))))
    trusted = [0]
    if cfg.get("audit", True):
        sys.addaudithook(_make_hook(cfg["work"], send, trusted))
    box = {"send": send, "trusted": trusted, "code": cfg.pop("code"), "tests": cfg.pop("tests"),
           "names": cfg.pop("names"), "toplevel": cfg.pop("toplevel")}
    del send, cfg, trusted, report
    exit_, out, err = os._exit, sys.stdout, sys.stderr  # bound now: the code may patch os and sys
    worker = threading.Thread(target=_run, args=(box,), name="sandbox-tests", daemon=True)
    worker.start()
    del box
    worker.join()
    for stream in (out, err):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the code closed or broke its own stdout; nothing to keep
    exit_(0)


if __name__ == "__main__":
    _write, _exit = os.write, os._exit
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - the process boundary: report, then exit non-zero
        _write(2, f"sandbox harness failed: {type(e).__name__}\n".encode())
        _exit(70)

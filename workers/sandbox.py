"""Run untrusted Python (candidate code) against its tests in two separate sandboxes.

:func:`run_tests` starts ``workers/_sandbox_child.py`` twice, each in a fresh interpreter
(``-I -S -B``) with an allowlisted environment: the **candidate** process loads the code and
then only answers calls; the **judge** process runs the tests, which call the candidate's
functions through a pipe that carries plain data only (``workers/sandbox_codec.py``: numbers,
str, bytes, list, tuple, dict, set, None, bool; no pickle, no object with its own ``__eq__``).
Assertions run in the judge, which the candidate cannot reach: different process, different
PID, mount and network namespaces; it holds no descriptor of the judge's result pipe.

Each process is PID 1 of its own PID namespace, lives in a new root (``pivot_root``) holding
only the interpreter's own files, read-only, and ``/work`` (tmpfs, ``noexec,nosuid,nodev``),
without ``/proc``, ``/dev``, ``/tmp``, ``/run`` or any home directory; it has no capabilities,
``no_new_privs``, rlimits and a seccomp syscall allowlist (``workers/sandbox_seccomp.py``). At
the end, or at the wall-clock deadline, the parent kills each PID 1 through a pidfd, which
ends every process of that namespace, and checks that no process of either namespace is left.

Where the kernel refuses a layer (no namespaces, no seccomp, not x86_64), :func:`run_tests`
raises :class:`SandboxUnavailable` instead of running with less. What this guards against, and
what it does not, is in the README, section "Verifiers and the code sandbox".
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tinyfleet_core.errors import ConfigError, InputError
from workers import sandbox_seccomp

__all__ = [
    "TOPLEVEL_TEST",
    "Containment",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "TestOutcome",
    "TestPlan",
    "plan_tests",
    "run_tests",
]

TOPLEVEL_TEST = "<top-level asserts>"
"""The name under which a tests module's top-level asserts are reported (one test)."""

Containment = Literal[
    "timeout", "cpu", "memory", "output", "forbidden", "early_exit", "crash", "channel", "unexpressible"
]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
_CHANNEL_CAP = 1 << 20  # bytes of result lines the parent accepts before it calls it a flood
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}
_SETUP_FAILED = 71  # the child's exit status when a layer could not be applied


class SandboxUnavailable(ConfigError):
    """The host refused a layer of the sandbox (namespaces, the new root, seccomp); nothing ran.
    The sandbox never runs untrusted code with fewer layers than it documents."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run, applied to the candidate and the judge alike (``wall_s``
    is the whole run's). ``processes`` (RLIMIT_NPROC) bites only inside an unprivileged user
    namespace (the kernel exempts uid 0); the seccomp filter refuses ``fork`` in any case."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 8
    """Largest file the code may write; stdout and stderr count as files."""
    disk_mb: int = 64
    """Size of the work directory's tmpfs (when mount namespaces are available)."""
    processes: int = 64
    open_files: int = 64
    output_chars: int = 2000
    """How much of stdout/stderr is kept in the result."""

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "file_mb", "disk_mb", "processes", "open_files", "output_chars"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.memory_mb < 64:
            raise ConfigError(f"SandboxLimits.memory_mb={self.memory_mb} is too small for a Python interpreter; use 64 or more")


@dataclass(frozen=True)
class TestPlan:
    """The tests a tests module defines, as read by the parent (never by the child)."""

    functions: tuple[str, ...]
    toplevel: bool
    references: tuple[str, ...] = ()
    """Names the tests read that they may expect from the candidate (builtins never count)."""

    @property
    def names(self) -> list[str]:
        """Every test in the order the harness reports them."""
        return ([TOPLEVEL_TEST] if self.toplevel else []) + list(self.functions)


@dataclass(frozen=True)
class TestOutcome:
    name: str
    ok: bool
    error: str = ""
    """``Type (line N): message`` of the failure, truncated; empty when the test passed."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. ``ok`` only when every test ran, passed, and the harness finished."""

    ok: bool
    reason: str
    tests: tuple[TestOutcome, ...]
    contained: Containment | None = None
    """Why the run was stopped or cut short, when it was."""
    violations: tuple[str, ...] = ()
    stdout: str = ""
    stderr: str = ""
    exit: str = ""
    wall_s: float = 0.0
    cpu_s: float | None = None
    isolation: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(t.ok for t in self.tests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading the tests (parent side) -------------------------------------------------------


def plan_tests(tests: str) -> TestPlan:
    """Find the tests of a tests module: each top-level ``def test_*()`` plus, when the module
    has asserts outside any function or class, one more for those. Raises InputError."""
    try:
        tree = ast.parse(tests, "<tests>")
    except SyntaxError as e:
        raise InputError(f"tests: not valid Python: {e.msg} (line {e.lineno}); send Python source") from None
    functions: dict[str, None] = {}
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("test"):
            raise InputError(f"tests: {node.name} is async; write tests as plain functions")
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            _check_test_function(node)
            functions[node.name] = None
    toplevel = any(isinstance(n, ast.Assert) for n in _walk_outside_defs(tree))
    if not functions and not toplevel:
        raise InputError("tests: no test found; define 'def test_...():' functions or write top-level asserts")
    return TestPlan(tuple(functions), toplevel, _references(tree))


_BUILTIN_NAMES = frozenset(dir(builtins))


def _references(tree: ast.Module) -> tuple[str, ...]:
    """Names the tests load anywhere, minus builtins and dunders: those the judge asks the
    candidate for. A builtin name is never taken from the candidate, so ``len = lambda x: 3``
    in the code does not change what ``len`` means in the tests."""
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return tuple(sorted(n for n in names if n not in _BUILTIN_NAMES and not n.startswith("__")))


def _check_test_function(node: ast.FunctionDef) -> None:
    a = node.args
    required = len(a.posonlyargs) + len(a.args) - len(a.defaults) + sum(d is None for d in a.kw_defaults)
    if required:
        raise InputError(f"tests: {node.name} takes arguments; a test is called with none")
    if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _walk_outside_defs(node, root=True)):
        raise InputError(f"tests: {node.name} is a generator, so calling it would run nothing")


def _walk_outside_defs(node: ast.AST, root: bool = False) -> list[ast.AST]:
    """Nodes of ``node`` that are not inside a nested function, lambda or class."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        out.append(n)
        stack.extend(ast.iter_child_nodes(n))
    return out


# --- the new root (parent side: what the interpreter needs) ----------------------------------


@functools.lru_cache(maxsize=1)
def root_plan() -> tuple[tuple[str, ...], ...]:
    """The new root as ordered operations, computed once: ``("dir", p)``, ``("link", p,
    target)``, ``("file", p)`` (a read-only bind of one file), ``("tree", p)`` (of a directory),
    ``("hide", p)`` (an empty tmpfs over it). Holds the stdlib (site-packages hidden) and the
    shared libraries the interpreter and its extension modules link, found with ``ldd``."""
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    dynload = os.path.join(stdlib, "lib-dynload")
    objects = [os.path.realpath(sys.executable)]
    if os.path.isdir(dynload):
        objects += sorted(os.path.join(dynload, n) for n in os.listdir(dynload) if n.endswith(".so") and not n.startswith("_tkinter"))
    ops: list[tuple[str, ...]] = []
    seen: set[str] = set()
    _materialize(stdlib, "tree", ops, seen)
    # installed packages never enter the root: this interpreter's (a venv's live outside the
    # stdlib and are not bound at all) and the base installation's, which live inside it
    sites = [sysconfig.get_paths()[n] for n in ("purelib", "platlib")]
    sites += [os.path.join(stdlib, n) for n in ("site-packages", "dist-packages")]
    for site in sorted({os.path.realpath(p) for p in sites}):
        if site.startswith(stdlib + "/") and os.path.isdir(site):
            ops.append(("hide", site))
    for lib in _linked_libraries(objects):
        _materialize(lib, "file", ops, seen)
    return tuple(ops)


def _linked_libraries(objects: list[str]) -> list[str]:
    ldd = shutil.which("ldd")
    if ldd is None:
        raise SandboxUnavailable("the sandbox needs 'ldd' (glibc's libc-bin) to find the interpreter's shared libraries")
    try:
        out = subprocess.run([ldd, *objects], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxUnavailable(f"ldd on the interpreter failed: {e}") from None
    libs: set[str] = set()
    for line in out.splitlines():
        line = line.strip()
        path = line.split("=>", 1)[1].strip() if "=>" in line else line
        path = path.split(" (", 1)[0].strip()
        if path.startswith("/") and os.path.isfile(path):
            libs.add(path)
    return sorted(libs)


def _materialize(path: str, leaf: str, ops: list[tuple[str, ...]], seen: set[str]) -> None:
    """Append the operations that make ``path`` exist in the new root as it resolves on the
    host: each symlink on the way is recreated as the same symlink, directories as empty ones."""
    parts = [p for p in path.split("/") if p]
    cur = ""
    for _ in range(256):  # bounded: a symlink loop on the host must not hang us
        if not parts:
            return
        nxt = f"{cur}/{parts[0]}"
        st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(nxt)
            if nxt not in seen:
                seen.add(nxt)
                ops.append(("link", nxt, target))
            resolved = target if target.startswith("/") else os.path.normpath(f"{cur}/{target}")
            parts = [p for p in resolved.split("/") if p] + parts[1:]
            cur = ""
            continue
        last = len(parts) == 1
        kind = leaf if last else "dir"
        if kind == "file" and not stat.S_ISREG(st.st_mode):
            return
        if nxt not in seen:
            seen.add(nxt)
            ops.append((kind, nxt))
        cur, parts = nxt, parts[1:]
    raise SandboxUnavailable(f"cannot resolve {path} on the host (symlink loop?)")


# --- running (parent side) -----------------------------------------------------------------


def run_tests(code: str, tests: str, limits: SandboxLimits | None = None, *, syscall_filter: bool = True) -> SandboxResult:
    """Run ``tests`` in the judge sandbox against ``code`` in the candidate sandbox; never
    raises for anything the code does. ``syscall_filter=False`` leaves out the seccomp layer
    (only for tests of the other layers; never in production). Raises InputError for bad
    tests and SandboxUnavailable when the host refuses a layer."""
    limits = limits or SandboxLimits()
    plan = plan_tests(tests)
    if not _CHILD.is_file():
        raise ConfigError(f"the sandbox harness {_CHILD} is missing; reinstall tinyfleet")
    if syscall_filter and not sandbox_seccomp.supported():
        raise SandboxUnavailable(
            f"the sandbox's seccomp filter has no syscall table for {os.uname().machine}; it runs on x86_64 Linux only"
        )
    ops = [list(op) for op in root_plan()]
    base = Path(tempfile.mkdtemp(prefix="tinyfleet-sandbox-"))
    try:
        return _Run(base, code, tests, plan, limits, syscall_filter, ops).go()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class _Box:
    """One sandboxed process as the parent sees it: the relay (its direct child) and PID 1."""

    role: str
    proc: subprocess.Popen[bytes]
    status: int  # read end: "P pid" and "X how n cpu" lines from the relay
    ctl: int  # write end: the go byte to the relay
    buf: bytes = b""
    pid1: int | None = None
    pidfd: int | None = None
    pid_ns: str = ""
    exit: tuple[str, int, float] | None = None
    status_eof: bool = False


@dataclass
class _Report:
    """What the judge said, record by record."""

    load: dict[str, Any] | None = None
    tests: dict[int, dict[str, Any]] = field(default_factory=dict)
    module_error: str = ""
    done: int | None = None
    corrupt: str = ""
    flooded: bool = False


class _Run:
    def __init__(self, base: Path, code: str, tests: str, plan: TestPlan, limits: SandboxLimits,
                 seccomp: bool, ops: list[list[str]]) -> None:
        self.base, self.code, self.tests, self.plan, self.limits = base, code, tests, plan, limits
        self.seccomp, self.ops = seccomp, ops
        self.boxes: list[_Box] = []
        self.leftovers: list[str] = []
        self.ending = False

    def go(self) -> SandboxResult:
        os.chmod(self.base, 0o711)
        req_r, req_w = os.pipe()  # judge -> candidate
        resp_r, resp_w = os.pipe()  # candidate -> judge
        result_r, result_w = os.pipe()  # judge -> parent
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.limits.wall_s
        try:
            cand = self._spawn("candidate", {"req": req_r, "resp": resp_w}, {"code": self.code})
            judge = self._spawn("judge", {"req": req_w, "resp": resp_r, "result": result_w}, {
                "tests": self.tests, "names": list(self.plan.functions), "toplevel": self.plan.toplevel,
                "refs": list(self.plan.references),
            })
        finally:
            for fd in (req_r, req_w, resp_r, resp_w, result_w):
                os.close(fd)
        try:
            raw, flooded, finished = self._pump(result_r, deadline)
        finally:
            os.close(result_r)
            self._end()
        wall = time.perf_counter() - t0
        refused = [b for b in self.boxes if b.proc.returncode == _SETUP_FAILED or (b.exit and b.exit[:2] == ("exit", _SETUP_FAILED))]
        for box in refused:  # 71 from the relay (unshare, fork) or from PID 1 (root, caps, seccomp)
            raise SandboxUnavailable(
                f"the host refused a layer of the {box.role} sandbox: {self._tail(box.role, 'stderr', 300)}; "
                "the sandbox needs Linux namespaces (root, or unprivileged user namespaces enabled), "
                "pivot_root and seccomp; it does not run code with less"
            )
        for box in self.boxes:
            if box.pid1 is None and box.proc.returncode not in (0, -signal.SIGKILL):  # never got to isolating
                raise SandboxUnavailable(
                    f"the {box.role} sandbox did not start ({_exit_text(None, box.proc.returncode)}): "
                    f"{self._tail(box.role, 'stderr', 300) or 'no message'}"
                )
        report = _parse(raw)
        report.flooded = flooded
        return _rule(self.plan, report, self.limits, not finished and not flooded, cand, judge, self._outputs(),
                     wall, self._isolation(), self.leftovers)

    def _spawn(self, role: str, fds: dict[str, int], extra: dict[str, Any]) -> _Box:
        status_r, status_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        root = self.base / f"root-{role}"
        root.mkdir(mode=0o700)
        cfg = {
            "role": role, "root": str(root), "plan": self.ops, "seccomp": self.seccomp,
            "fds": {**fds, "status": status_w, "ctl": ctl_r},
            "limits": {
                "cpu_s": int(self.limits.cpu_s), "memory_bytes": self.limits.memory_mb << 20,
                "file_bytes": self.limits.file_mb << 20, "disk_bytes": self.limits.disk_mb << 20,
                "open_files": self.limits.open_files, "processes": self.limits.processes,
            },
            **extra,
        }
        out = open(self.base / f"{role}.stdout", "wb")
        err = open(self.base / f"{role}.stderr", "wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(_CHILD)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(*fds.values(), status_w, ctl_r),
                cwd=self.base, env=_clean_env(), start_new_session=True, close_fds=True,
            )
        finally:
            out.close()
            err.close()
            os.close(status_w)
            os.close(ctl_r)
        box = _Box(role, proc, status_r, ctl_w)
        self.boxes.append(box)
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(cfg).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the interpreter died before reading its config; the ruling reports the crash
        return box

    def _pump(self, result_fd: int, deadline: float) -> tuple[bytes, bool, bool]:
        """Serve the relays and read the judge's report until it closes, the deadline or the cap.
        Returns (report bytes, flooded, finished)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return b"".join(chunks), False, False
            watch = [result_fd] + [b.status for b in self.boxes if not b.status_eof]
            ready, _, _ = select.select(watch, [], [], left)
            for fd in ready:
                if fd != result_fd:
                    self._serve_status(next(b for b in self.boxes if b.status == fd))
                    continue
                data = os.read(fd, 65536)
                if not data:
                    return b"".join(chunks), False, True
                chunks.append(data)
                size += len(data)
                if size > _CHANNEL_CAP:
                    return b"".join(chunks), True, False

    def _serve_status(self, box: _Box) -> None:
        data = os.read(box.status, 4096)
        if not data:
            box.status_eof = True
            return
        box.buf += data
        while b"\n" in box.buf:
            line, box.buf = box.buf.split(b"\n", 1)
            f = line.decode("ascii", "replace").split()
            if f and f[0] == "P" and len(f) == 2 and box.pidfd is None:
                box.pid1 = int(f[1])
                try:
                    box.pidfd = os.pidfd_open(box.pid1)
                    box.pid_ns = os.readlink(f"/proc/{box.pid1}/ns/pid")
                except OSError:
                    pass  # already gone: nothing to kill
                if self.ending and box.pidfd is not None:  # named after the end: kill it now
                    _pidfd_kill(box.pidfd)
                if box.ctl >= 0:
                    try:
                        os.write(box.ctl, b"1")
                    except BrokenPipeError:
                        pass
            elif f and f[0] == "X" and len(f) == 4:
                box.exit = (f[1], int(f[2]), float(f[3]))

    def _end(self) -> None:
        """Kill each PID 1 (the kernel then kills every process of its namespace), let the
        relays reap and report, and check that no process of either namespace is left."""
        self.ending = True
        for box in self.boxes:
            if box.pidfd is not None:
                _pidfd_kill(box.pidfd)
            elif box.proc.poll() is None:
                try:  # no PID 1 yet: the relay's group; PID 1, if forked meanwhile, dies with it
                    os.killpg(box.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.close(box.ctl)
            box.ctl = -1  # the relay reads EOF: if it names PID 1 only now, it kills it itself
        end = time.monotonic() + 5.0
        for box in self.boxes:
            while not box.status_eof and time.monotonic() < end:
                ready, _, _ = select.select([box.status], [], [], max(0.0, end - time.monotonic()))
                if ready:
                    self._serve_status(box)
            try:
                box.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(box.proc.pid, signal.SIGKILL)
                box.proc.wait()
            os.close(box.status)
            if box.pidfd is not None:
                os.close(box.pidfd)
        self.leftovers = _survivors({b.pid_ns for b in self.boxes if b.pid_ns})

    def _tail(self, role: str, stream: str, limit: int) -> str:
        try:
            return (self.base / f"{role}.{stream}").read_bytes()[-limit:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def _outputs(self) -> tuple[str, str]:
        keep = self.limits.output_chars
        out = _excerpt(self.base / "candidate.stdout", keep)
        err = _excerpt(self.base / "candidate.stderr", keep)
        judge_err = _excerpt(self.base / "judge.stderr", keep // 2)
        if judge_err:
            err = (err + "\n" if err else "") + "[judge] " + judge_err
        return out, err

    def _isolation(self) -> dict[str, str]:
        files = sum(op[0] in ("file", "tree") for op in self.ops)
        user = "+user" if os.geteuid() != 0 else ""
        return {
            "processes": "candidate and judge in separate sandboxes; the tests run in the judge and reach the candidate only through the plain-data channel",
            "namespaces": f"mount+pid+net+ipc+uts{user}, one set each",
            "filesystem": (f"pivot_root into a new root: {files} read-only binds of the interpreter's own files, "
                           f"/work a {self.limits.disk_mb} MiB tmpfs (noexec,nosuid,nodev); no /proc, /dev, /tmp, /run or home"),
            "network": "none (empty network namespace; socket syscalls refused)",
            "syscalls": "seccomp allowlist" if self.seccomp else "NO seccomp filter (syscall_filter=False: tests only)",
            "capabilities": "none; no_new_privs",
            "pid": "each is PID 1 of its own PID namespace, killed through a pidfd at the end",
            "pid_namespaces": " ".join(b.pid_ns for b in self.boxes if b.pid_ns),
            "left_after_kill": str(len(self.leftovers)),
        }


def _pidfd_kill(pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already ended


def _survivors(namespaces: set[str]) -> list[str]:
    """Host PIDs of processes still in one of ``namespaces`` (SIGKILLed on sight)."""
    if not namespaces:
        return []
    found: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        if ns in namespaces:
            found.append(entry)
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def _clean_env() -> dict[str, str]:
    """An allowlist, not a denylist: no variable of the host reaches the code."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/work", "TMPDIR": "/work"}


def _excerpt(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            text = f.read(limit * 4).decode("utf-8", "replace")[:limit]
    except OSError:
        return ""
    return text + (f"\n... [truncated: {size} bytes in all]" if size > len(text.encode()) else "")


def _parse(raw: bytes) -> _Report:
    rep = _Report()
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rep.corrupt = rep.corrupt or f"an unreadable line from the judge: {line[:60]!r}"
            continue
        if not isinstance(rec, dict):
            continue
        k = rec.get("k")
        if k == "load":
            rep.load = rec
        elif k == "test" and isinstance(rec.get("i"), int):
            if rec["i"] in rep.tests:
                rep.corrupt = rep.corrupt or f"test {rec['i']} reported twice"
            rep.tests[rec["i"]] = rec
        elif k == "module_error":
            rep.module_error = str(rec.get("error", ""))
        elif k == "done" and isinstance(rec.get("n"), int):
            rep.done = rec["n"]
    return rep


# --- the ruling ------------------------------------------------------------------------------


def _exit_text(exit: tuple[str, int, float] | None, returncode: int | None) -> str:
    if exit is not None:
        how, number, _ = exit
        return f"signal {_SIGNAL_NAMES.get(number, number)}" if how == "signal" else f"exit {number}"
    return f"exit {returncode}" if returncode is not None and returncode >= 0 else f"signal {-(returncode or 0)}"


def _rule(plan: TestPlan, rep: _Report, limits: SandboxLimits, timed_out: bool, cand: _Box, judge: _Box,
          outputs: tuple[str, str], wall: float, isolation: dict[str, str], leftovers: list[str]) -> SandboxResult:
    names = plan.names
    outcomes = []
    for i, name in enumerate(names):
        if rep.load is not None and not rep.load.get("ok"):
            outcomes.append(TestOutcome(name, False, "not run: the candidate code failed to load"))
        elif i in rep.tests:
            t = rep.tests[i]
            outcomes.append(TestOutcome(name, bool(t.get("ok")), str(t.get("error", ""))[:1000]))
        else:
            outcomes.append(TestOutcome(name, False, "not run: the run ended first"))
    contained, reason = _reason(plan, rep, outcomes, limits, timed_out, cand, judge)
    violations = tuple(f"{len(leftovers)} process(es) of the sandbox outlived its PID 1 and were killed" for _ in leftovers[:1])
    if violations and contained is None:
        contained, reason = "crash", violations[0]
    ok = contained is None and reason == ""
    if ok:
        reason = f"all {len(names)} tests passed"
    cpu = cand.exit[2] if cand.exit else None
    return SandboxResult(
        ok=ok, reason=reason, tests=tuple(outcomes), contained=contained, violations=violations,
        stdout=outputs[0], stderr=outputs[1], exit=_exit_text(cand.exit, cand.proc.returncode),
        wall_s=round(wall, 4), cpu_s=cpu, isolation=isolation,
    )


def _reason(plan: TestPlan, rep: _Report, outcomes: list[TestOutcome], limits: SandboxLimits, timed_out: bool,
            cand: _Box, judge: _Box) -> tuple[Containment | None, str]:
    """The first thing that went wrong, as (containment, reason); (None, "") when nothing did."""
    names = plan.names
    first_missing = next((n for i, n in enumerate(names) if i not in rep.tests), None)
    during = f" (during {first_missing})" if first_missing and rep.load and rep.load.get("ok") else ""
    kinds = [str(t.get("kind")) for t in rep.tests.values()] + ([str(rep.load.get("kind"))] if rep.load else [])
    if rep.flooded:
        return "output", f"the judge flooded the result channel (over {_CHANNEL_CAP} bytes); killed both sandboxes"
    if timed_out:
        return "timeout", f"wall-clock timeout: killed both sandboxes' PID 1 after {limits.wall_s:g} s{during}"
    if rep.corrupt:
        return "channel", f"a corrupted report from the judge ({rep.corrupt}); failing closed"
    if "died" in kinds:
        where = next((t.name for t in outcomes if "candidate process ended" in t.error), "loading the code")
        return _candidate_death(cand, limits, where)
    if rep.done is None and not rep.module_error and not (rep.load and not rep.load.get("ok")):
        exit_text = _exit_text(judge.exit, judge.proc.returncode)
        if judge.exit and judge.exit[0] == "signal" and judge.exit[1] == signal.SIGKILL and judge.exit[2] >= limits.cpu_s - 0.05:
            return "cpu", f"CPU time limit ({limits.cpu_s} s) exceeded by the tests{during}"
        return "crash", f"the judge ended before it finished ({exit_text}){during}"
    for kind, containment, text in (
        ("memory", "memory", f"memory limit ({limits.memory_mb} MiB) exceeded"),
        ("output", "output", f"output/file size limit ({limits.file_mb} MiB) exceeded"),
        ("forbidden", "forbidden", "forbidden operation refused by the kernel"),
        ("channel", "channel", "the candidate's answer could not cross the plain-data channel"),
        ("unexpressible", "unexpressible", "a test cannot be expressed across the plain-data channel"),
    ):
        if kind in kinds:
            hit = next((t for i, t in enumerate(outcomes) if rep.tests.get(i, {}).get("kind") == kind), None)
            detail = f" in {hit.name}: {hit.error}" if hit else f": {rep.load.get('error', '') if rep.load else ''}"
            return containment, text + detail  # type: ignore[return-value]
    if rep.load is not None and not rep.load.get("ok"):
        return None, f"the candidate code failed to load: {rep.load.get('error', '')}"
    if rep.module_error:
        return None, rep.module_error
    failed = [t for i, t in enumerate(outcomes) if i in rep.tests and not t.ok]
    if failed:
        return None, f"{len(failed)} of {len(names)} tests failed; first: {failed[0].name}: {failed[0].error}"
    if rep.load is None or len(rep.tests) < len(names) or rep.done != len(names):
        return "early_exit", f"the judge ended before it finished ({len(rep.tests)} of {len(names)} tests reported)"
    return None, ""


def _candidate_death(cand: _Box, limits: SandboxLimits, where: str) -> tuple[Containment, str]:
    exit_text = _exit_text(cand.exit, cand.proc.returncode)
    cpu = cand.exit[2] if cand.exit else 0.0
    if cand.exit and cand.exit[0] == "signal":
        if cand.exit[1] in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits.cpu_s - 0.05:
            return "cpu", f"CPU time limit ({limits.cpu_s} s) exceeded (during {where})"
        if cand.exit[1] == signal.SIGXFSZ:
            return "output", f"output/file size limit ({limits.file_mb} MiB) exceeded (during {where})"
        return "crash", f"the candidate process was killed by {exit_text} (during {where})"
    return "early_exit", (
        f"the candidate process ended itself ({exit_text}) before the judge finished (during {where}): "
        "sys.exit, os._exit or a signal in the code"
    )

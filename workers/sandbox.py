"""Run untrusted Python (candidate code plus its tests) in a contained process.

:func:`run_tests` starts ``workers/_sandbox_child.py`` in a fresh interpreter (``-I -S -B``)
with a fresh temporary working directory, an environment that holds nothing but ``PATH``,
``LANG``, ``HOME`` and ``TMPDIR``, and its own session (process group). The child applies every
layer the host allows (network, mount and PID namespaces, a read-only filesystem except the work
directory, no capabilities, rlimits, an audit hook) before the code runs; the parent keeps the
wall-clock deadline and kills the whole process group when it passes.

Results come back over a pipe the parent created, one line per event, each line tagged with an
HMAC made with a per-run key that only the harness holds. A run passes only when the harness
reported every expected test as passed *and* reported completion, so ``sys.exit(0)``,
``os._exit(0)``, printing "OK" or writing guessed lines to the pipe all fail.

What this guards against, and what it does not, is written down in the README, section "Verifiers and the code sandbox".
"""

from __future__ import annotations

import ast
import hmac
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.errors import ConfigError, InputError

__all__ = [
    "SandboxLimits",
    "TestPlan",
    "TestOutcome",
    "SandboxResult",
    "Containment",
    "plan_tests",
    "run_tests",
    "TOPLEVEL_TEST",
]

TOPLEVEL_TEST = "<top-level asserts>"
"""The name under which a tests module's top-level asserts are reported (one test)."""

Containment = Literal["timeout", "cpu", "memory", "output", "forbidden", "early_exit", "crash", "channel"]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
_CHANNEL_CAP = 1 << 20  # bytes of result lines the parent accepts before it calls it a flood
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run. ``processes`` (RLIMIT_NPROC) bites only inside an
    unprivileged user namespace: the kernel exempts uid 0, so as root the audit hook is what
    stops a fork bomb (see the README on the sandbox)."""

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
    return TestPlan(tuple(functions), toplevel)


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


# --- running (parent side) -----------------------------------------------------------------


def run_tests(code: str, tests: str, limits: SandboxLimits | None = None, *, audit_hook: bool = True) -> SandboxResult:
    """Run ``code`` then ``tests`` in one module namespace in the sandbox; never raises for
    anything the code does. ``audit_hook=False`` leaves only the kernel layers (for tests of
    those layers; never turn it off in production). Raises InputError for bad tests."""
    limits = limits or SandboxLimits()
    plan = plan_tests(tests)
    if not _CHILD.is_file():
        raise ConfigError(f"the sandbox harness {_CHILD} is missing; reinstall tinyfleet")
    base = Path(tempfile.mkdtemp(prefix="tinyfleet-sandbox-"))
    try:
        return _run_in(base, code, tests, plan, limits, audit_hook)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class _Channel:
    """What the harness said, line by line, after checking each line's tag."""

    isolation: dict[str, str] | None = None
    load: tuple[str, str] | None = None  # (status "1"|"0"|"M"|"F", excerpt)
    tests: dict[int, tuple[str, str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    module_error: str = ""
    done: int | None = None
    exit: tuple[str, int, float] | None = None  # ("signal"|"exit", number, cpu seconds)
    corrupt: str = ""
    flooded: bool = False


def _run_in(base: Path, code: str, tests: str, plan: TestPlan, limits: SandboxLimits, audit: bool) -> SandboxResult:
    os.chmod(base, 0o711)
    work = base / "work"
    work.mkdir(mode=0o700)
    key = secrets.token_bytes(32)
    read_fd, write_fd = os.pipe()
    t0 = time.perf_counter()
    with open(base / "stdout", "w+b") as out, open(base / "stderr", "w+b") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(_CHILD)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(write_fd,), cwd=work,
                env=_clean_env(str(work)), start_new_session=True, close_fds=True,
            )
        finally:
            os.close(write_fd)
        deadline = time.monotonic() + limits.wall_s
        try:
            _send_config(proc, key, write_fd, str(work), code, tests, plan, limits, audit)
            raw, flooded = _read_channel(read_fd, deadline)
            timed_out = flooded or not _wait(proc, deadline)
        finally:
            os.close(read_fd)
            _kill_group(proc)
        wall = time.perf_counter() - t0
        channel = _parse(raw, key)
        channel.flooded = flooded
        stdout, stderr = _excerpt(out, limits.output_chars), _excerpt(err, limits.output_chars)
    return _judge(plan, channel, limits, timed_out and not flooded, proc.returncode, stdout, stderr, wall)


def _clean_env(work: str) -> dict[str, str]:
    """An allowlist, not a denylist: no variable of the host reaches the code."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": work, "TMPDIR": work}


def _send_config(proc: subprocess.Popen[bytes], key: bytes, fd: int, work: str, code: str, tests: str,
                 plan: TestPlan, limits: SandboxLimits, audit: bool) -> None:
    cfg = {
        "key": key.hex(), "fd": fd, "work": work, "code": code, "tests": tests, "audit": audit,
        "names": list(plan.functions), "toplevel": plan.toplevel,
        "limits": {
            "cpu_s": int(limits.cpu_s), "memory_bytes": limits.memory_mb << 20, "file_bytes": limits.file_mb << 20, "disk_bytes": limits.disk_mb << 20,
            "open_files": limits.open_files, "processes": limits.processes,
        },
    }
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(cfg).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the interpreter died before reading its config; the judge reports the crash


def _read_channel(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Read result lines until every writer closed the pipe, the deadline, or the cap."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks), False
        chunks.append(data)
        size += len(data)
        if size > _CHANNEL_CAP:
            return b"".join(chunks), True


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the harness to exit *without reaping it*: while it is a zombie its PID, which is
    also its process group's id, cannot be reused, so the group kill that follows is safe."""
    while True:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group (the harness, its PID-1 child, anything they left), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    proc.wait()


def _excerpt(f: Any, limit: int) -> str:
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    text = f.read(limit * 4).decode("utf-8", "replace")[:limit]
    out: str = text + (f"\n... [truncated: {size} bytes in all]" if size > len(text.encode()) else "")
    return out


def _parse(raw: bytes, key: bytes) -> _Channel:
    ch = _Channel()
    for line in raw.split(b"\n"):
        if not line:
            continue
        payload, _, tag = line.rpartition(b" ")
        good = hmac.new(key, payload, "sha256").digest()[:16].hex().encode()
        if not payload or not hmac.compare_digest(tag, good):
            ch.corrupt = ch.corrupt or f"a line without a valid tag: {line[:60]!r}"
            continue
        _apply(ch, payload.decode("ascii").split(" "))
    return ch


def _text(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "replace")


def _apply(ch: _Channel, f: list[str]) -> None:
    kind = f[0]
    if kind == "S":
        ch.isolation = json.loads(_text(f[1]))
    elif kind == "L":
        ch.load = (f[1], _text(f[2]) if len(f) > 2 else "")
    elif kind == "T":
        index = int(f[1])
        if index in ch.tests:
            ch.corrupt = ch.corrupt or f"test {index} reported twice"
        ch.tests[index] = (f[2], _text(f[3]) if len(f) > 3 else "")
    elif kind == "V":
        ch.violations.append(_text(f[1]))
    elif kind == "E":
        ch.module_error = _text(f[1])
    elif kind == "D":
        ch.done = int(f[1])
    elif kind == "X":
        ch.exit = (f[1], int(f[2]), float(f[3]))


# --- the ruling ------------------------------------------------------------------------------


def _judge(plan: TestPlan, ch: _Channel, limits: SandboxLimits, timed_out: bool, returncode: int | None,
           stdout: str, stderr: str, wall: float) -> SandboxResult:
    names = plan.names
    outcomes = _outcomes(names, ch)
    exit_text, cpu = _exit_text(ch, returncode, timed_out)
    contained, reason = _reason(plan, ch, outcomes, limits, timed_out, exit_text, cpu, stderr)
    ok = contained is None and reason == "" and returncode == 0
    if ok:
        reason = f"all {len(names)} tests passed"
    elif not reason:
        contained, reason = "crash", f"the harness finished but the process ended badly ({exit_text})"
    return SandboxResult(
        ok=ok, reason=reason, tests=tuple(outcomes), contained=contained, violations=tuple(ch.violations),
        stdout=stdout, stderr=stderr, exit=exit_text, wall_s=round(wall, 4), cpu_s=cpu, isolation=ch.isolation or {},
    )


def _outcomes(names: list[str], ch: _Channel) -> list[TestOutcome]:
    out = []
    for i, name in enumerate(names):
        if ch.load is not None and ch.load[0] != "1":
            out.append(TestOutcome(name, False, "not run: the candidate code failed to load"))
        elif i in ch.tests:
            status, excerpt = ch.tests[i]
            out.append(TestOutcome(name, status == "1", excerpt))
        else:
            out.append(TestOutcome(name, False, "not run: the process ended first"))
    return out


def _exit_text(ch: _Channel, returncode: int | None, timed_out: bool) -> tuple[str, float | None]:
    if timed_out:
        return "killed at the wall-clock deadline", None
    if ch.exit is not None:  # the sandboxed PID 1, as reported by the harness's first process
        how, number, cpu = ch.exit
        return (f"signal {_SIGNAL_NAMES.get(number, number)}" if how == "signal" else f"exit {number}"), cpu
    if returncode is not None and returncode < 0:
        return f"signal {_SIGNAL_NAMES.get(-returncode, -returncode)}", None
    return f"exit {returncode}", None


def _reason(plan: TestPlan, ch: _Channel, outcomes: list[TestOutcome], limits: SandboxLimits, timed_out: bool,
            exit_text: str, cpu: float | None, stderr: str) -> tuple[Containment | None, str]:
    """The first thing that went wrong, as (containment, reason); (None, "") when nothing did."""
    names = plan.names
    first_missing = next((n for i, n in enumerate(names) if i not in ch.tests), None)
    during = f" (during {first_missing})" if first_missing and ch.load == ("1", "") else ""
    if ch.flooded:
        return "output", f"the code flooded the result channel (over {_CHANNEL_CAP} bytes); killed the process group"
    if timed_out:
        return "timeout", f"wall-clock timeout: killed the process group after {limits.wall_s:g} s{during}"
    if ch.corrupt:
        return "channel", f"forged or corrupted results on the result channel ({ch.corrupt}); failing closed"
    if ch.violations:
        more = f" (and {len(ch.violations) - 1} more)" if len(ch.violations) > 1 else ""
        return "forbidden", f"forbidden operation: {ch.violations[0]}{more}"
    statuses = [s for s, _ in ch.tests.values()] + ([ch.load[0]] if ch.load else [])
    signal_reason = _signal_reason(exit_text, cpu, limits, during)
    if signal_reason:
        return signal_reason
    if "M" in statuses:
        where = next((t.name for t in outcomes if t.error.startswith("MemoryError")), "loading the code")
        return "memory", f"memory limit ({limits.memory_mb} MiB) exceeded in {where}"
    if "F" in statuses:
        return "output", f"output/file size limit ({limits.file_mb} MiB) exceeded"
    if ch.isolation is None:
        return "crash", f"the sandbox harness did not start ({exit_text}): {stderr[-300:].strip()}"
    if ch.load is not None and ch.load[0] != "1":
        return None, f"the candidate code failed to load: {ch.load[1]}"
    if ch.module_error:
        return None, ch.module_error
    failed = [t for t, i in zip(outcomes, range(len(names))) if i in ch.tests and not t.ok]
    if failed:
        return None, f"{len(failed)} of {len(names)} tests failed; first: {failed[0].name}: {failed[0].error}"
    if ch.load is None or len(ch.tests) < len(names) or ch.done != len(names):
        reported = len(ch.tests)
        return "early_exit", (
            f"the process ended before the harness finished ({exit_text}; {reported} of {len(names)} tests "
            "reported): the code ended the process itself (sys.exit, os._exit, a signal...)"
        )
    return None, ""


def _signal_reason(exit_text: str, cpu: float | None, limits: SandboxLimits, during: str) -> tuple[Containment, str] | None:
    if not exit_text.startswith("signal"):
        return None
    if "SIGXCPU" in exit_text or ("SIGKILL" in exit_text and cpu is not None and cpu >= limits.cpu_s - 0.05):
        return "cpu", f"CPU time limit ({limits.cpu_s} s) exceeded{during}"
    if "SIGXFSZ" in exit_text:
        return "output", f"output/file size limit ({limits.file_mb} MiB) exceeded{during}"
    if "SIGKILL" in exit_text:
        return "crash", f"killed by SIGKILL{during} (memory pressure?)"
    return "crash", f"the process crashed: {exit_text}{during}"

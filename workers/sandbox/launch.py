"""Launching the two sandboxed processes and tending them (parent side).

:func:`run_tests` starts ``_child.py`` twice in fresh interpreters (``-I -S -B``, an
allowlisted environment), wires the pipes (judge -> candidate, candidate -> judge, judge ->
parent), gives each relay its go once the parent holds a pidfd of its PID 1, reads the
judge's report until it closes, the wall-clock deadline or the flood cap, then kills each
PID 1 through its pidfd, checks that no process of either PID namespace is left, and hands
everything to the ruling (``verdict.py``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfleet_core.errors import ConfigError
from workers.sandbox.limits import CHANNEL_CAP, SETUP_FAILED, SandboxLimits, SandboxUnavailable
from workers.sandbox.plan import TestPlan, plan_tests
from workers.sandbox.rootfs import root_plan
from workers.sandbox.seccomp import supported as seccomp_supported
from workers.sandbox.verdict import Ending, SandboxResult, describe_exit, parse_report, rule

__all__ = ["run_tests"]

_CHILD = Path(__file__).with_name("_child.py")


def run_tests(code: str, tests: str, limits: SandboxLimits | None = None, *, syscall_filter: bool = True) -> SandboxResult:
    """Run ``tests`` in the judge sandbox against ``code`` in the candidate sandbox; never
    raises for anything the code does. ``syscall_filter=False`` leaves out the seccomp layer
    (only for tests of the other layers; never in production). Raises InputError for bad
    tests and SandboxUnavailable when the host refuses a layer."""
    limits = limits or SandboxLimits()
    plan = plan_tests(tests)
    if not _CHILD.is_file():
        raise ConfigError(f"the sandbox harness {_CHILD} is missing; reinstall tinyfleet")
    if syscall_filter and not seccomp_supported():
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
        refused = [b for b in self.boxes if b.proc.returncode == SETUP_FAILED or (b.exit and b.exit[:2] == ("exit", SETUP_FAILED))]
        for box in refused:  # 71 from the relay (unshare, fork) or from PID 1 (root, caps, seccomp)
            raise SandboxUnavailable(
                f"the host refused a layer of the {box.role} sandbox: {self._tail(box.role, 'stderr', 300)}; "
                "the sandbox needs Linux namespaces (root, or unprivileged user namespaces enabled), "
                "pivot_root and seccomp; it does not run code with less"
            )
        for box in self.boxes:
            if box.pid1 is None and box.proc.returncode not in (0, -signal.SIGKILL):  # never got to isolating
                raise SandboxUnavailable(
                    f"the {box.role} sandbox did not start ({describe_exit(None, box.proc.returncode)}): "
                    f"{self._tail(box.role, 'stderr', 300) or 'no message'}"
                )
        report = parse_report(raw)
        report.flooded = flooded
        ends = [Ending(b.exit, b.proc.returncode) for b in (cand, judge)]
        return rule(self.plan, report, self.limits, not finished and not flooded, ends[0], ends[1], self._outputs(),
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
                if size > CHANNEL_CAP:
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

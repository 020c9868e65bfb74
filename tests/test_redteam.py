"""The red team's hostile candidates against the code sandbox, one test each (issue 22).

Each candidate tries to forge a passing verdict or to reach the host; each test asserts that
the verdict fails, or the attempt is contained, and names why. The table "What it
guards against" lists these tests. Real sandboxes, real files, a real listener on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers import TcpListener

from workers.sandbox import SandboxLimits, SandboxResult, root_plan, run_tests

FAST = SandboxLimits(wall_s=6.0, cpu_s=3, memory_mb=256, file_mb=1)
EXPECTED = 48151623
SECRET_TESTS = f"def test_secret():\n    got = secret()\n    assert got == {EXPECTED}, got\n"


def run(code: str, tests: str = SECRET_TESTS, **kw: bool) -> SandboxResult:
    return run_tests(textwrap.dedent(code), textwrap.dedent(tests), FAST, **kw)


def _pid_namespaces_alive(r: SandboxResult) -> list[str]:
    wanted = set(r.isolation["pid_namespaces"].split())
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") in wanted:
                    alive.append(entry)
            except OSError:
                continue
    return alive


# --- verdict forgery --------------------------------------------------------------------------


def test_gc_debug_saveall_frame_walk_finds_no_judge() -> None:
    """gc.DEBUG_SAVEALL keeps collected frames; their f_back chains reach only the candidate's
    own process, which holds no test, no expected value and no result channel."""
    code = """
    import gc, sys
    def secret():
        gc.set_debug(gc.DEBUG_SAVEALL)
        def make_cycle():
            f = sys._getframe()
            f.f_locals["me"] = f
        make_cycle()
        gc.collect()
        seen, found = set(), []
        frames = [o for o in gc.garbage if type(o).__name__ == "frame"] + [sys._getframe()]
        for f in frames:
            while f is not None and id(f) not in seen:
                seen.add(id(f))
                for c in f.f_code.co_consts:
                    if type(c) is int and c > 1000:
                        found.append(c)
                found += [v for v in f.f_locals.values() if type(v) is int and v > 1000]
                f = f.f_back
        print("found", found, "frames", len(seen))
        return max(found) if found else None
    """
    r = run(code)
    assert not r.ok and "AssertionError" in r.reason
    assert str(EXPECTED) not in r.stdout and "frames" in r.stdout


def test_proc_task_mem_holds_no_key() -> None:
    """/proc/self/task/1/mem (and every /proc path) does not exist: there is no /proc."""
    code = """
    def secret():
        out = []
        for p in ("/proc/self/task/1/mem", "/proc/self/mem", "/proc/1/mem", "/proc/self/environ"):
            try:
                open(p, "rb").read(16)
                out.append(p + " OPENED")
            except OSError as e:
                out.append(f"{p}: {e.strerror}")
        return out
    """
    r = run(code)
    assert not r.ok and "OPENED" not in r.reason
    assert r.reason.count("No such file or directory") == 4, r.reason


def test_expected_constants_are_not_in_the_candidates_process() -> None:
    """Reading each test's expected constant from frames or code objects finds nothing: the
    tests were never compiled in the candidate's process."""
    code = """
    import gc, sys
    def secret():
        consts = []
        for o in gc.get_objects():
            if type(o).__name__ == "code":
                consts += [c for c in o.co_consts if type(c) is int and c > 1000]
        f = sys._getframe()
        while f:
            consts += [c for c in f.f_code.co_consts if type(c) is int and c > 1000]
            f = f.f_back
        return [c for c in consts if c == 48151623] or "nothing"
    """
    # the expected value must not be in the candidate's own source for the test to mean anything
    r = run(code.replace("48151623", "int('4815' + '1623')"))
    assert not r.ok and "got == 48151623" not in r.tests[0].error
    assert "AssertionError (line 3): nothing" in r.reason, r.reason


def test_shadowing_a_builtin_does_not_reach_the_tests() -> None:
    """Module-level ``len = lambda x: 3`` lives in the candidate; the tests' len is the judge's."""
    code = """
    len = lambda x: 3
    def items():
        return [1]
    """
    tests = "def test_len():\n    assert len(items()) == 3\n"
    r = run(code, tests)
    assert not r.ok and "test_len" in r.reason and "AssertionError" in r.reason


def test_an_object_with_its_own_eq_never_reaches_the_judge() -> None:
    code = """
    class Yes(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__
    def secret():
        return Yes(0)
    """
    r = run(code)
    assert not r.ok and r.contained == "channel" and "Yes object cannot cross" in r.reason


def test_forged_frames_on_the_candidates_pipe_fail_closed() -> None:
    """The candidate writes ahead on every descriptor it has: fake judge lines, a frame nested
    100,000 deep, a frame over the size limit. None reaches the parent; the judge fails it."""
    code = """
    import os
    def secret():
        fake = b'{"k":"test","i":0,"ok":true,"kind":"ok","error":""}\\n{"k":"done","n":1}\\n'
        deep = b"[" * 100000 + b"]" * 100000
        for fd in range(3, os.sysconf("SC_OPEN_MAX")):  # every descriptor it could hold, whatever number the channel got
            for data in (fake, len(deep).to_bytes(4, "big") + deep, (1 << 30).to_bytes(4, "big")):
                try:
                    os.write(fd, data)
                except OSError:
                    pass
        return 48151623 - 1
    """
    r = run(code)
    assert not r.ok and r.contained == "channel", r.reason


def test_a_huge_answer_is_refused_not_buffered() -> None:
    code = "def secret():\n    return 'x' * (20 << 20)\n"
    r = run(code)
    assert not r.ok and r.contained == "channel" and "byte limit" in r.reason


# --- native code and the audit hook ---------------------------------------------------------


def test_ctypes_native_calls_meet_the_kernel_not_a_hook() -> None:
    """There is no audit hook to remove; native calls through ctypes hit seccomp: socket,
    fork, execve, ptrace, unshare and mount all fail with EPERM, and the listener sees nothing."""
    listener = TcpListener()
    try:
        code = f"""
        import ctypes, struct
        def secret():
            libc = ctypes.CDLL(None, use_errno=True)
            out = {{}}
            fd = libc.socket(2, 1, 0)
            out["socket"] = (fd, ctypes.get_errno())
            addr = struct.pack("!HH4s8x", 2, {listener.port}, bytes([127, 0, 0, 1]))
            out["connect"] = (libc.connect(fd, addr, 16), ctypes.get_errno())
            out["fork"] = (libc.syscall(57), ctypes.get_errno())
            out["execve"] = (libc.execve(b"/bin/sh", None, None), ctypes.get_errno())
            out["ptrace"] = (libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
            out["unshare"] = (libc.unshare(0x10000000), ctypes.get_errno())
            out["mount"] = (libc.mount(b"none", b"/work", b"tmpfs", 0, None), ctypes.get_errno())
            return out
        """
        tests = "def test_escape():\n    out = secret()\n    assert out == 'escaped', out\n"
        r = run(code, tests)
        time.sleep(0.3)
        assert not r.ok and listener.accepted == 0
        for call in ("socket", "fork", "execve", "ptrace", "unshare", "mount"):
            assert f"'{call}': (-1, 1)" in r.reason, (call, r.reason)  # -1, EPERM
    finally:
        listener.close()


def test_a_native_module_written_to_the_work_dir_cannot_be_loaded() -> None:
    """/work is noexec: a copy of a real extension module there fails to map."""
    code = """
    import glob, os, sys, importlib.util
    def secret():
        src = glob.glob(os.path.dirname(os.__file__) + "/lib-dynload/_json*.so")[0]
        data = open(src, "rb").read()
        open("/work/_evil.so", "wb").write(data)
        spec = importlib.util.spec_from_file_location("_json", "/work/_evil.so")
        importlib.util.module_from_spec(spec)
        return "loaded"
    """
    r = run(code)
    assert not r.ok and "failed to map segment" in r.reason, r.reason


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the hostile shared object")
def test_a_hostile_shared_object_never_runs_its_constructor(tmp_path: Path) -> None:
    """A .so whose constructor writes a marker on the host and runs /bin/sh: written to /work
    and loaded with ctypes, it fails to map (noexec); the marker never appears."""
    marker = tmp_path / "constructor-ran"
    src = tmp_path / "evil.c"
    src.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "__attribute__((constructor)) static void pwn(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("x", f); fclose(f); }}\n'
        f'  system("touch {marker}");\n}}\n'
    )
    so = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True, timeout=60)
    blob = so.read_bytes().hex()
    code = f"""
    import ctypes
    def secret():
        open("/work/evil.so", "wb").write(bytes.fromhex({blob!r}))
        ctypes.CDLL("/work/evil.so")
        return "loaded"
    """
    r = run(code)
    assert not r.ok and "failed to map segment" in r.reason, r.reason
    assert not marker.exists()


# --- reads outside ---------------------------------------------------------------------------


def test_proc_task_root_does_not_exist() -> None:
    code = """
    def secret():
        try:
            return open("/proc/self/task/1/root/etc/passwd").read()
        except OSError as e:
            return e.strerror
    """
    r = run(code)
    assert not r.ok and "No such file or directory" in r.reason


def test_dotdot_through_symlinks_reaches_nothing() -> None:
    """``..`` after a symlink, and symlinks the code makes in /work, lead only into the new root."""
    code = """
    import os
    def secret():
        os.symlink("/etc", "/work/etc")
        os.symlink("../../../../../../etc/passwd", "/work/up")
        out = []
        for p in ("/usr/lib/ssl/certs/../../passwd", "/work/etc/passwd", "/work/up", "/lib/../etc/shadow",
                  "/usr/lib/x86_64-linux-gnu/../../../etc/passwd"):
            try:
                out.append(p + " READ " + open(p).read(20))
            except OSError as e:
                out.append(f"{p}: {e.strerror}")
        return out
    """
    r = run(code)
    assert not r.ok and " READ " not in r.reason
    assert r.reason.count("No such file or directory") == 5, r.reason


def test_sqlite_attach_cannot_open_host_databases(tmp_path: Path) -> None:
    host_db = tmp_path / "journal.sqlite"
    with sqlite3.connect(host_db) as db:
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('task', 'SECRET-TASK-ROW')")
    code = f"""
    import sqlite3
    def secret():
        db = sqlite3.connect("/work/mine.sqlite")
        db.execute("CREATE TABLE t (x)")  # sqlite itself works, in /work
        out = []
        for path in ({str(host_db)!r}, "runs/demo.sqlite", "/root/.bash_history"):
            try:
                db.execute("ATTACH DATABASE ? AS h", (path,))
                out.append(db.execute("SELECT * FROM h.meta").fetchall())
                db.execute("DETACH DATABASE h")
            except sqlite3.Error as e:
                out.append(str(e))
        return out
    """
    r = run(code)
    assert not r.ok and "SECRET-TASK-ROW" not in repr(r.to_dict())
    assert r.reason.count("unable to open database") == 3, r.reason


def test_listing_host_directories_fails_and_the_root_holds_only_the_interpreter() -> None:
    """/home, /tmp, /tmp/ray (Ray's sockets), /run, /root's other files: absent. A full walk
    of what the code sees stays inside the interpreter's own files and /work."""
    code = """
    import os
    def listings():
        out = {}
        for d in ("/home", "/tmp", "/tmp/ray", "/run", "/dev", "/proc", "/etc", "/var", "/root/.ssh"):
            try:
                out[d] = os.listdir(d)
            except OSError as e:
                out[d] = e.strerror
        return out
    def walk():
        seen = []
        for d, dirs, files in os.walk("/"):
            seen += [os.path.join(d, n) for n in dirs + files]
        return seen
    """
    allowed = sorted({op[1] for op in root_plan()})
    tests = f"""
    ALLOWED = {allowed!r}
    def test_listings():
        out = listings()
        assert all(v == "No such file or directory" for v in out.values()), out
    def test_walk():
        outside = [p for p in walk() if p != "/work" and not p.startswith("/work/")
                   and not any(p == a or p.startswith(a + "/") or a.startswith(p + "/") for a in ALLOWED)]
        assert outside == [], outside[:20]
    """
    r = run(code, tests)
    assert r.ok, r.reason  # both tests pass: nothing outside is visible


# --- persistence -----------------------------------------------------------------------------


def test_setsid_and_fork_is_refused_by_the_filter() -> None:
    code = """
    import os
    def secret():
        os.setsid()
        return os.fork()
    """
    r = run(code)
    assert not r.ok and r.contained == "forbidden" and "os.fork" in r.reason
    assert _pid_namespaces_alive(r) == [] and r.isolation["left_after_kill"] == "0"


def test_a_setsid_sleeper_dies_with_the_namespace() -> None:
    """Without the syscall filter, the candidate leaves its session and double-forks a sleeper;
    killing PID 1 ends it: nothing of either namespace is left when the verdict returns."""
    code = """
    import os, time
    def secret():
        os.setsid()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
        time.sleep(0.2)
        return 48151623
    """
    r = run(code, syscall_filter=False)
    assert r.ok, r.reason  # the answer is right; the sleeper was its own business
    assert _pid_namespaces_alive(r) == [] and r.isolation["left_after_kill"] == "0"
    assert len(r.isolation["pid_namespaces"].split()) == 2


def test_a_sleeping_candidate_is_killed_at_the_deadline_with_nothing_left() -> None:
    code = """
    import threading, time
    def secret():
        threading.Thread(target=time.sleep, args=(120,)).start()
        time.sleep(120)
    """
    t0 = time.monotonic()
    r = run_tests(textwrap.dedent(code), SECRET_TESTS, SandboxLimits(wall_s=1.5, cpu_s=2, memory_mb=256))
    assert not r.ok and r.contained == "timeout" and time.monotonic() - t0 < 8
    assert _pid_namespaces_alive(r) == []


def test_kill_everything_reaches_only_the_candidate() -> None:
    """kill(-1) from the candidate reaches only its own namespace, where it is alone (PID 1
    ignores its own SIGKILL); the judge is untouched and reports every test."""
    code = """
    import os, signal
    def secret():
        os.kill(-1, signal.SIGKILL)
        os.kill(1, signal.SIGKILL)
        return 48151623
    """
    tests = SECRET_TESTS + "\ndef test_again():\n    assert secret() == 48151623\n"
    r = run(code, tests)
    assert not r.ok and len(r.tests) == 2 and not any(t.ok for t in r.tests)
    assert all("No such process" in t.error for t in r.tests), r.tests


def test_the_candidate_cannot_see_the_parent_or_the_judge() -> None:
    code = f"""
    import os
    def secret():
        out = []
        for pid in ({os.getpid()}, 2, 3):
            try:
                os.kill(pid, 0)
                out.append(f"{{pid}} visible")
            except OSError as e:
                out.append(f"{{pid}}: {{e.strerror}}")
        return [os.getpid(), os.getppid(), out]
    """
    r = run(code)
    # it is PID 1, its parent is outside its namespace (0), and no other PID exists there
    assert not r.ok and "visible" not in r.reason and "[1, 0, [" in r.reason, r.reason


def test_the_readme_table_lists_every_red_team_test() -> None:
    """The sandbox page's "What it guards against" table is made from this file: one row per test."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "sandbox.md").read_text()
    section = page.split("## What it guards against", 1)[1].split("## What it does not guard against", 1)[0]
    here = [n for n in globals() if n.startswith("test_") and n != "test_the_readme_table_lists_every_red_team_test"]
    missing = [n for n in here if f"`{n}`" not in section]
    assert missing == [], f"add a row to the table in docs/sandbox.md for: {missing}"

"""The code sandbox and the ``code.function`` verifier: hostile code is contained with a failing
verdict that names the reason, and the host is unharmed. Real sandboxed subprocesses (a
candidate and a judge per run), real sockets on 127.0.0.1, real files; short limits keep the
file fast. The verdict-forgery and escape attempts of the red team are in tests/test_redteam.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import TcpListener

from tinyfleet_core.errors import InputError
from workers.builtin import default_registry
from workers.code import CodeInput, CodeOutput, CodeTestsVerifier
from workers.registry import validate_payload
from workers.sandbox import (
    TOPLEVEL_TEST,
    SandboxLimits,
    SandboxUnavailable,
    plan_tests,
    run_tests,
)

FAST = SandboxLimits(wall_s=4.0, cpu_s=2, memory_mb=256, file_mb=1)
ADD_TESTS = "def test_small():\n    assert add(1, 2) == 3\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
GOOD_ADD = "def add(a, b):\n    return a + b\n"
FAKE_SECRET = "sk-test-FAKE-0123456789abcdef-do-not-leak"


def run(code: str, tests: str = ADD_TESTS, limits: SandboxLimits = FAST, **kw: bool):  # type: ignore[no-untyped-def]
    """``syscall_filter=False`` in ``kw`` leaves out seccomp, to show the other layers hold alone."""
    return run_tests(textwrap.dedent(code), tests, limits, **kw)


def everything(result) -> str:  # type: ignore[no-untyped-def]
    return repr(result.to_dict())


# --- ordinary code -------------------------------------------------------------------------


def test_good_code_passes() -> None:
    r = run(GOOD_ADD)
    assert r.ok, r.reason
    assert [t.name for t in r.tests] == ["test_small", "test_zero"] and all(t.ok for t in r.tests)
    assert r.reason == "all 2 tests passed"


def test_wrong_code_fails_naming_the_test() -> None:
    r = run("def add(a, b):\n    return a * b\n")
    assert not r.ok and r.contained is None
    assert "test_small" in r.reason and "AssertionError (line 2)" in r.reason
    assert [t.ok for t in r.tests] == [False, True]


def test_top_level_asserts_count_as_one_test() -> None:
    tests = "assert add(2, 2) == 4\n\ndef test_neg():\n    assert add(-1, 1) == 0\n"
    assert plan_tests(tests).names == [TOPLEVEL_TEST, "test_neg"]
    assert run(GOOD_ADD, tests).ok
    bad = run("def add(a, b):\n    return 4\n", tests)
    assert not bad.ok and [t.ok for t in bad.tests] == [True, False]


def test_code_that_fails_to_load_fails_every_test() -> None:
    r = run("def add(a, b)\n    return a + b\n")
    assert not r.ok and "failed to load" in r.reason and "SyntaxError" in r.reason
    r = run("raise RuntimeError('boom')\n")
    assert not r.ok and "RuntimeError" in r.reason and not any(t.ok for t in r.tests)


def test_ordinary_stdlib_code_works() -> None:
    code = """
    import math, re, collections, itertools, functools, heapq, hashlib
    from typing import NamedTuple, TypeVar
    from dataclasses import dataclass
    T = TypeVar("T")
    P = collections.namedtuple("P", "x y")
    class Q(NamedTuple):
        a: int
    @dataclass
    class D:
        v: int
    @functools.lru_cache
    def add(a, b):
        print("adding", a, b)
        with open("scratch.txt", "w") as f:
            f.write(hashlib.md5(b"x").hexdigest())
        try:
            raise ValueError("inner")
        except ValueError:
            pass
        return int(math.fsum([a, b])) + len(re.findall("z", "")) + P(0, 0).x + Q(0).a + D(0).v
    """
    r = run(code)
    assert r.ok, r.reason
    assert "adding 1 2" in r.stdout


def test_bad_tests_are_an_input_error() -> None:
    for tests, words in [
        ("def test_x(:\n  pass", "not valid Python"),
        ("x = 1\n", "no test found"),
        ("def test_x(a):\n    assert a\n", "takes arguments"),
        ("def test_x():\n    yield 1\n", "generator"),
    ]:
        with pytest.raises(InputError, match=words):
            plan_tests(tests)


# --- hostile code: each contained, failing, with the reason named ----------------------------


def test_infinite_loop_hits_the_cpu_limit() -> None:
    # a generous wall limit, so that on a loaded machine the CPU limit still bites first
    r = run("def add(a, b):\n    while True:\n        pass\n", limits=SandboxLimits(wall_s=15, cpu_s=1, memory_mb=256))
    assert not r.ok and r.contained == "cpu" and "CPU time limit (1 s)" in r.reason
    assert "test_small" in r.reason


def test_sleeping_forever_hits_the_wall_timeout() -> None:
    t0 = time.monotonic()
    r = run("import time\ndef add(a, b):\n    time.sleep(60)\n", limits=SandboxLimits(wall_s=1.0, cpu_s=2, memory_mb=256))
    assert not r.ok and r.contained == "timeout" and "wall-clock timeout" in r.reason
    assert time.monotonic() - t0 < 10  # the group was killed, not waited for


def test_fork_bomb_is_denied() -> None:
    r = run("import os\ndef add(a, b):\n    while True:\n        os.fork()\n")
    assert not r.ok and r.contained == "forbidden" and "os.fork" in r.reason
    r = run("import subprocess\ndef add(a, b):\n    subprocess.run(['sh', '-c', ':(){ :|:& };:'])\n")
    assert not r.ok and r.contained == "forbidden" and "subprocess" in r.reason
    r = run("import os\ndef add(a, b):\n    rc = os.system('true')\n    assert rc == 0, rc\n    return a + b\n")
    assert not r.ok and "rc = os.system" not in r.reason and "assert rc == 0" in r.reason


def test_thread_bomb_is_bounded() -> None:
    code = """
    import threading, time
    def add(a, b):
        while True:
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    """
    r = run(code)
    assert not r.ok and "can't start new thread" in r.reason


def test_memory_bomb_hits_the_memory_limit() -> None:
    r = run("def add(a, b):\n    return len(bytearray(10 ** 10))\n")
    assert not r.ok and r.contained == "memory" and "memory limit (256 MiB)" in r.reason
    r = run("def add(a, b):\n    keep = []\n    while True:\n        keep.append(' ' * 10 ** 7)\n")
    assert not r.ok and r.contained == "memory"


def test_huge_output_hits_the_output_limit_and_is_truncated() -> None:
    r = run("def add(a, b):\n    while True:\n        print('x' * 10000)\n")
    assert not r.ok and r.contained == "output" and "output/file size limit (1 MiB)" in r.reason
    assert len(r.stdout) < FAST.output_chars + 100 and "truncated" in r.stdout


def test_writing_outside_the_work_directory_is_denied(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    for attempt in [f"open({str(target)!r}, 'w').write('x')", "open('../../../tmp/pwned-by-sandbox', 'w')",
                    "open('/usr/pwned-by-sandbox', 'w')"]:
        r = run(f"def add(a, b):\n    {attempt}\n    return a + b\n")
        assert not r.ok and ("No such file or directory" in r.reason or "Read-only file system" in r.reason), r.reason
    assert not target.exists() and not Path("/tmp/pwned-by-sandbox").exists() and not Path("/usr/pwned-by-sandbox").exists()


def test_the_mounts_alone_keep_writes_in() -> None:
    """Without the syscall filter the read-only root still refuses a write to an existing
    directory, and /work is writable but noexec."""
    stdlib = os.path.dirname(os.__file__)
    code = f"""
    import os
    def add(a, b):
        open("/work/scratch", "w").write("ok")
        assert open("/work/scratch").read() == "ok"
        open({stdlib + '/pwned.py'!r}, "w").write("x")
        return a + b
    """
    r = run(code, syscall_filter=False)
    assert not r.ok and "Read-only file system" in r.reason, r.reason
    assert not os.path.exists(stdlib + "/pwned.py")


def test_secrets_in_the_environment_never_reach_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", FAKE_SECRET)
    code = f"""
    import os
    def add(a, b):
        print(dict(os.environ))
        print(os.environ.get("OPENAI_API_KEY"))
        for path in ("/proc/self/environ", "/proc/1/environ", "/proc/{os.getpid()}/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as e:
                print("denied", path, e)
        assert "OPENAI_API_KEY" in os.environ, sorted(os.environ)
        return a + b
    """
    r = run(code)
    assert not r.ok
    assert FAKE_SECRET not in everything(r)
    assert "PATH" in r.stdout and "OPENAI_API_KEY" not in r.stdout.split("denied")[0]
    assert "denied /proc/self/environ [Errno 2] No such file or directory" in r.stdout  # there is no /proc


@pytest.mark.parametrize("syscall_filter", [True, False], ids=["all-layers", "no-seccomp"])
def test_sockets_are_cut_off(syscall_filter: bool) -> None:
    listener = TcpListener()
    try:
        probe = socket.create_connection(("127.0.0.1", listener.port), timeout=2)  # the listener works
        probe.close()
        time.sleep(0.3)
        assert listener.accepted == 1
        code = f"""
        import socket
        def add(a, b):
            s = socket.create_connection(("127.0.0.1", {listener.port}), timeout=1)
            s.sendall(b"stolen")
            return a + b
        """
        r = run(code, syscall_filter=syscall_filter)
        time.sleep(0.3)
        assert not r.ok and listener.accepted == 1
        if syscall_filter:  # socket() itself is refused
            assert r.contained == "forbidden" and "socket.create_connection" in r.reason
        else:  # the empty network namespace
            assert "unreachable" in r.reason.lower()
    finally:
        listener.close()


@pytest.mark.parametrize("syscall_filter", [True, False], ids=["all-layers", "no-seccomp"])
def test_killing_host_processes_fails(syscall_filter: bool) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        code = f"""
        import os, signal
        def add(a, b):
            os.kill({victim.pid}, signal.SIGKILL)
            os.kill(os.getppid(), signal.SIGKILL)
            return a + b
        """
        r = run(code, syscall_filter=syscall_filter)
        assert not r.ok and "ProcessLookupError" in r.reason  # the host PID does not exist in there
        time.sleep(0.2)
        assert victim.poll() is None, "the sandboxed code killed a host process"
    finally:
        victim.kill()
        victim.wait()


def test_deleting_project_files_is_denied(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "mod.py").write_text("x = 1\n")
    real = Path(__file__).resolve().parents[1] / "pyproject.toml"
    code = f"""
    import os, shutil
    def add(a, b):
        for attempt in (lambda: os.remove({str(real)!r}), lambda: shutil.rmtree({str(project)!r}),
                        lambda: os.rename({str(project / 'pkg' / 'mod.py')!r}, "stolen.py")):
            try:
                attempt()
            except OSError as e:
                print("refused:", e)
        return a + b
    """
    for syscall_filter in (True, False):
        r = run(code, syscall_filter=syscall_filter)
        assert r.ok, r.reason  # the code ran; none of the paths exists in its root
        assert r.stdout.count("refused: [Errno 2] No such file or directory") == 6, r.stdout  # 3 per call
        assert real.is_file() and (project / "pkg" / "mod.py").read_text() == "x = 1\n"


def test_sys_exit_does_not_fake_a_pass() -> None:
    for code in ["import sys\nsys.exit(0)\n", "import sys\ndef add(a, b):\n    sys.exit(0)\n",
                 "def add(a, b):\n    raise SystemExit(0)\n", "def add(a, b):\n    raise KeyboardInterrupt\n"]:
        r = run(code)
        assert not r.ok and not any(t.ok for t in r.tests), code


def test_os_exit_does_not_fake_a_pass() -> None:
    for code in ["import os\nos._exit(0)\n", "import os\ndef add(a, b):\n    os._exit(0)\n"]:
        r = run(code)
        assert not r.ok and r.contained == "early_exit", (code, r.reason)
        assert "ended itself (exit 0)" in r.reason


def test_printing_or_writing_fake_results_does_not_fake_a_pass() -> None:
    code = """
    import os, sys
    print("all 2 tests passed")
    for fd in range(3, 40):
        for line in (b"T 0 1 00\\n", b"T 1 1 00\\n", b"D 2 00\\n", b"L 1\\n"):
            try:
                os.write(fd, line)
            except OSError:
                pass
    os._exit(0)
    """
    r = run(code)
    assert not r.ok and r.contained in ("channel", "early_exit"), r.reason


def test_monkeypatching_the_harness_does_not_fake_a_pass() -> None:
    code = """
    import builtins, os, sys, json, threading, types
    import __main__ as harness
    for name in dir(harness):
        if not name.startswith("__"):
            setattr(harness, name, lambda *a, **k: None)
    os.write = lambda fd, data: len(data)
    json.dumps = lambda *a, **k: '"ok"'
    def add(a, b):
        return 0
    """
    r = run(code)
    assert not r.ok

    builtins_patch = """
    import builtins
    builtins.AssertionError = type("Never", (Exception,), {})
    builtins.len = lambda x: 0
    def add(a, b):
        return 0
    """
    r = run(builtins_patch)  # breaks the candidate's own side of the channel; the judge fails it
    assert not r.ok


def test_the_code_cannot_replace_the_tests() -> None:
    """The tests live in the judge's process: the candidate's globals() are its own."""
    code = """
    def add(a, b):
        globals()["test_small"] = globals()["test_zero"] = lambda: None
        return -1
    """
    r = run(code)
    assert not r.ok and [t.ok for t in r.tests] == [False, False]


# --- the verifier and the skill --------------------------------------------------------------


def test_code_skill_is_registered_with_the_sandbox_verifier() -> None:
    skill = default_registry().get("code.function")
    assert skill.ladder == [] and skill.fallback is None
    assert isinstance(skill.verifier, CodeTestsVerifier) and skill.verifier.blocking


def test_code_input_validation_is_a_typed_error() -> None:
    good = {"signature": "def add(a: int, b: int) -> int", "doc": "sum", "tests": ADD_TESTS}
    assert validate_payload(CodeInput, good, what="input").name == "add"  # type: ignore[attr-defined]
    for bad, words in [
        ({**good, "signature": "add(a, b)"}, "signature"),
        ({**good, "signature": "def add(a b)"}, "signature"),
        ({**good, "tests": "assert (("}, "not valid Python"),
        ({**good, "tests": "x = 1"}, "no test found"),
        ({"signature": "def f()", "doc": ""}, "tests"),
        ({**good, "extra": 1}, "extra"),
    ]:
        with pytest.raises(InputError, match=words):
            validate_payload(CodeInput, bad, what="input")


def test_verifier_verdicts_carry_per_test_results() -> None:
    inp = CodeInput(signature="def add(a, b)", doc="", tests=ADD_TESTS)
    v = CodeTestsVerifier(FAST, parallel=2)
    good, wrong, missing, broken = v.check_batch([
        (inp, CodeOutput(code=GOOD_ADD)),
        (inp, CodeOutput(code="def add(a, b):\n    return a * b\n")),
        (inp, CodeOutput(code="def plus(a, b):\n    return a + b\n")),
        (inp, CodeOutput(code="def add(a, b) return a\n")),
    ])
    assert good.ok and good.score == 1.0 and good.verifier == "code.tests"
    assert [t["ok"] for t in good.details["tests"]] == [True, True]
    assert not wrong.ok and wrong.score == 0.5 and wrong.details["tests"][0]["error"].startswith("AssertionError")
    assert not missing.ok and "does not define add()" in missing.reason
    assert not broken.ok and "does not parse" in broken.reason


def test_humaneval_subset_accepts_canonical_and_rejects_mutants() -> None:
    from workers.humaneval_check import run_check

    report = run_check(limit=10, limits=SandboxLimits(wall_s=10, cpu_s=5))
    assert report["canonical"]["accepted"] == report["canonical"]["total"] == 10, report["canonical"]["failures"]
    assert report["mutants"]["total"] >= 20
    assert report["mutants"]["rejected"] == report["mutants"]["total"], report["mutants"]["survivors"]


def test_filling_the_disk_is_bounded() -> None:
    code = """
    def add(a, b):
        for i in range(10 ** 6):
            with open(f"f{i}", "w") as f:
                f.write("x" * 500_000)
    """
    r = run(code, limits=SandboxLimits(wall_s=8, cpu_s=4, memory_mb=256, file_mb=1, disk_mb=8))
    assert not r.ok
    if "tmpfs" in r.isolation.get("filesystem", ""):
        assert "No space left on device" in r.reason or "Too many open files" in r.reason


def test_stdin_holds_nothing_of_the_config() -> None:
    code = """
    import sys, os
    def add(a, b):
        print("stdin:", sys.stdin.closed, os.read(0, 100))
        return a + b
    """
    r = run(code)
    assert r.ok, r.reason
    assert "stdin: True b''" in r.stdout


def test_reading_secret_files_is_denied(tmp_path: Path) -> None:
    secret_file = tmp_path / ".env"
    secret_file.write_text(f"OPENAI_API_KEY={FAKE_SECRET}\n")
    code = f"""
    def add(a, b):
        print(open({str(secret_file)!r}).read())
        return a + b
    """
    r = run(code)
    assert not r.ok and "No such file or directory" in r.reason  # the host's /tmp is not in its root
    assert FAKE_SECRET not in everything(r)


# --- the plain-data channel ------------------------------------------------------------------


def test_plain_data_crosses_the_channel_intact() -> None:
    code = """
    def echo(x):
        return x
    def make():
        return {"t": (1, 2.5, -0.0, None, True), "s": {1, 2}, "f": frozenset({"a"}), "b": b"\\x00\\xff",
                "n": [[[]]], (1, "k"): 3j, "big": 10 ** 300, "u": "\\u00e9\\U0001f600"}
    LIMIT = 7
    """
    tests = """
    def test_types():
        v = make()
        assert type(v["t"]) is tuple and v["t"] == (1, 2.5, -0.0, None, True) and type(v["t"][4]) is bool
        assert type(v["s"]) is set and type(v["f"]) is frozenset and v["b"] == b"\\x00\\xff"
        assert v[(1, "k")] == 3j and v["big"] == 10 ** 300 and v["u"] == "\\u00e9\\U0001f600"
    def test_echo():
        for x in [0, -1, 1.5, float("inf"), "", "x" * 10000, [1, [2, (3,)]], {"a": {1: None}}, set(), b""]:
            assert echo(x) == x and type(echo(x)) is type(x)
    def test_kwargs_and_data():
        assert echo(x=(1,)) == (1,) and LIMIT == 7
    """
    r = run(textwrap.dedent(code), textwrap.dedent(tests))
    assert r.ok, r.reason


def test_objects_do_not_cross() -> None:
    """An object with its own __eq__ cannot reach the judge; the verdict fails and says why."""
    code = """
    class Always:
        def __eq__(self, other):
            return True
    def add(a, b):
        return Always()
    """
    r = run(code)
    assert not r.ok and r.contained == "channel" and "Always object cannot cross" in r.reason


def test_a_test_that_passes_a_callback_is_refused_as_unexpressible() -> None:
    code = "def apply(f, x):\n    return f(x)\n"
    tests = "def test_apply():\n    assert apply(lambda v: v + 1, 1) == 2\n"
    r = run(code, tests)
    assert not r.ok and r.contained == "unexpressible" and "function object cannot cross" in r.reason


def test_candidate_exceptions_reach_the_tests_but_not_as_control_flow() -> None:
    code = """
    def parse(s):
        if not s:
            raise ValueError("empty")
        return int(s)
    def stop(x):
        raise StopIteration
    """
    tests = """
    def test_raises():
        try:
            parse("")
        except ValueError as e:
            assert "empty" in str(e)
        else:
            raise AssertionError("no ValueError")
    def test_stop_does_not_end_loops():
        seen = [stop(x) for x in [1]]
    """
    r = run(textwrap.dedent(code), textwrap.dedent(tests))
    assert [t.ok for t in r.tests] == [True, False]
    assert "StopIteration" in r.tests[1].error and "CandidateError" in r.tests[1].error


def test_without_namespaces_or_seccomp_the_sandbox_refuses(tmp_path: Path) -> None:
    """A real refusal: the run happens in a process whose own seccomp filter denies unshare."""
    script = tmp_path / "refuse.py"
    script.write_text(textwrap.dedent("""
        import json
        from workers.sandbox import seccomp as sandbox_seccomp
        from workers.sandbox import SandboxUnavailable, root_plan, run_tests
        root_plan()  # found with ldd before the filter goes on
        # the sandbox's own list plus what spawning its children needs, and still no unshare
        sandbox_seccomp.install({**sandbox_seccomp.ALLOWED_X86_64, "vfork": 58, "execve": 59, "prctl": 157,
                                       "arch_prctl": 158})
        try:
            run_tests("def add(a, b):\\n    return a + b\\n", "def test_a():\\n    assert add(1, 2) == 3\\n")
        except SandboxUnavailable as e:
            print("REFUSED", e)
        else:
            print("RAN")  # never: it would have run the code with fewer layers
    """))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=root, timeout=60, check=False)
    assert "REFUSED" in out.stdout and "unshare" in out.stdout, out.stdout + out.stderr
    assert issubclass(SandboxUnavailable, Exception)

"""Run untrusted Python (candidate code) against its tests in two separate sandboxes.

:func:`run_tests` starts ``_child.py`` twice, each in a fresh interpreter (``-I -S -B``) with
an allowlisted environment: the **candidate** process loads the code and then only answers
calls; the **judge** process runs the tests, which call the candidate's functions through a
pipe that carries plain data only (``codec.py``: numbers, str, bytes, list, tuple, dict, set,
None, bool; no pickle, no object with its own ``__eq__``). Assertions run in the judge, which
the candidate cannot reach: different process, different PID, mount and network namespaces;
it holds no descriptor of the judge's result pipe.

Each process is PID 1 of its own PID namespace, lives in a new root (``pivot_root``) holding
only the interpreter's own files, read-only, and ``/work`` (tmpfs, ``noexec,nosuid,nodev``),
without ``/proc``, ``/dev``, ``/tmp``, ``/run`` or any home directory; it has no capabilities,
``no_new_privs``, rlimits and a seccomp syscall allowlist (``seccomp.py``). At the end, or at
the wall-clock deadline, the parent kills each PID 1 through a pidfd, which ends every process
of that namespace, and checks that no process of either namespace is left.

Where the kernel refuses a layer (no namespaces, no seccomp, not x86_64), :func:`run_tests`
raises :class:`SandboxUnavailable` instead of running with less. What this guards against, and
what it does not, is in docs/sandbox.md.

The rooms, parent side: ``limits`` (limits, containment kinds, the refusal error), ``plan``
(reading the tests), ``rootfs`` (the new root's contents), ``launch`` (starting and tending
the two processes), ``verdict`` (the judge's report and the ruling). Child side, run as files
by a sandboxed interpreter that never imports this package: ``_child.py`` (the entry),
``_isolation.py`` (the layers), ``_roles.py`` (candidate and judge), and the two stdlib-only
modules both sides share, ``codec.py`` and ``seccomp.py``.
"""

from __future__ import annotations

from workers.sandbox.launch import run_tests
from workers.sandbox.limits import Containment, SandboxLimits, SandboxUnavailable
from workers.sandbox.plan import TOPLEVEL_TEST, TestPlan, plan_tests
from workers.sandbox.rootfs import root_plan
from workers.sandbox.verdict import SandboxResult, TestOutcome

__all__ = [
    "TOPLEVEL_TEST",
    "Containment",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "TestOutcome",
    "TestPlan",
    "plan_tests",
    "root_plan",
    "run_tests",
]

"""The process side of the code sandbox (see ``__init__.py`` and docs/sandbox.md).

Run as ``python -I -S -B _child.py`` by :func:`workers.sandbox.run_tests`, twice per
verification: once as the **candidate** (loads the candidate's code, then only answers calls)
and once as the **judge** (runs the tests, which call the candidate's functions through the
plain-data channel of ``codec.py``, and reports each outcome to the parent). The two never
share a process, a PID namespace or a filesystem; the candidate holds neither the judge's
result pipe nor any way to name the judge.

This file and the siblings it imports by file name (``_isolation.py``, ``_roles.py``,
``codec.py``, ``seccomp.py``) use only the standard library: the sandboxed interpreter never
imports the ``workers`` package or anything installed. No file of this directory may share a
name with a standard-library module, since the directory is on ``sys.path`` while they load.

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
5. the seccomp allowlist of ``seccomp.py``;
6. the role's work (``_roles.py``).

Steps 2-5 are ``_isolation.py``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _isolation
import _roles

del sys.path[0]

_SETUP_FAILED = 71


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        _isolation.isolate(cfg)
    except (OSError, ValueError) as e:
        os.write(2, f"sandbox setup failed: {e}\n".encode())
        os._exit(_SETUP_FAILED)
    if cfg["role"] == "candidate":
        _roles.candidate(cfg)
    else:
        _roles.judge(cfg)
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

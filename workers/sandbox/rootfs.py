"""The new root of each sandboxed process, as the parent computes it: the interpreter's own
files (the stdlib without site-packages, the shared libraries it links) and nothing else.

The child (``_isolation.py``) carries the plan out: it mounts a tmpfs, recreates the
directories and symlinks, binds the files and trees read-only, hides the site-packages and
``pivot_root``s into it.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import sysconfig

from workers.sandbox.limits import SandboxUnavailable

__all__ = ["root_plan"]


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

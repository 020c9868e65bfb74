"""The layers of one sandboxed process, applied in order before any untrusted byte runs
(steps 2-5 of ``_child.py``): namespaces and the relay, the new root, capabilities and
``no_new_privs``, rlimits, the seccomp allowlist. Any layer that cannot be applied raises
:class:`SetupError`; the process then ends with status 71 and the parent refuses the run.

Child side: imported by ``_child.py`` by file name (the top-level module ``_isolation``) in the
sandboxed interpreter, so it imports only the standard library and its sibling ``seccomp``.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Any

import seccomp

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_SYS_PIVOT_ROOT, _SYS_MOUNT_SETATTR, _SYS_CAPSET = 155, 442, 126
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP = 1, 24


class SetupError(OSError):
    """A layer of the sandbox could not be applied; the process ends with status 71."""


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


def isolate(cfg: dict[str, Any]) -> None:
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
        seccomp.install()

"""A seccomp-BPF syscall allowlist for the sandboxed processes, built by hand (stdlib only).

The program checks the architecture (anything but x86_64 is killed: a 32-bit or x32 syscall
table would bypass the numbers below), then allows the syscalls a pure-Python computation
needs: file I/O (the filesystem it sees is read-only except a noexec tmpfs), memory, time,
signals, polling, threads. ``clone`` is allowed only with the exact flags glibc uses for a
thread, ``clone3`` answers ``ENOSYS`` (so glibc falls back to ``clone``), ``ioctl`` only for a
few terminal/fd queries. Everything else, among it every socket call, ``fork``/``vfork``,
``execve``, ``ptrace``, ``process_vm_readv``, ``mount``, ``unshare``, ``setns``, ``bpf``,
``io_uring``, ``memfd_create``, ``open_by_handle_at``, ``keyctl``, ``perf_event_open``, ``prctl``
and ``seccomp`` itself, fails with ``EPERM``.

This file is imported by the sandbox harness (``_child.py``, by file name, as the top-level
module ``seccomp``) before it seals itself (``python -I -S``), so it must import nothing outside
the standard library and nothing of this package. Only x86_64 has a table; on other machines
:func:`install` raises OSError and the sandbox refuses to run (see ``launch.py``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = ["ALLOWED_X86_64", "build_program", "install", "supported"]

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl)
ALLOWED_X86_64: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7,
    "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
    "rt_sigprocmask": 14, "rt_sigreturn": 15, "pread64": 17, "pwrite64": 18, "readv": 19,
    "writev": 20, "access": 21, "pipe": 22, "select": 23, "sched_yield": 24, "mremap": 25,
    "msync": 26, "mincore": 27, "madvise": 28, "dup": 32, "dup2": 33, "pause": 34,
    "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "exit": 60,
    "wait4": 61, "kill": 62, "uname": 63, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75,
    "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81,
    "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87, "symlink": 88,
    "readlink": 89, "chmod": 90, "fchmod": 91, "umask": 95, "gettimeofday": 96, "getrlimit": 97,
    "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104, "geteuid": 107,
    "getegid": 108, "getppid": 110, "getpgrp": 111, "setsid": 112, "getgroups": 115,
    "getresuid": 118, "getresgid": 120, "getpgid": 121, "getsid": 124, "capget": 125,
    "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigsuspend": 130, "sigaltstack": 131,
    "utime": 132, "statfs": 137, "fstatfs": 138, "getpriority": 140, "sched_getparam": 143,
    "sched_getscheduler": 145, "sched_get_priority_max": 146, "sched_get_priority_min": 147,
    "sched_rr_get_interval": 148, "setrlimit": 160, "gettid": 186, "readahead": 187,
    "getxattr": 191, "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194, "llistxattr": 195,
    "flistxattr": 196, "tkill": 200, "time": 201, "futex": 202, "sched_getaffinity": 204,
    "epoll_create": 213, "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "fadvise64": 221, "timer_create": 222, "timer_settime": 223, "timer_gettime": 224,
    "timer_getoverrun": 225, "timer_delete": 226, "clock_gettime": 228, "clock_getres": 229,
    "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234,
    "utimes": 235, "waitid": 247, "openat": 257, "mkdirat": 258, "futimesat": 261,
    "newfstatat": 262, "unlinkat": 263, "renameat": 264, "linkat": 265, "symlinkat": 266,
    "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "get_robust_list": 274, "utimensat": 280, "epoll_pwait": 281,
    "timerfd_create": 283, "eventfd": 284, "fallocate": 285, "timerfd_settime": 286,
    "timerfd_gettime": 287, "eventfd2": 290, "epoll_create1": 291, "dup3": 292, "pipe2": 293,
    "preadv": 295, "pwritev": 296, "prlimit64": 302, "getcpu": 309, "renameat2": 316,
    "getrandom": 318, "membarrier": 324, "copy_file_range": 326, "preadv2": 327, "pwritev2": 328,
    "statx": 332, "rseq": 334, "close_range": 436, "openat2": 437, "faccessat2": 439,
    "epoll_pwait2": 441,
}
_CLONE, _CLONE3, _IOCTL = 56, 435, 16
# CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID: glibc's pthread_create
_THREAD_FLAGS = 0x3D0F00
_IOCTLS = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)  # TCGETS TIOCGWINSZ FIONREAD FIONBIO FIONCLEX FIOCLEX

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG1 = 0, 4, 16, 24
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def supported() -> bool:
    """Whether this machine has a syscall table here (x86_64 Linux)."""
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def build_program(allowed: dict[str, int] | None = None) -> list[tuple[int, int, int, int]]:
    """The BPF program as (code, jt, jf, k) instructions; every jump is forward and short."""
    nrs = sorted(set((allowed or ALLOWED_X86_64).values()))
    prog: list[tuple[int, int | str, int | str, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _OFF_NR),
        (_JGE_K, 0, 1, _X32_BIT),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_JEQ_K, "clone", 0, _CLONE),
        (_JEQ_K, "ioctl", 0, _IOCTL),
        (_JEQ_K, "enosys", 0, _CLONE3),
    ]
    prog += [(_JEQ_K, "allow", 0, nr) for nr in nrs]
    prog.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    labels: dict[str, int] = {}
    labels["clone"] = len(prog)
    prog += [(_LD_W_ABS, 0, 0, _OFF_ARG0), (_JEQ_K, "allow", "deny", _THREAD_FLAGS)]
    labels["ioctl"] = len(prog)
    prog.append((_LD_W_ABS, 0, 0, _OFF_ARG1))
    prog += [(_JEQ_K, "allow", 0, cmd) for cmd in _IOCTLS]
    labels["deny"] = len(prog)
    prog.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    labels["allow"] = len(prog)
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    labels["enosys"] = len(prog)
    prog.append((_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS))

    out: list[tuple[int, int, int, int]] = []
    for i, (code, jt, jf, k) in enumerate(prog):
        jumps = [labels[j] - (i + 1) if isinstance(j, str) else j for j in (jt, jf)]
        if any(not 0 <= j <= 255 for j in jumps):
            raise ValueError(f"seccomp program: jump out of range at instruction {i}")
        out.append((code, jumps[0], jumps[1], int(k)))
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install(allowed: dict[str, int] | None = None) -> int:
    """Set ``no_new_privs`` and load the filter (``allowed``, by default the sandbox's list)
    into this process; threads started later inherit it. Returns the number of allowed
    syscalls; raises OSError."""
    if not supported():
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {platform.system()}/{platform.machine()}")
    prog = build_program(allowed)
    arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(NO_NEW_PRIVS): {os.strerror(e)}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(SET_SECCOMP): {os.strerror(e)}")
    return len(allowed or ALLOWED_X86_64) + 1  # + clone for threads

"""What a sandboxed run may use, how it can be stopped, and the error for a host that refuses a layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tinyfleet_core.errors import ConfigError

__all__ = ["CHANNEL_CAP", "SETUP_FAILED", "Containment", "SandboxLimits", "SandboxUnavailable"]

Containment = Literal[
    "timeout", "cpu", "memory", "output", "forbidden", "early_exit", "crash", "channel", "unexpressible"
]
"""Why a run was stopped or cut short (``SandboxResult.contained``)."""

CHANNEL_CAP = 1 << 20
"""Bytes of result lines the parent accepts from the judge before it calls it a flood."""
SETUP_FAILED = 71
"""The child's exit status when a layer could not be applied (``_child.py`` has its own copy)."""


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

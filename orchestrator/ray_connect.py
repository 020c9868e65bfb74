"""Where a tinyfleet driver's Ray comes from: start a private local Ray, or attach to a cluster
(an address, ``RAY_ADDRESS``, or the ``ray start`` head this user runs on this machine), with the
address probed first so that a bad one is one line within seconds, token authentication as Ray
does it, and the program's own SIGTERM handler kept while ``ray.init`` runs.

:class:`~orchestrator.ray_executor.RayExecutor` starts Ray through :func:`_init_ray`;
``_started_locally`` and ``connection`` say what happened.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfleet_core.errors import ConfigError

__all__ = ["RayTarget", "ensure_ray", "resolve_address", "CONNECT_TIMEOUT_S", "started_locally", "connection_text"]

_init_lock = threading.Lock()
_started_locally = False  # this process started a single-node local Ray (no autoscaler)


def started_locally() -> bool:
    """Whether this process started the single-node local Ray it runs on (no autoscaler)."""
    return _started_locally


def connection_text() -> str:
    """What the last start did, in words (shown by the CLI): attached where, or started."""
    return connection


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or attach to Ray. Returns True when this call started a local instance.

    ``address`` (else ``RAY_ADDRESS``, as inside ``ray job submit``):

    - ``None``: attach to the Ray that ``ray start --head`` runs on this machine if there is
      one (its address file in Ray's temp dir, and its GCS answers), else start a private
      local Ray sized to this machine, without the dashboard;
    - ``"local"``: always start a private local Ray;
    - ``"auto"``: attach to the local ``ray start`` cluster; ConfigError when there is none;
    - ``host:port`` (the GCS address ``ray start --head`` prints) or ``ray://host:port``:
      its port is probed first (:data:`CONNECT_TIMEOUT_S`), so an unreachable address is one
      ConfigError within seconds, never Ray's minutes of reconnect warnings.

    Attaching passes no resource arguments. Token authentication: a local start sets
    ``RAY_AUTH_MODE=token`` explicitly unless it is set (Ray's default, without its warning on
    every run); attaching to the cluster found on this machine turns token mode on when a token
    is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and
    ``RAY_AUTH_MODE`` is unset, as Ray does; an explicit address keeps ``RAY_AUTH_MODE`` as the
    user set it, and a refused token is one ConfigError saying what to export."""
    import ray

    if ray.is_initialized():
        return False
    return _init_ray(resolve_address(address), num_cpus)


def _init_ray(target: RayTarget | None, num_cpus: int | None = None) -> bool:
    import ray

    global _started_locally, connection
    with _init_lock:
        if ray.is_initialized():
            return False
        if target is not None:
            _attach(target)
            return False
        cpus = num_cpus or os.cpu_count() or 1
        _auth_mode_default("token")
        with _keep_sigterm_handler():
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        _started_locally = True
        connection = f"started a local Ray on this machine ({cpus} CPUs)"
        return True


CONNECT_TIMEOUT_S = 3.0
"""How long an attach waits for the cluster's port to answer before giving up."""

connection = ""
"""What :func:`ensure_ray` did last, in words (shown by the CLI): attached where, or started."""


@dataclass(frozen=True)
class RayTarget:
    """A cluster to attach to: the address for ``ray.init`` and how it was found."""

    address: str
    host: str
    port: int
    how: str
    discovered: bool = False
    """Found on this machine ('ray start' address file), not given as an address."""


def _split_host_port(addr: str) -> tuple[str, int] | None:
    rest = addr.removeprefix("ray://").rstrip("/")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:/\s]+):(\d{1,5})", rest)
    if m is None:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return host, int(port)


def _local_cluster_address() -> str | None:
    """The GCS address of the cluster ``ray start --head`` runs on this machine (Ray's own
    address file in its temp dir, ``RAY_TMPDIR`` honoured), or None.

    Only a cluster this user started counts: the address file must be a regular file owned by
    this uid and not writable by others. On a shared host another user's ``ray start`` would
    otherwise receive every default run's task inputs and hand back what the driver unpickles."""
    try:
        from ray._private.utils import get_ray_address_file

        path = get_ray_address_file(None)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        with open(path) as f:
            found = f.read().strip()
    except (ImportError, AttributeError, OSError):
        return None
    return found or None


def _reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout``; else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused (nothing listens there)"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except socket.gaierror:
        return "the host name does not resolve"
    except OSError as e:
        return e.strerror or type(e).__name__


_WHAT_TO_DO = (
    "start one with 'ray start --head' and pass the address it prints (host:6379), "
    "or use --address local for a private Ray on this machine"
)


def resolve_address(address: str | None) -> RayTarget | None:
    """Where :func:`ensure_ray` attaches (None: start a local Ray). Checks the address and
    that its port answers; ConfigError (one line, naming the address and what to do) when
    it is malformed, a dashboard URL, or unreachable."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    source = "--address" if address else "RAY_ADDRESS"
    if given == "local":
        return None
    if given is None or given == "auto":
        found = _local_cluster_address()
        parsed = _split_host_port(found) if found else None
        if parsed is None or _reachable(*parsed, timeout=1.0) is not None:
            if given == "auto":
                raise ConfigError(f"{source} auto: no Ray cluster runs on this machine; {_WHAT_TO_DO}")
            return None  # none (or a stale address file): start a local Ray
        assert found is not None
        return RayTarget(found, *parsed, how="the Ray cluster that 'ray start' runs on this machine", discovered=True)
    if given.startswith(("http://", "https://")):
        raise ConfigError(
            f"{source} {given} is a dashboard (job submission) address; tinyfleet attaches to the GCS "
            "address 'ray start --head' prints (host:6379) or to ray://host:10001; "
            "'ray job submit --address' is where the dashboard URL goes"
        )
    parsed = _split_host_port(given)
    if parsed is None:
        raise ConfigError(f"{source} {given!r} is not a Ray address: give host:port (e.g. 127.0.0.1:6379), ray://host:port, auto or local")
    why = _reachable(*parsed)
    if why is not None:
        raise ConfigError(f"cannot reach a Ray cluster at {given}: {why}; {_WHAT_TO_DO}")
    return RayTarget(given, *parsed, how="the Ray cluster", discovered=False)


def _auth_mode_default(mode: str) -> None:
    """Set ``RAY_AUTH_MODE`` for this process (and what it starts) unless the user set it,
    and refresh Ray's cached config so this process sees it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    os.environ["RAY_AUTH_MODE"] = mode
    try:
        importlib.import_module("ray._raylet").Config.initialize("")
    except (ImportError, AttributeError):  # a Ray without token auth: nothing to refresh
        pass


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler of its own that exits; a handler the program
    installed itself (the CLI's: stop the run, keep the journal) must hold for the whole call,
    since a SIGTERM can arrive while Ray starts. So while ``ray.init`` runs, its attempt to
    replace that handler is skipped (other signals pass through), and the handler is put back
    afterwards in any case. Without a handler of the program's own, Ray's is left alone."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    if not (main and callable(before)):
        yield
        return
    original = signal.signal

    def keep_ours(signum: int, handler: Any) -> Any:
        if signum == signal.SIGTERM:
            return before
        return original(signum, handler)

    signal.signal = keep_ours  # type: ignore[assignment]
    try:
        yield
    finally:
        signal.signal = original
        original(signal.SIGTERM, before)


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    try:
        loader = importlib.import_module("ray._raylet").AuthenticationTokenLoader
        return bool(loader.instance().has_token(ignore_auth_mode=True))
    except (ImportError, AttributeError):
        return (Path.home() / ".ray" / "auth_token").is_file()


def _attach(target: RayTarget) -> None:
    import ray

    global connection
    if target.discovered and _token_available():
        # as Ray does for a cluster it finds itself: a 'ray start' head on this machine with a
        # token around runs token auth. An explicit address keeps the user's RAY_AUTH_MODE.
        _auth_mode_default("token")
    try:
        with _keep_sigterm_handler():
            ray.init(address=target.address, logging_level=logging.WARNING, log_to_driver=False)
    except ray.exceptions.AuthenticationError:
        raise ConfigError(
            f"the Ray cluster at {target.address} refused this driver's token: export RAY_AUTH_MODE=token "
            "and the cluster's token as RAY_AUTH_TOKEN (or in ~/.ray/auth_token; 'ray get-auth-token' on the head prints it)"
        ) from None
    except (ConnectionError, TimeoutError, ray.exceptions.RaySystemError) as e:
        raise ConfigError(f"cannot attach to the Ray cluster at {target.address}: {_ray_message(e)}; {_WHAT_TO_DO}") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    connection = f"attached to {target.how} at {target.host}:{target.port} ({cpus:g} CPUs; --address local starts a private Ray instead)"


def _ray_message(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    head = lines[0][:300] if lines else ""
    tail = lines[-1][:300] if len(lines) > 1 else ""
    return f"{type(e).__name__}: {head}" + (f" ... {tail}" if tail else "")

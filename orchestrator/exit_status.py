"""The exit-status contract that every tinyfleet command line shares (tinyfleet and the example
agents): 0 ok, 1 the run failed, 2 bad input or usage (one line, no traceback), 130 interrupted
(Ctrl-C, SIGINT), 143 terminated (SIGTERM). An interrupted run stops at once: the steps it
finished are in its journal, and one line on stderr says where and how to continue."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar

from tinyfleet_core.errors import (
    ConfigError,
    InputError,
    ModelOutputError,
    PlanError,
    TinyfleetError,
)

__all__ = ["run_guarded", "note_journal", "interruptible"]

T = TypeVar("T")


class _UsageError(Exception):
    pass


_state: dict[str, object] = {"signal": None, "journals": []}


def note_journal(path: object) -> None:
    """Name a journal the running command writes, for the line an interrupt prints."""
    journals = _state["journals"]
    assert isinstance(journals, list)
    journals.append(str(path))


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops the run the way Ctrl-C does under asyncio.run: the main task (registered
    # by ``interruptible``) is cancelled, so the run's finally blocks close its journal and
    # pools; outside a run, KeyboardInterrupt. Not re-sent as SIGINT: a background process
    # may ignore that one.
    _state["signal"] = signal.SIGTERM
    task = _state.get("task")
    if isinstance(task, asyncio.Task) and not task.done() and not _state.get("cancelled"):
        _state["cancelled"] = True
        task.cancel()
        task.get_loop().call_soon_threadsafe(lambda: None)  # wake the loop
        return
    raise KeyboardInterrupt


async def interruptible(aw: Awaitable[T]) -> T:
    """Await ``aw`` as the task SIGTERM cancels (wrap the coroutine given to asyncio.run)."""
    _state["task"] = asyncio.current_task()
    try:
        return await aw
    finally:
        _state["task"] = None


def _install_signals() -> Any:
    """Install the SIGTERM handler (main thread only); returns the one to put back."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, _on_sigterm)
    return None


def _interrupted_line(prog: str) -> tuple[str, int]:
    term = _state["signal"] == signal.SIGTERM
    journals = _state["journals"]
    assert isinstance(journals, list)
    where = ""
    if journals:
        last = journals[-1]
        where = f"; finished steps are in the journal {last} (continue with: tinyfleet run --resume {last})"
    return f"{prog}: {'terminated (SIGTERM)' if term else 'interrupted'}: the run stopped{where}", 143 if term else 130


def run_guarded(prog: str, command: Callable[[], int]) -> int:
    """Run a command body under the exit-status contract shared by every tinyfleet command
    line: bad input or usage -> 2 with one line naming the problem, any other tinyfleet error
    -> 1, interrupted -> 130 (SIGTERM: 143); never a traceback for a typed error."""
    # a fresh state per command, and the caller's handler back afterwards, so a command run
    # in-process (an agent, a notebook, a test) leaves no signal handling or journal behind
    _state.update(signal=None, journals=[], cancelled=False, task=None)
    previous = _install_signals()
    try:
        return _guarded(prog, command)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _guarded(prog: str, command: Callable[[], int]) -> int:
    try:
        return command()
    except _UsageError as e:
        print(f"{prog}: usage error: {e}", file=sys.stderr)
        return 2
    except ModelOutputError as e:  # the model's failing, not the user's input
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except (InputError, PlanError, ConfigError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except TinyfleetError as e:
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError) as e:
        if isinstance(e, asyncio.CancelledError) and _state["signal"] is None:
            raise
        line, code = _interrupted_line(prog)
        print(line, file=sys.stderr)
        return code

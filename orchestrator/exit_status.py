"""The exit-status contract that every tinyfleet command line shares (tinyfleet and the example
agents): 0 ok, 1 the run failed, 2 bad input or usage (one line, no traceback), 130 interrupted."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tinyfleet_core.errors import (
    ConfigError,
    InputError,
    ModelOutputError,
    PlanError,
    TinyfleetError,
)

__all__ = ["run_guarded"]


class _UsageError(Exception):
    pass


def run_guarded(prog: str, command: Callable[[], int]) -> int:
    """Run a command body under the exit-status contract shared by every tinyfleet command
    line: bad input or usage -> 2 with one line naming the problem, any other tinyfleet error
    -> 1, interrupted -> 130; never a traceback for a typed error."""
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
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

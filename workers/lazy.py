"""A worker factory that imports its worker class only when a pool builds the worker.

Ladders are built when a registry is (``import tinyfleet`` builds none, ``default_registry()``
builds the built-in skills), and a ladder names every worker it may climb to. Naming them by
class would import each class's module, and with it torch, for a run that only ever places a
pure-Python tier, or whose tiny-model pools run in Ray actors and never in the driver. A
:class:`LazyWorker` names the class by module and attribute instead; the pool (in the driver
for the local executor, in the actor for Ray) imports it when it calls the factory.

The pool a tier runs in is keyed by the worker's ``name`` and its particles by
``stochastic``, both read from the factory (:attr:`workers.base.Tier.pool_name`), so a lazy
factory carries them; calling it checks that they match the class, so the two cannot drift.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tinyfleet_core.errors import ConfigError
from workers.base import Worker

__all__ = ["LazyWorker"]


@dataclass(frozen=True)
class LazyWorker:
    """``LazyWorker("workers.serving.neural", "TRMSudokuWorker", name="sudoku.trm", stochastic=True)``
    builds ``TRMSudokuWorker()`` when called. Picklable (plain strings), so Ray ships it to an
    actor without importing the class in the driver."""

    module: str
    attr: str
    name: str
    stochastic: bool = False

    def load(self) -> type[Worker]:
        """The worker class (imports its module)."""
        try:
            cls = getattr(importlib.import_module(self.module), self.attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"worker {self.name!r}: cannot import {self.module}.{self.attr} ({e})") from None
        if not (isinstance(cls, type) and issubclass(cls, Worker)):
            raise ConfigError(f"worker {self.name!r}: {self.module}.{self.attr} is not a Worker class")
        got = (getattr(cls, "name", None), bool(getattr(cls, "stochastic", False)))
        if got != (self.name, self.stochastic):
            raise ConfigError(
                f"worker {self.module}.{self.attr} has name={got[0]!r}, stochastic={got[1]}, but its lazy "
                f"factory says name={self.name!r}, stochastic={self.stochastic}; make them agree"
            )
        return cls

    def __call__(self) -> Worker:
        return self.load()()

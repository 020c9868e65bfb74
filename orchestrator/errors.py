"""Compatibility: ``orchestrator.errors`` is ``tinyfleet_core.errors`` (kept for existing imports; new code imports ``tinyfleet_core.errors``)."""

from tinyfleet_core.errors import *  # noqa: F403
from tinyfleet_core.errors import __all__ as __all__  # noqa: F401

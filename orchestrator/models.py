"""Compatibility: ``orchestrator.models`` is ``tinyfleet_core.models`` (kept for existing imports; new code imports ``tinyfleet_core.models``)."""

from tinyfleet_core.models import *  # noqa: F403
from tinyfleet_core.models import __all__ as __all__  # noqa: F401

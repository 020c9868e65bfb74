"""One way to say what a pydantic ``ValidationError`` found: ``(location, message)`` pairs
that every error message of tinyfleet is built from (``field 'grid.3': ...``)."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["problems", "first_problem"]


def problems(e: ValidationError, limit: int | None = None) -> list[tuple[str, str]]:
    """``(location, message)`` for each error, in pydantic's order: the location dotted
    (``(root)`` for the whole value), the message without pydantic's ``Value error, `` prefix."""
    out = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        out.append((loc, str(err.get("msg", "invalid")).removeprefix("Value error, ")))
    return out


def first_problem(e: ValidationError) -> tuple[str, str]:
    """The first of :func:`problems`."""
    found = problems(e, 1)
    return found[0] if found else ("(root)", "invalid")

"""Reading task and payload files with errors that name the file, the place and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import InputError
from .models import Task

__all__ = ["read_json", "load_task"]


def read_json(path: str | Path, what: str = "file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {p} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {p} is not UTF-8 text") from None


def load_task(path: str | Path) -> Task:
    """Read a task file: ``{"goal": ..., "skill": ..., "inputs": {...}, "budget": {...}}``."""
    raw = read_json(path, "task file")
    if not isinstance(raw, dict):
        raise InputError(f"task file {path} must hold a JSON object, not {type(raw).__name__}")
    try:
        return Task.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        raise InputError(f"task file {path}: field '{loc}': {err.get('msg', '').removeprefix('Value error, ')}") from None

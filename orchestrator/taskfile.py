"""Reading task and payload files with errors that name the file, the place and the problem.

A hostile file gets one clear :class:`InputError` (exit 2 from the CLI), never a traceback:
files over :data:`MAX_BYTES`, JSON nested deeper than :data:`MAX_DEPTH` (checked before the
recursive parser runs), text that is not UTF-8 or not JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Task
from tinyfleet_core.validation import first_problem

__all__ = ["MAX_BYTES", "MAX_DEPTH", "json_depth", "load_task", "read_json"]

MAX_BYTES = 32 << 20
"""Largest task or payload file read."""
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects in a task or payload file."""


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"?')
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str, limit: int) -> int:
    """How deep ``text``'s arrays and objects nest, counting brackets outside strings. Exact
    when the result passes ``limit`` (it stops counting there); at or under ``limit`` it may be
    an upper bound (a text with few brackets is not scanned)."""
    if text.count("[") + text.count("{") <= limit:
        return 0 if "[" not in text and "{" not in text else min(limit, text.count("[") + text.count("{"))
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRINGS.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def read_json(path: str | Path, what: str = "file") -> Any:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory, give a {'task JSON' if what == 'task file' else 'JSON'} file")
    if not p.is_file():
        raise InputError(f"{what} {p} does not exist" if not p.exists() else f"{what} {p} is not a regular file")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{what} {p} is {size} bytes, over the {MAX_BYTES} byte limit; split the work into smaller tasks")
    try:
        text = p.read_text(encoding="utf-8")
        if json_depth(text, MAX_DEPTH) > MAX_DEPTH:
            raise InputError(f"{what} {p} nests arrays/objects deeper than {MAX_DEPTH} levels; flatten it")
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{what} {p} nests arrays/objects too deeply to read; flatten it") from None
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
        loc, msg = first_problem(e)
        raise InputError(f"task file {path}: field '{loc}': {msg}") from None

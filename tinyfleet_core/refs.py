"""References inside step inputs: ``{"$ref": "<step>.<field>"}`` and ``{"$input": "<path>"}``.

A plan refers to data instead of copying it. ``$ref`` reads an earlier step's output (or a
field of it, ``"leg0.path"``); ``$input`` reads the task's own inputs (``"grid"``,
``"histories.bakery.values"``, ``"stops.3.cell"``: dot-separated keys, list positions as
numbers). So a model writes the structure of a plan and the data stays in the task.

:func:`walk_references` is the one walker (plan validation and the run loop read a step's
dependencies from it, :func:`planners.plan_check.references`) and :func:`resolve_references`
the one resolver for both kinds; :func:`expand_task_inputs` replaces
only the ``$input`` references (the run loop's validation does that before anything runs, so a
path that does not exist is a :class:`~tinyfleet_core.errors.PlanError` naming the step, the path
and the keys that do exist).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tinyfleet_core.errors import InputError, PlanError
from tinyfleet_core.models import Step

__all__ = [
    "INPUT",
    "REF",
    "Reference",
    "expand_task_inputs",
    "input_paths",
    "pluck",
    "reference_in",
    "resolve_references",
    "step_inputs_with_task_inputs",
    "walk_references",
]

REF: Final = "$ref"
INPUT: Final = "$input"
RefKind = Literal["$ref", "$input"]


@dataclass(frozen=True)
class Reference:
    """One ``{"$ref": path}`` or ``{"$input": path}`` found in a value."""

    kind: RefKind
    path: str

    @property
    def head(self) -> str:
        return self.path.split(".")[0]

    @property
    def fields(self) -> list[str]:
        return self.path.split(".")[1:]


def reference_in(value: Any) -> Reference | None:
    """The reference ``value`` is (a dict whose only key is ``$ref`` or ``$input``), or None.
    PlanError when the path is not a non-empty string."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (key, path), = value.items()
    if key not in (REF, INPUT):
        return None
    if not isinstance(path, str) or not path.strip():
        example = "'step1' or 'step1.field'" if key == REF else "'grid' or 'histories.bakery.values'"
        raise PlanError(f"{key!r} must be a non-empty string like {example}, got {path!r}")
    return Reference(key, path.strip())


def walk_references(value: Any) -> Iterator[Reference]:
    """Every reference in ``value``, in order of appearance."""
    ref = reference_in(value)
    if ref is not None:
        yield ref
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_references(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_references(v)


def input_paths(step: Step) -> list[str]:
    """The task-input paths a step reads through ``$input``."""
    return [r.path for r in walk_references(step.inputs) if r.kind == INPUT]


def pluck(value: Any, fields: list[str], ref: str, *, what: str = "the output") -> Any:
    """``value[f0][f1]...``; list positions are numbers. InputError names the missing part."""
    for f in fields:
        if isinstance(value, Mapping) and f in value:
            value = value[f]
        elif isinstance(value, list) and f.isdigit() and int(f) < len(value):
            value = value[int(f)]
        else:
            if isinstance(value, Mapping):
                have = f"it has {', '.join(map(repr, list(value)[:12]))}" if value else "it is empty"
            elif isinstance(value, list):
                have = f"it is a list of {len(value)}"
            else:
                have = f"it is a {type(value).__name__}"
            raise InputError(f"reference {ref!r}: {what} has no field {f!r} ({have})")
    return value


def resolve_references(
    value: Any, outputs: Mapping[str, Any] | None = None, task_inputs: Mapping[str, Any] | None = None
) -> Any:
    """``value`` with every ``$ref`` replaced from ``outputs`` (step id -> output) and every
    ``$input`` from ``task_inputs``. A kind whose source is None is left as it is.
    InputError names a reference that does not resolve."""
    ref = reference_in(value)
    if ref is not None:
        if ref.kind == REF and outputs is not None:
            if ref.head not in outputs:
                raise InputError(f"reference {ref.path!r}: step {ref.head!r} has no output")
            return pluck(outputs[ref.head], ref.fields, ref.path)
        if ref.kind == INPUT and task_inputs is not None:
            return pluck(task_inputs, ref.path.split("."), ref.path, what="the task's inputs")
        return value
    if isinstance(value, dict):
        return {k: resolve_references(v, outputs, task_inputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, outputs, task_inputs) for v in value]
    return value


def step_inputs_with_task_inputs(step: Step, task_inputs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``step.inputs`` with its ``$input`` references filled in from ``task_inputs``; the
    inputs themselves when there are none; None when there are some but no task inputs to
    read them from (the run resolves them later). PlanError names a path that does not exist."""
    try:
        paths = input_paths(step)
    except PlanError as e:
        raise PlanError(f"step {step.id!r}: {e}", step=step.id) from None
    if not paths:
        return step.inputs
    if task_inputs is None:
        return None
    try:
        filled = resolve_references(step.inputs, None, task_inputs)
    except InputError as e:
        raise PlanError(f"step {step.id!r}: {e}; '$input' paths read the task's inputs", step=step.id) from None
    return dict(filled)


def expand_task_inputs(steps: list[Step], task_inputs: Mapping[str, Any]) -> list[Step]:
    """The steps with every ``$input`` replaced by the task's data (``$ref`` kept)."""
    out = []
    for s in steps:
        filled = step_inputs_with_task_inputs(s, task_inputs)
        out.append(s if filled is s.inputs or filled is None else s.model_copy(update={"inputs": filled}))
    return out

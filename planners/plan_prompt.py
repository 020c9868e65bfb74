"""What the planner model reads: the rules of a plan, the skills as short signatures, and the
task with its large inputs summarized (shapes, lengths, a few values), never copied whole.

The data stays in the task: a plan passes it on with ``{"$input": "<path>"}`` (see
``tinyfleet_core.refs``), so neither the prompt nor the plan carries a series. ``Detail``
says how much to show; the planner steps it down when a server says the prompt is too long.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyfleet_core.models import StepResult, Task
from workers.registry import SkillRegistry

__all__ = ["DETAILS", "Detail", "compact", "failure_text", "planner_system", "signature", "skills_text", "summarize", "task_text"]


@dataclass(frozen=True)
class Detail:
    """How much of the skills and the inputs a prompt shows."""

    whole_chars: int  # task inputs whose whole JSON is at most this long are shown as they are
    literal_chars: int  # else each input whose JSON is at most this long is shown as it is
    samples: int  # values shown from a long list
    keys: int  # keys named from a large object
    description_chars: int  # of each skill's description
    outputs: bool  # show each skill's output fields


DETAILS = (
    Detail(whole_chars=800, literal_chars=160, samples=3, keys=32, description_chars=320, outputs=True),
    Detail(whole_chars=300, literal_chars=80, samples=2, keys=24, description_chars=160, outputs=True),
    Detail(whole_chars=0, literal_chars=40, samples=1, keys=24, description_chars=80, outputs=False),
)
"""From the fullest prompt to the smallest."""


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------- skills


def signature(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None, depth: int = 0) -> str:
    """A JSON schema as a short type: ``{grid: [str], horizon?: int|null}``."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        target = defs.get(name)
        return name if target is None or depth > 4 else signature(target, defs, depth + 1)
    if "const" in schema:
        return compact(schema["const"])
    if "enum" in schema:
        return "|".join(compact(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return "|".join(signature(s, defs, depth + 1) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping):
            return f"[{signature(items, defs, depth + 1)}]"
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return "[" + ", ".join(signature(s, defs, depth + 1) for s in prefix) + "]"
        return "[any]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if not props:
            extra = schema.get("additionalProperties")
            return f"{{str: {signature(extra, defs, depth + 1)}}}" if isinstance(extra, Mapping) else "object"
        required = set(schema.get("required", []))
        parts = [f"{k}{'' if k in required else '?'}: {signature(v, defs, depth + 1)}" for k, v in props.items()]
        return "{" + ", ".join(parts) + "}"
    names = {"string": "str", "integer": "int", "number": "number", "boolean": "bool", "null": "null"}
    if isinstance(kind, list):
        return "|".join(names.get(str(k), str(k)) for k in kind)
    return names.get(str(kind), "any")


def skills_text(skills: SkillRegistry, detail: Detail = DETAILS[0]) -> str:
    """One line per skill: ``name(input signature) -> output signature: description``."""
    rows = []
    for s in sorted(skills, key=lambda s: s.name):
        desc = " ".join(s.description.split())
        if len(desc) > detail.description_chars:
            desc = desc[: detail.description_chars - 3] + "..."
        out = f" -> {signature(s.output_model.model_json_schema())}" if detail.outputs else ""
        rows.append(f"- {s.name}{signature(s.input_model.model_json_schema())}{out}: {desc}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- inputs


def _number(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else compact(v)


def _shape(value: Any) -> str:
    """A value's shape without its data (to tell whether an object's values look alike)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_shape(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + (_shape(value[0]) if value else "") + "]"
    return type(value).__name__


def summarize(value: Any, detail: Detail = DETAILS[0], depth: int = 0) -> str:
    """``value`` itself when its JSON is short, else its shape, length and a few values."""
    text = compact(value)
    if len(text) <= detail.literal_chars or depth > 3:
        return text if len(text) <= max(detail.literal_chars, 40) else text[:37] + "..."
    if isinstance(value, list):
        n = len(value)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            head = ", ".join(_number(v) for v in value[: detail.samples])
            return f"{n} numbers (min {_number(min(value))}, max {_number(max(value))}; first {head}, ...)"
        if all(isinstance(v, str) for v in value):
            lengths = {len(v) for v in value}
            each = f" of {lengths.pop()} chars" if len(lengths) == 1 else ""
            return f"{n} strings{each} (first {compact(value[0])[:60]})"
        if all(isinstance(v, dict) for v in value):
            return f"{n} objects, the first {summarize(value[0], detail, depth + 1)}"
        return f"a list of {n} values, the first {summarize(value[0], detail, depth + 1)}"
    if isinstance(value, dict):
        keys = list(value)
        shapes = {_shape(v) for v in value.values()}
        named = ", ".join(compact(k) for k in keys[: detail.keys]) + (", ..." if len(keys) > detail.keys else "")
        if len(keys) > 2 and len(shapes) == 1:
            first = value[keys[0]]
            return f"an object with {len(keys)} keys ({named}); each value like {summarize(first, detail, depth + 1)}"
        parts = [f"{compact(k)}: {summarize(v, detail, depth + 1)}" for k, v in list(value.items())[: detail.keys]]
        return "{" + ", ".join(parts) + (", ..." if len(keys) > detail.keys else "") + "}"
    return text[: detail.literal_chars] + "..."


def task_text(task: Task, detail: Detail = DETAILS[0]) -> str:
    lines = [f"Task: {task.goal.strip() or '(no goal text; the inputs and skill say it)'}"]
    if task.skill:
        lines.append(f"Skill named by the user: {task.skill}")
    whole = compact(task.inputs) if task.inputs else ""
    if whole and len(whole) <= detail.whole_chars:
        lines.append(f"Task inputs (JSON): {whole}")
        lines.append('(Pass them on with {"$input": "<path>"} or copy them.)')
    elif task.inputs:
        lines.append('Task inputs (pass them on with {"$input": "<path>"}; long ones are summarized here):')
        for k, v in task.inputs.items():
            lines.append(f"- {k}: {summarize(v, detail)}")
    if task.budget.max_steps < 100_000:
        lines.append(f"The plan may have at most {task.budget.max_steps} steps.")
    return "\n".join(lines)


def failure_text(r: StepResult) -> dict[str, Any]:
    reasons = [t.verdict.reason for t in r.trials if t.verdict is not None and not t.verdict.ok and t.verdict.reason]
    return {
        "step": r.step_id,
        "skill": r.skill,
        "status": r.status,
        "error": r.error,
        "tiers_tried": r.tiers_tried,
        "verifier_said": reasons[-3:],
    }


# ---------------------------------------------------------------------------- the system prompt

_SYSTEM = """You are the planner of tinyfleet. Small, fast workers run your plan; each step's answer is \
checked where a verifier exists, and failed steps climb to stronger models.

Reply with one JSON object {"steps": [...], "output": ...} and nothing else.
- A step: {"id": short unique id (letters, digits, _ or -), "skill": one of the skills below, "inputs": \
an object that fits the skill's inputs}. Optional: "after": ids of steps that must finish first.
- Pass task data by reference, never copy it: {"$input": "<path>"} puts a task input (or part of it) where \
the value goes; paths are dot-separated keys, list positions as numbers ("grid", "histories.s1.values", \
"stops.0.cell").
- Use an earlier step's output with {"$ref": "<step id>"} or {"$ref": "<step id>.<field>"}. Steps that do \
not depend on each other run in parallel: split independent work into separate steps.
- "output": the step id (or "<step id>.<field>", or a list of them) that answers the task.
- No cycles; reference only steps of this plan.

Skills (name{inputs} -> {outputs}; "?" marks an optional field):
{skills}"""


def planner_system(skills: SkillRegistry, detail: Detail = DETAILS[0]) -> str:
    return _SYSTEM.replace("{skills}", skills_text(skills, detail))

"""A Plan schema that OpenAI's structured outputs accept with ``strict: true``.

The plain :class:`~orchestrator.Plan` schema cannot be strict: step ``inputs`` is a free-form
object, and optional fields and defaults are not allowed there. This schema is built from
the registry instead: every step is one of the skills' variants (``skill`` fixed to the
skill's name, ``inputs`` that skill's typed input object), and wherever a value goes it may
also be ``{"$ref": str}`` or ``{"$input": str}``. Following OpenAI's rules for strict mode,
every object lists all its properties as required (optional ones may be null) and forbids
extra ones, and keywords strict mode rejects (defaults, bounds, patterns, titles) are left
out; the run loop's validation still checks them. A value with no fixed shape (a
``dict[str, ...]``) can only be passed by reference. Strategies are not part of it: a strict
plan's steps run with the default strategy.

:func:`strict_plan_schema` returns None when the registry cannot be expressed within strict
mode's limits; the planner then sends the plain schema unenforced (``strict: false``).
:func:`drop_strict_nulls` removes the nulls strict mode makes a model write for optional
fields, so their defaults apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.registry import SkillRegistry

__all__ = ["MAX_DEPTH", "MAX_PROPERTIES", "drop_strict_nulls", "strict_plan_schema", "strict_violations"]

MAX_DEPTH = 10
MAX_PROPERTIES = 5000
_KEEP = {"type", "enum", "const", "items", "properties", "required", "additionalProperties", "anyOf", "$ref", "$defs"}
_REF_DEF = {
    "type": "object",
    "properties": {"$ref": {"type": "string"}},
    "required": ["$ref"],
    "additionalProperties": False,
}
_INPUT_DEF = {
    "type": "object",
    "properties": {"$input": {"type": "string"}},
    "required": ["$input"],
    "additionalProperties": False,
}
_REF_DEPTH = 3
_BY_REFERENCE = [{"$ref": "#/$defs/step_output"}, {"$ref": "#/$defs/task_input"}]


class _NotStrict(Exception):
    """Internal: this part of a schema has no strict equivalent."""


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
    while "$ref" in node:
        if depth > 12:
            raise _NotStrict("recursive schema")
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name not in defs:
            raise _NotStrict(f"unknown $ref {node['$ref']}")
        node = defs[name]
        depth += 1
    return node


def _one_of(options: list[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for o in options:
        for x in o["anyOf"] if set(o) == {"anyOf"} else [o]:
            if x not in flat:
                flat.append(x)
    return flat[0] if len(flat) == 1 else {"anyOf": flat}


def _strict(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """A strict copy of one schema node (no reference alternatives)."""
    node = _resolve(node, defs, depth)
    if depth > 12:
        raise _NotStrict("too deep")
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _one_of([_strict(n, defs, depth + 1) for n in node[key]])
    if "allOf" in node and len(node["allOf"]) == 1:
        return _strict(node["allOf"][0], defs, depth + 1)
    if "const" in node:
        return {"type": _json_type(node["const"]), "enum": [node["const"]]}
    if "enum" in node:
        out: dict[str, Any] = {"enum": list(node["enum"])}
        if "type" in node:
            out["type"] = node["type"]
        return out
    kind = node.get("type")
    if kind == "array":
        if isinstance(node.get("items"), Mapping):
            return {"type": "array", "items": _value(node["items"], defs, depth + 1)}
        prefix = node.get("prefixItems")
        if isinstance(prefix, list) and prefix:  # a tuple: strict mode has no prefixItems
            return {"type": "array", "items": _one_of([_value(p, defs, depth + 1) for p in prefix])}
        raise _NotStrict("array without items")
    if kind == "object" or "properties" in node:
        props = node.get("properties") or {}
        if not props:
            raise _NotStrict("free-form object")
        required = set(node.get("required", []))
        out_props: dict[str, Any] = {}
        for k, sub in props.items():
            try:
                v = _value(sub, defs, depth + 1)
            except _NotStrict:
                v = _one_of(list(_BY_REFERENCE))  # no fixed shape: by reference only
            out_props[k] = v if k in required else _one_of([v, {"type": "null"}])
        return {"type": "object", "properties": out_props, "required": list(out_props), "additionalProperties": False}
    if kind in ("string", "integer", "number", "boolean", "null"):
        return {"type": kind}
    if isinstance(kind, list) and all(k in ("string", "integer", "number", "boolean", "null") for k in kind):
        return _one_of([{"type": k} for k in kind])
    raise _NotStrict(f"untyped value {dict(node)!r:.60}")


def _value(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """A strict node where a literal or a reference may go (references down to
    ``_REF_DEPTH`` levels into a step's inputs: a field, a list item, a field of an item)."""
    literal = _strict(node, defs, depth)
    return _one_of([literal, *_BY_REFERENCE]) if depth <= _REF_DEPTH else literal


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if v is None:
        return "null"
    return "string"


def strict_plan_schema(skills: SkillRegistry) -> dict[str, Any] | None:
    """The strict Plan schema for ``skills`` (see module docs), or None when it cannot be
    expressed within strict mode's limits."""
    variants = []
    for s in sorted(skills, key=lambda s: s.name):
        schema = s.input_model.model_json_schema()
        try:
            inputs = _strict(schema, schema.get("$defs", {}), 0)
        except _NotStrict:
            return None
        variants.append(
            {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "skill": {"type": "string", "enum": [s.name]},
                    "inputs": inputs,
                    "after": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "skill", "inputs", "after"],
                "additionalProperties": False,
            }
        )
    if not variants:
        return None
    doc = {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": _one_of(variants)},
            "output": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        "required": ["steps", "output"],
        "additionalProperties": False,
        "$defs": {"step_output": _REF_DEF, "task_input": _INPUT_DEF},
    }
    return doc if not strict_violations(doc) else None


def strict_violations(schema: Mapping[str, Any]) -> list[str]:
    """Where ``schema`` breaks OpenAI's documented strict-mode rules: the root must be an
    object; every object must forbid extra properties and require all it lists; only the
    supported keywords; at most ``MAX_DEPTH`` levels of nesting and ``MAX_PROPERTIES``
    properties. Empty when it complies."""
    problems: list[str] = []
    count = 0

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal count
        if not isinstance(node, Mapping):
            problems.append(f"{path}: not a schema object")
            return
        extra = set(node) - _KEEP
        if extra:
            problems.append(f"{path}: unsupported keywords {sorted(extra)}")
        if depth > MAX_DEPTH:
            problems.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
            return
        if node.get("type") == "object":
            props = node.get("properties", {})
            count += len(props)
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            if sorted(node.get("required", [])) != sorted(props):
                problems.append(f"{path}: every property must be required")
            for k, v in props.items():
                walk(v, f"{path}.{k}", depth + 1)
        if "items" in node:
            walk(node["items"], f"{path}[]", depth + 1)
        for i, sub in enumerate(node.get("anyOf", [])):
            walk(sub, f"{path}|{i}", depth)
        for k, sub in (node.get("$defs") or {}).items():
            walk(sub, f"$defs.{k}", 1)

    if schema.get("type") != "object":
        problems.append("(root): must be an object")
    walk(schema, "(root)", 1)
    if count > MAX_PROPERTIES:
        problems.append(f"{count} properties; strict mode allows {MAX_PROPERTIES}")
    return problems


def drop_strict_nulls(doc: Any, skills: SkillRegistry) -> Any:
    """A strict plan with the nulls of optional fields removed (their defaults apply)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        return doc
    steps = []
    for step in doc["steps"]:
        if isinstance(step, dict) and isinstance(step.get("inputs"), dict) and step.get("skill") in skills:
            schema = skills.get(str(step["skill"])).input_model.model_json_schema()
            step = {**step, "inputs": _without_nulls(step["inputs"], schema, schema.get("$defs", {}))}
        steps.append(step)
    return {**doc, "steps": steps}


def _without_nulls(value: Any, schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int = 0) -> Any:
    try:
        schema = _resolve(schema, defs, depth)
    except _NotStrict:
        return value
    if depth > 12:
        return value
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", []))
        props = schema["properties"]
        return {
            k: _without_nulls(v, props.get(k, {}), defs, depth + 1)
            for k, v in value.items()
            if not (v is None and k not in required)
        }
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_without_nulls(v, schema["items"], defs, depth + 1) for v in value]
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, []):
            opt = _resolve(option, defs, depth) if "$ref" in option else option
            if isinstance(value, dict) and "properties" in opt:
                return _without_nulls(value, opt, defs, depth + 1)
    return value

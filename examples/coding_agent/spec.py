"""Specs of the coding agent: what module to write, read from a Python or a JSON file.

A **Python spec** is a module with

- a module docstring (what the module is for; optional);
- function **stubs**: a ``def`` line, a docstring saying what the function does, and ``...`` (or
  ``pass`` / ``raise NotImplementedError``) as the body. These are the functions to write;
- ``def test_*()`` functions (and, if wanted, top-level asserts) that decide whether the code is
  right. Other top-level code (imports, constants, helper functions) belongs to the tests.

A function *calls* another spec function when its docstring says so: ``name(`` in the prose, or a
call in a doctest line (``>>> name(...)``), both read with :mod:`ast` / a word-boundary match. A
function is written after every function it calls, and its tests run with their code loaded.

A **JSON spec** says the same in data::

    {"module": "textstats", "doc": "...",
     "functions": [{"signature": "def words(text: str) -> list[str]", "doc": "...", "calls": []}],
     "tests": "def test_words():\\n    assert words('A b') == ['a', 'b']\\n"}

Every problem is an :class:`~orchestrator.InputError` whose message names the file, the function
or test, and what to change.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyfleet_core.errors import InputError
from tinyfleet_core.validation import first_problem
from workers.code import function_name
from workers.sandbox import plan_tests

from .suite import SpecTests, span

__all__ = ["FunctionSpec", "Spec", "load_spec", "parse_python_spec", "parse_json_spec"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FunctionSpec(BaseModel):
    """One function to write, with the tests that decide it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    signature: str = Field(description="e.g. 'def words(text: str) -> list[str]'")
    doc: str
    calls: list[str] = Field(default_factory=list, description="spec functions it calls directly")
    tests: str = Field(description="the test module its step runs: the shared prelude and its own tests")
    test_names: list[str] = Field(default_factory=list)


class Spec(BaseModel):
    """A module to write: its functions in dependency order and its whole test file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str
    doc: str = ""
    functions: list[FunctionSpec]
    tests: str = Field(description="the whole test file, run on the assembled module")
    header: str = Field(default="", description="'from __future__' lines the module starts with")
    source: str = Field(default="", description="where the spec came from (for messages)")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def function(self, name: str) -> FunctionSpec:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(name)

    def needs(self, name: str) -> list[str]:
        """Every spec function ``name`` calls, directly or not, in dependency order."""
        closure = _closure({f.name: f.calls for f in self.functions}, name)
        return [n for n in self.names if n in closure]


# ---------------------------------------------------------------------------- loading


def load_spec(path: str | Path) -> Spec:
    """Read a spec file: ``.json`` as a JSON spec, anything else as a Python spec."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"spec file {p}: not found (give a .py or .json spec)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"spec file {p}: cannot be read: {e}") from None
    module = re.sub(r"\W", "_", p.stem) or "module"
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"spec file {p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return parse_json_spec(doc, module=module, source=str(p))
    return parse_python_spec(text, module=module, source=str(p))


# ---------------------------------------------------------------------------- Python specs


def parse_python_spec(text: str, *, module: str = "module", source: str = "<spec>") -> Spec:
    """A Spec from the text of a Python spec file (see the module docs)."""
    try:
        tree = ast.parse(text, source)
    except SyntaxError as e:
        raise InputError(f"spec {source}: line {e.lineno}: {e.msg}{_where(text, e.lineno)}; fix the file so it parses") from None
    lines = text.splitlines(keepends=True)
    doc = ast.get_docstring(tree) or ""
    stubs: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    header: list[str] = []
    drop: set[int] = set()  # 0-based lines that are not part of the tests (docstring, stubs, __future__)
    body = list(tree.body)
    if body:  # the comment lines above the first statement are about the spec file itself
        drop |= set(range(0, min([body[0].lineno, *(d.lineno for d in getattr(body[0], "decorator_list", []))]) - 1))
    if body and _is_docstring(body[0]):
        drop |= span(body[0])
        body = body[1:]
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("test") and _is_stub(node):
            stubs.append(node)
            drop |= span(node)
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            header.append(_segment(lines, node))
            drop |= span(node)
    if not stubs:
        raise InputError(
            f"spec {source}: no function stubs to write; add at least one 'def name(...):' whose body is a "
            "docstring and '...'"
        )
    functions = []
    for node in stubs:
        fdoc = ast.get_docstring(node)
        if not fdoc or not fdoc.strip():
            raise InputError(f"spec {source}: line {node.lineno}: the stub of {node.name}() has no docstring; say what it must do")
        functions.append(
            {"name": node.name, "signature": _signature(node), "doc": fdoc.strip(), "calls": sorted(_calls_in_node(node))}
        )
    tests = "".join(line for i, line in enumerate(lines) if i not in drop).strip("\n") + "\n"
    return _build(module, doc.strip(), functions, tests, "".join(header), source)


def _where(text: str, lineno: int | None) -> str:
    """' (in the stub of f())' when the line falls inside a def that is not a test."""
    if lineno is None:
        return ""
    for line in reversed(text.splitlines()[:lineno]):
        m = re.match(r"\s*(?:async\s+)?def\s+(\w+)", line)
        if m:
            what = "test" if m.group(1).startswith("test") else "stub"
            return f" (in the {what} {m.group(1)}())"
        if line and not line[0].isspace() and line.strip():
            return ""
    return ""


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of (docstring) + one of ``...``, ``pass``, ``raise NotImplementedError[(...)]``."""
    body = node.body[1:] if node.body and _is_docstring(node.body[0]) else node.body
    if not body:
        return True  # a docstring alone
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _segment(lines: list[str], node: ast.stmt) -> str:
    return "".join(lines[i] for i in sorted(span(node)))


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _calls_in_node(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Calls in the stub itself (defaults, decorators) and in its docstring."""
    found = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return found | _calls_in_doc(ast.get_docstring(node) or "")


def _calls_in_doc(doc: str) -> set[str]:
    """Names called in a docstring: doctest lines parsed with ast, and ``name(`` in the prose.
    (Filtered to spec functions by the caller.)"""
    found: set[str] = set()
    prose: list[str] = []
    for line in doc.splitlines():
        s = line.strip()
        if s.startswith((">>>", "...")):
            try:
                tree = ast.parse(s[3:].strip())
            except SyntaxError:
                continue
            found |= {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        else:
            prose.append(line)
    found |= set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*\(", "\n".join(prose)))
    return found


# ---------------------------------------------------------------------------- JSON specs


class _JsonFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: str = Field(min_length=1)
    doc: str = Field(min_length=1)
    calls: list[str] = Field(default_factory=list)


class _JsonSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    module: str | None = None
    doc: str = ""
    functions: list[_JsonFunction]
    tests: str = Field(min_length=1)


def parse_json_spec(doc: Any, *, module: str = "module", source: str = "<spec>") -> Spec:
    """A Spec from a parsed JSON spec (see the module docs)."""
    if not isinstance(doc, dict):
        raise InputError(f"spec {source}: the JSON must be an object with 'functions' and 'tests', got a {type(doc).__name__}")
    try:
        js = _JsonSpec.model_validate(doc)
    except ValidationError as e:
        loc, msg = first_problem(e)
        raise InputError(f"spec {source}: field '{loc}': {msg}") from None
    if not js.functions:
        raise InputError(f"spec {source}: 'functions' is empty; list at least one function to write")
    functions = []
    for k, f in enumerate(js.functions):
        try:
            name = function_name(f.signature)
        except ValueError as e:
            raise InputError(f"spec {source}: functions[{k}].signature {f.signature[:60]!r}: {e}") from None
        functions.append({"name": name, "signature": f.signature.strip().rstrip(":"), "doc": f.doc.strip(),
                          "calls": sorted(set(f.calls) | _calls_in_doc(f.doc)), "explicit": list(f.calls)})
    try:
        ast.parse(js.tests, f"{source}:tests")
    except SyntaxError as e:
        raise InputError(f"spec {source}: 'tests' line {e.lineno}: {e.msg}; fix the tests so they parse") from None
    header, tests = _split_future(js.tests)
    return _build(js.module or module, js.doc.strip(), functions, tests, header, source)


def _split_future(tests: str) -> tuple[str, str]:
    tree = ast.parse(tests)
    lines = tests.splitlines(keepends=True)
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            drop |= span(node)
    header = "".join(lines[i] for i in sorted(drop))
    return header, "".join(line for i, line in enumerate(lines) if i not in drop)


# ---------------------------------------------------------------------------- checks and tests


def _build(module: str, doc: str, functions: list[dict[str, Any]], tests: str, header: str, source: str) -> Spec:
    if not _IDENT.match(module):
        raise InputError(f"spec {source}: module name {module!r} is not a Python identifier; rename the file")
    names = [f["name"] for f in functions]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(f"spec {source}: function {n}() is declared twice; each function once")
        seen.add(n)
        if n.startswith("test"):
            raise InputError(f"spec {source}: {n}() is named like a test; functions to write must not start with 'test'")
    for f in functions:
        for c in f.get("explicit", []):
            if c not in seen:
                raise InputError(f"spec {source}: {f['name']}() calls {c!r}, which is not a function of the spec ({', '.join(names)})")
        f["calls"] = sorted(c for c in f["calls"] if c in seen and c != f["name"])
    graph = {f["name"]: f["calls"] for f in functions}
    order = _order(graph, source)
    suite = SpecTests(tests, set(names), source)
    by_name = {f["name"]: f for f in functions}
    built = []
    for name in order:
        own = suite.tests_for(name, _closure(graph, name))
        if not own:
            raise InputError(
                f"spec {source}: no test checks {name}() on its own; add a 'def test_...():' that calls {name}() "
                f"(and only functions it calls: {', '.join(sorted(_closure(graph, name))) or 'none'})"
            )
        f = by_name[name]
        step_tests = suite.source_for(own)
        _check_tests(step_tests, source)
        built.append(FunctionSpec(name=name, signature=f["signature"], doc=f["doc"], calls=f["calls"],
                                  tests=step_tests, test_names=own))
    _check_tests(tests, source)
    return Spec(module=module, doc=doc, functions=built, tests=tests, header=header, source=source)


def _check_tests(tests: str, source: str) -> None:
    try:
        plan_tests(tests)
    except InputError as e:
        raise InputError(f"spec {source}: {e}") from None


def _closure(graph: dict[str, list[str]], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(graph.get(name, []))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(graph.get(n, []))
    seen.discard(name)
    return seen


def _order(graph: dict[str, list[str]], source: str) -> list[str]:
    """Dependencies first; ties keep the spec's order. InputError names a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join(f"{x}()" for x in [*trail[trail.index(n):], n])
            raise InputError(
                f"spec {source}: the functions call each other in a cycle: {cycle} (read from their docstrings); "
                "a function may only call functions that do not call it back"
            )
        state[n] = 1
        for d in graph[n]:
            visit(d, [*trail, n])
        state[n] = 2
        order.append(n)

    for n in graph:
        visit(n, [])
    return order

"""Reading a tests module in the parent (never in the child): which tests it defines, and
which names it expects from the candidate."""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from tinyfleet_core.errors import InputError

__all__ = ["TOPLEVEL_TEST", "TestPlan", "plan_tests"]

TOPLEVEL_TEST = "<top-level asserts>"
"""The name under which a tests module's top-level asserts are reported (one test)."""


@dataclass(frozen=True)
class TestPlan:
    """The tests a tests module defines, as read by the parent (never by the child)."""

    functions: tuple[str, ...]
    toplevel: bool
    references: tuple[str, ...] = ()
    """Names the tests read that they may expect from the candidate (builtins never count)."""

    @property
    def names(self) -> list[str]:
        """Every test in the order the harness reports them."""
        return ([TOPLEVEL_TEST] if self.toplevel else []) + list(self.functions)


def plan_tests(tests: str) -> TestPlan:
    """Find the tests of a tests module: each top-level ``def test_*()`` plus, when the module
    has asserts outside any function or class, one more for those. Raises InputError."""
    try:
        tree = ast.parse(tests, "<tests>")
    except SyntaxError as e:
        raise InputError(f"tests: not valid Python: {e.msg} (line {e.lineno}); send Python source") from None
    functions: dict[str, None] = {}
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("test"):
            raise InputError(f"tests: {node.name} is async; write tests as plain functions")
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            _check_test_function(node)
            functions[node.name] = None
    toplevel = any(isinstance(n, ast.Assert) for n in _walk_outside_defs(tree))
    if not functions and not toplevel:
        raise InputError("tests: no test found; define 'def test_...():' functions or write top-level asserts")
    return TestPlan(tuple(functions), toplevel, _references(tree))


_BUILTIN_NAMES = frozenset(dir(builtins))


def _references(tree: ast.Module) -> tuple[str, ...]:
    """Names the tests load anywhere, minus builtins and dunders: those the judge asks the
    candidate for. A builtin name is never taken from the candidate, so ``len = lambda x: 3``
    in the code does not change what ``len`` means in the tests."""
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return tuple(sorted(n for n in names if n not in _BUILTIN_NAMES and not n.startswith("__")))


def _check_test_function(node: ast.FunctionDef) -> None:
    a = node.args
    required = len(a.posonlyargs) + len(a.args) - len(a.defaults) + sum(d is None for d in a.kw_defaults)
    if required:
        raise InputError(f"tests: {node.name} takes arguments; a test is called with none")
    if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _walk_outside_defs(node, root=True)):
        raise InputError(f"tests: {node.name} is a generator, so calling it would run nothing")


def _walk_outside_defs(node: ast.AST, root: bool = False) -> list[ast.AST]:
    """Nodes of ``node`` that are not inside a nested function, lambda or class."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        out.append(n)
        stack.extend(ast.iter_child_nodes(n))
    return out

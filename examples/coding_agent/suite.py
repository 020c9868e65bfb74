"""The test section of a spec, split per function.

A spec's tests are its ``test_*`` functions plus a shared *prelude* (imports, constants, helper
functions). Each function's step runs the prelude and the tests that call that function and
nothing but it and the functions it calls; the rest (tests that call unrelated functions,
top-level asserts) run on the assembled module only. Reading the file also rejects what cannot
work in the sandbox: names nobody defines, imports outside the standard library, top-level code
that calls the functions being written.
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections.abc import Iterable

from tinyfleet_core.errors import InputError

__all__ = ["SpecTests", "span"]

_BUILTINS = frozenset(dir(builtins))


class SpecTests:
    """The test file, split into its shared prelude and its tests, with what each test calls."""

    def __init__(self, tests: str, names: set[str], source: str) -> None:
        try:
            tree = ast.parse(tests)
        except SyntaxError as e:
            raise InputError(f"spec {source}: tests line {e.lineno}: {e.msg}") from None
        self.lines = tests.splitlines(keepends=True)
        self.names = names
        self.source = source
        module_bound = set(names) | _bound(tree.body, top=True)
        helpers: dict[str, set[str]] = {}
        self.tests: dict[str, tuple[ast.stmt, set[str]]] = {}
        self.prelude: list[ast.stmt] = []
        uses: dict[str, set[str]] = {}
        for node in tree.body:
            _check_imports(node, source)
            free = _free(node) - module_bound - _BUILTINS
            if free:
                what = f"{node.name}()" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else f"line {node.lineno}"
                unknown = sorted(free)[0]
                raise InputError(
                    f"spec {source}: {what} uses {unknown}, which is neither a function of the spec "
                    f"({', '.join(sorted(names))}) nor defined in the test file"
                )
            refs = {n for n in _loads(node) if n in module_bound}
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                self.tests[node.name] = (node, set())
                uses[node.name] = refs
            elif isinstance(node, ast.Assert) or _has_toplevel_assert(node):
                continue  # top-level asserts run with the whole file only
            else:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    helpers[node.name] = refs
                elif refs & names:
                    raise InputError(
                        f"spec {source}: line {node.lineno}: top-level code calls {', '.join(sorted(refs & names))}(); "
                        "move it into a test function"
                    )
                self.prelude.append(node)
        for tname, (node, _) in self.tests.items():
            self.tests[tname] = (node, _expand(uses[tname], helpers) & names)

    def tests_for(self, name: str, deps: set[str]) -> list[str]:
        """The tests that call ``name`` and nothing but ``name`` and what it calls."""
        allowed = deps | {name}
        return [t for t, (_, calls) in self.tests.items() if name in calls and calls <= allowed]

    def source_for(self, tests: Iterable[str]) -> str:
        keep = set(tests)
        nodes = [*self.prelude, *(n for t, (n, _) in self.tests.items() if t in keep)]
        nodes.sort(key=lambda n: n.lineno)
        return "\n".join("".join(self.lines[i] for i in sorted(span(n))).rstrip("\n") + "\n" for n in nodes)


def span(node: ast.stmt) -> set[int]:
    """The 0-based lines of a statement, decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return set(range(first - 1, (node.end_lineno or node.lineno)))


def _check_imports(node: ast.stmt, source: str) -> None:
    """The sandbox runs the standard library only (``python -I -S``): no pytest, no numpy."""
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            mods = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            mods = [n.module]
        else:
            continue
        for m in mods:
            if m.split(".")[0] not in sys.stdlib_module_names:
                raise InputError(
                    f"spec {source}: line {n.lineno}: the tests import {m}, which the sandbox does not have (it runs "
                    "the standard library only); write plain asserts"
                )


def _has_toplevel_assert(node: ast.stmt) -> bool:
    """An if/for/with/try at module level holding asserts (they count as top-level asserts)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return False
    stack: list[ast.AST] = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Assert):
            return True
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(n))
    return False


def _expand(refs: set[str], helpers: dict[str, set[str]]) -> set[str]:
    out, stack = set(refs), list(refs)
    while stack:
        for r in helpers.get(stack.pop(), set()):
            if r not in out:
                out.add(r)
                stack.append(r)
    return out


def _bound(nodes: Iterable[ast.AST], top: bool = False) -> set[str]:
    """Names bound by these nodes; at module level only the top-level bindings matter."""
    out: set[str] = set()
    for root in nodes:
        for n in ast.walk(root) if not top else _toplevel_walk(root):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
                out.add(n.id)
            elif isinstance(n, ast.alias):
                out.add((n.asname or n.name).split(".")[0])
            elif isinstance(n, ast.arg):
                out.add(n.arg)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                out.add(n.name)
            elif isinstance(n, ast.MatchAs | ast.MatchStar) and n.name:
                out.add(n.name)
            elif isinstance(n, ast.MatchMapping) and n.rest:
                out.add(n.rest)
            elif isinstance(n, ast.Global | ast.Nonlocal):
                out.update(n.names)
    return out


def _toplevel_walk(node: ast.AST) -> Iterable[ast.AST]:
    """``node`` and its descendants, not entering function, lambda or class bodies."""
    yield node
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
        return
    for child in ast.iter_child_nodes(node):
        yield from _toplevel_walk(child)


def _loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _free(node: ast.stmt) -> set[str]:
    """Names ``node`` reads that nothing inside it binds (over-approximate bindings: any
    binding anywhere inside counts, which is enough to find names nobody defines)."""
    return _loads(node) - _bound([node])

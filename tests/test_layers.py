"""The house has layers: a lower layer never imports a higher one, and no modules import each
other in a circle.

An AST scan of every module's module-level imports (top-level statements, ``if`` and ``try``
blocks included, ``TYPE_CHECKING`` blocks included: a type-only cycle is still a cycle;
imports inside functions are not scanned). Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, so those count as imported too. ``__main__`` modules are entry scripts that
nothing imports; they may reach up (``python -m orchestrator`` runs the CLI).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module's layer is the one of its longest matching prefix.
LAYERS: list[tuple[str, list[str]]] = [
    ("data models and errors", ["tinyfleet_core"]),
    ("worker contract", ["workers", "workers.base", "workers.registry", "workers.custom"]),
    ("task kits", ["workers.kits"]),
    ("nn models", ["workers.models"]),
    (
        "serving",
        ["workers.serving", "workers.llm", "workers.sandbox", "workers.code", "workers.builtin", "workers.checkpoints"],
    ),
    ("training", ["workers.training", "workers.humaneval_check"]),
    ("planners", ["planners"]),
    ("run loop, executors, Fleet", ["orchestrator"]),
    ("public face", ["tinyfleet"]),
    ("example agents", ["examples", "tinyfleet.examples"]),
    ("CLI and benchmarks", ["tinyfleet.cli", "tinyfleet.bench"]),
]
PACKAGES = ("tinyfleet_core", "workers", "planners", "orchestrator", "tinyfleet", "examples")


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for h in node.handlers:
                out += _top_level(h.body)
    return out


def module_imports(path: Path, source: str | None = None) -> set[str]:
    """Project modules that importing ``path`` runs at import time (parents included)."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(source if source is not None else path.read_text())
    targets: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets.add(target)
            # `from pkg import mod` imports pkg.mod when it is a module
            for a in node.names:
                candidate = f"{target}.{a.name}"
                if _exists(candidate):
                    targets.add(candidate)
    out: set[str] = set()
    for t in targets:
        if t == "tinyfleet.examples" or t.startswith("tinyfleet.examples."):
            t = t[len("tinyfleet."):]  # installed name of the repository's examples/ folder
        if t.split(".")[0] not in PACKAGES:
            continue
        parts = t.split(".")
        out.add(t)
        # the packages above the target run first; the importer's own packages have already run
        out |= {".".join(parts[:i]) for i in range(1, len(parts)) if not module.startswith(".".join(parts[:i]) + ".")}
    out.discard(module)
    return {m for m in out if _exists(m)}


def _exists(module: str) -> bool:
    p = ROOT.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[_module_name(path)] = path
    return mods


def upward_imports(mods: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in mods.items():
        if name.endswith("__main__"):
            continue
        here = layer_of(name)
        for target in sorted(module_imports(path)):
            there = layer_of(target)
            if there > here:
                bad.append(f"{name} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    return bad


def cycles(mods: dict[str, Path]) -> list[list[str]]:
    graph = {name: sorted(module_imports(path)) for name, path in mods.items() if not name.endswith("__main__")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    missing = [m for m in project_modules() if layer_of(m) < 0]
    assert missing == [], f"modules without a layer (add them to LAYERS): {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    bad = upward_imports(project_modules())
    assert bad == [], "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    assert cycles(project_modules()) == []


def test_no_lazy_module_getattr_in_package_inits() -> None:
    """The PEP 562 ``__getattr__`` that hid cycles is gone from every package ``__init__``."""
    lazy = [
        name
        for name, path in project_modules().items()
        if path.name == "__init__.py"
        and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(path.read_text()).body)
    ]
    assert lazy == []


@pytest.mark.parametrize(
    ("module", "added", "expect"),
    [
        ("workers/kits/sudoku.py", "from orchestrator.fleet import Fleet\n", "imports orchestrator.fleet"),
        ("tinyfleet_core/models.py", "if True:\n    import workers.builtin\n", "imports workers.builtin"),
        ("planners/rules.py", "from tinyfleet.cli import main\n", "imports tinyfleet.cli"),
    ],
)
def test_the_scan_catches_an_added_upward_import(module: str, added: str, expect: str) -> None:
    """The checker itself can fail: an upward import added to a real module is reported."""
    path = ROOT / module
    src = path.read_text() + "\n" + added
    name = _module_name(path)
    here = layer_of(name)
    reported = [
        f"{name} ({LAYERS[here][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for t in sorted(module_imports(path, src))
        if layer_of(t) > here
    ]
    assert any(expect in line for line in reported), reported


SANDBOX_CHILD = ROOT / "workers" / "sandbox" / "_child.py"


def sandbox_child_problems(override: dict[str, str] | None = None) -> tuple[set[str], list[str]]:
    """The files the sandbox's child loads, and every import among them (module level or inside
    a function) that is neither the standard library nor a sibling file it loads by name."""
    folder = SANDBOX_CHILD.parent
    seen: set[str] = set()
    todo, problems = [SANDBOX_CHILD.stem], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = (override or {}).get(name) or (folder / f"{name}.py").read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                problems.append(f"{name}.py: a relative import (it would import the package)")
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [node.module or ""]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                if (folder / f"{top}.py").is_file():
                    todo.append(top)
                elif top not in sys.stdlib_module_names:
                    problems.append(f"{name}.py imports {target}")
    return seen, problems


def test_the_sandbox_child_loads_only_the_stdlib_and_its_siblings() -> None:
    """The sandboxed interpreter runs ``workers/sandbox/_child.py`` as a file (``-I -S``): it and
    the siblings it imports by file name use the standard library only, never the ``workers``
    package or anything installed; and no file beside it shadows a standard-library module
    while that folder is on ``sys.path``."""
    seen, problems = sandbox_child_problems()
    assert problems == []
    assert {"_child", "_isolation", "_roles", "codec", "seccomp"} <= seen
    shadows = sorted(p.stem for p in SANDBOX_CHILD.parent.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert shadows == [], f"rename these sandbox files, they shadow stdlib modules in the child: {shadows}"
    # the check itself can fail: a package import added inside a child-side function is reported
    roles = (SANDBOX_CHILD.parent / "_roles.py").read_text()
    _, added = sandbox_child_problems({"_roles": roles + "\n\ndef f() -> None:\n    from workers.sandbox import limits\n"})
    assert added == ["_roles.py imports workers.sandbox"]

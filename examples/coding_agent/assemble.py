"""Put verified functions together into one module source.

Each part is the code one step wrote for one function (its helpers and imports included). The
module is: the docstring, the ``from __future__`` lines, every import of every part (each once,
in first-seen order), then each part's remaining code in dependency order. A part that also
defines *another* spec function (a model copying a dependency it was shown) loses that copy:
the dependency's own verified part defines it. Everything else of a part is kept verbatim,
comments included.
"""

from __future__ import annotations

import ast

__all__ = ["assemble", "stub_part"]


def assemble(doc: str, header: str, names: list[str], parts: list[str]) -> str:
    """The module source; ``names[k]`` is the function ``parts[k]`` was written for."""
    if len(names) != len(parts):
        raise ValueError(f"{len(names)} names for {len(parts)} parts; give one part per function")
    futures: list[str] = [line for line in header.splitlines() if line.strip()]
    imports: list[str] = []
    bodies: list[str] = []
    spec_names = set(names)
    for name, code in zip(names, parts, strict=True):
        fut, imp, body = _split(code, spec_names - {name})
        futures.extend(x for x in fut if x not in futures)
        imports.extend(x for x in imp if x not in imports)
        if body.strip():
            bodies.append(body.strip("\n"))
    head = [block for block in (_docstring(doc) if doc.strip() else "", "\n".join(futures), "\n".join(imports)) if block]
    return "\n\n\n".join(["\n\n".join(head), *bodies] if head else bodies) + "\n"


def stub_part(signature: str, doc: str) -> str:
    """What stands in for a function no step could write: it raises NotImplementedError."""
    name = signature.split("(", 1)[0].split()[-1]
    return (
        f"{signature}:\n    {_docstring(doc, indent='    ')}\n"
        f"    raise NotImplementedError({(name + ': no verified implementation was found').__repr__()})\n"
    )


def _docstring(doc: str, indent: str = "") -> str:
    text = doc.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if "\n" in text:
        text = text.replace("\n", "\n" + indent) + "\n" + indent
    return f'"""{text}"""'


def _split(code: str, others: set[str]) -> tuple[list[str], list[str], str]:
    """(future lines, import lines, the rest) of one part. A part that does not parse is kept
    whole (the module's tests will then say what is wrong with it)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [], [], code
    lines = code.splitlines(keepends=True)
    drop: set[int] = set()
    futures: list[str] = []
    imports: list[str] = []
    for k, node in enumerate(tree.body):
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        span = set(range(first, node.end_lineno or node.lineno))
        text = "".join(lines[i] for i in sorted(span)).strip()
        if k == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            drop |= span  # the part's own module docstring
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            futures.append(text)
            drop |= span
        elif isinstance(node, ast.Import | ast.ImportFrom) and node.col_offset == 0 and "\n" not in text:
            imports.append(text)
            drop |= span
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name in others:
            drop |= span
    rest = "".join(line for i, line in enumerate(lines) if i not in drop)
    return futures, imports, _squeeze(rest)


def _squeeze(text: str) -> str:
    """At most two blank lines in a row (dropping statements leaves gaps)."""
    out: list[str] = []
    blank = 0
    for line in text.splitlines():
        blank = blank + 1 if not line.strip() else 0
        if blank <= 2:
            out.append(line)
    return "\n".join(out).strip("\n")

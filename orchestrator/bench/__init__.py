"""``tinyfleet bench``: side-by-side benchmarks, each comparison in one process, reported as
ratios (these machines are shared and noisy). Writes a JSON file and a markdown table to
``--out``; ``--quick`` keeps every benchmark to a few seconds or minutes."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["BENCHMARKS", "bench_command", "run_benchmarks"]

# name -> module implementing run(quick: bool) -> dict with "rows" (list of dicts) and "summary"
BENCHMARKS: dict[str, str] = {
    "dispatch": ".dispatch",
    "verify": ".verify",
}


def _load(name: str) -> Callable[[bool], dict[str, Any]]:
    mod = importlib.import_module(BENCHMARKS[name], __name__)
    return mod.run  # type: ignore[no-any-return]


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def run_benchmarks(names: list[str], quick: bool) -> dict[str, Any]:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "tinyfleet bench " + " ".join([*names, *(["--quick"] if quick else [])]),
        "machine": machine(),
        "benchmarks": {},
    }
    for name in names or list(BENCHMARKS):
        t0 = time.perf_counter()
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        res = _load(name)(quick)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results["benchmarks"][name] = res
    return results


def markdown(results: dict[str, Any]) -> str:
    out = [f"Measured {results['date']} with `{results['command']}` on {results['machine']['cpus']} CPUs "
           f"({results['machine']['platform']}, Python {results['machine']['python']}).", ""]
    for name, res in results["benchmarks"].items():
        rows = res.get("rows", [])
        out.append(f"**{name}**: {res.get('summary', '')}")
        out.append("")
        if rows:
            cols = list(dict.fromkeys(k for r in rows for k in r))
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            for r in rows:
                out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
            out.append("")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def bench_command(args: argparse.Namespace) -> int:
    results = run_benchmarks(list(args.names), bool(args.quick))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    md = markdown(results)
    (out / "bench.md").write_text(md)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(md)
    failed = [n for n, r in results["benchmarks"].items() if r.get("ok") is False]
    return 1 if failed else 0

"""``tinyfleet bench``: side-by-side benchmarks, each comparison in one process, reported as
ratios (these machines are shared and noisy). Writes a JSON file, a markdown table and one
PNG plot per benchmark to ``--out``; ``--quick`` keeps every benchmark to a few seconds or
minutes.

Each benchmark module has ``run(quick: bool) -> dict`` returning ``rows`` (list of dicts),
``summary`` (one line), ``ok`` (whether its target was met) and optionally ``plot`` (see
:mod:`.plots`). Modules that take ``tiny=True`` shrink to a smoke-test size (for the tests)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyfleet_core.errors import InputError

__all__ = ["BENCHMARKS", "bench_command", "run_benchmarks", "write_results", "markdown"]

# name -> module implementing run(quick: bool) -> dict with "rows" (list of dicts) and "summary"
BENCHMARKS: dict[str, str] = {
    "escalation": ".escalation",
    "dispatch": ".dispatch",
    "batching": ".batching",
    "dag": ".dag",
    "halting": ".halting",
    "particles": ".particles",
    "verify": ".verify",
    "startup": ".startup",
    "learning": ".learning",
    "serving": ".serving",
    "scale": ".scale",
}


def _load(name: str) -> Callable[..., dict[str, Any]]:
    mod = importlib.import_module(BENCHMARKS[name], __name__)
    return mod.run  # type: ignore[no-any-return]


def _takes_tiny(fn: Callable[..., Any]) -> bool:
    return "tiny" in inspect.signature(fn).parameters


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def run_benchmarks(names: list[str], quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Run ``names`` (all when empty) in order. ``tiny`` shrinks the benchmarks that support
    it to smoke-test sizes (tests only: their numbers mean nothing). InputError on unknown names."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["tinyfleet bench", *names, *(["--quick"] if quick else [])]),
        "machine": machine(),
        "benchmarks": {},
    }
    for name in names or list(BENCHMARKS):
        t0 = time.perf_counter()
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        fn = _load(name)
        res = fn(quick, tiny=True) if tiny and _takes_tiny(fn) else fn(quick)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results["benchmarks"][name] = res
    return results


def markdown(results: dict[str, Any]) -> str:
    out = [f"Measured {results['date']} with `{results['command']}` on {results['machine']['cpus']} CPUs "
           f"({results['machine']['platform']}, Python {results['machine']['python']}).", ""]
    for name, res in results["benchmarks"].items():
        rows = res.get("rows", [])
        ok = res.get("ok")
        verdict = "target met" if ok is True else ("target NOT met" if ok is False else "no target")
        out.append(f"**{name}** ({verdict}): {res.get('summary', '')}")
        out.append("")
        out.extend(_table(rows))
        if res.get("simulated_model"):
            out.extend(_sim_table(res["simulated_model"]))
        for title, table in (res.get("tables") or {}).items():
            out.append(f"*{name}: {title}*")
            out.append("")
            out.extend(_table(table))
        if res.get("png"):
            out.append(f"![{name}]({res['png']})")
            out.append("")
    return "\n".join(out)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out.extend("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows)
    return [*out, ""]


def _sim_table(sim: dict[str, Any]) -> list[str]:
    """The simulated large model's stated parameters, one table."""
    out = ["*simulated models (stated parameters and sources)*", "", "| parameter | value | source |", "|---|---|---|"]
    for m in sim.get("models", []):
        out.append(f"| {m['name']}: time to first token / output speed / max in flight | {m['ttft_s']} s / "
                   f"{m['tokens_per_s']} tok/s / {m['max_concurrent']} | {m['source']} |")
        out.append(f"| {m['name']}: price in / out per Mtok | ${m['usd_per_mtok_in']} / ${m['usd_per_mtok_out']} | (see above) |")
    for e in sim.get("error_rates", []):
        out.append(f"| error rate, {e['step']} | {e['error_rate']} | {e['source']} |")
    out.append(f"| tokens | counted, not reported by a model | {sim.get('tokens', '')} |")
    out.append(f"| seed | {sim.get('seed')} | wrong answers are chosen by a hash of seed and request |")
    return [*out, ""]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def write_results(results: dict[str, Any], out: Path) -> str:
    """Write ``bench.json``, ``bench.md`` and one ``<name>.png`` per benchmark into ``out``;
    return the markdown."""
    from tinyfleet.bench.plots import plot_benchmark

    out.mkdir(parents=True, exist_ok=True)
    for name, res in results["benchmarks"].items():
        png = plot_benchmark(name, res, out)
        if png is not None:
            res["png"] = png.name
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    md = markdown(results)
    (out / "bench.md").write_text(md)
    return md


def bench_command(args: argparse.Namespace) -> int:
    results = run_benchmarks(list(args.names), bool(args.quick))
    if args.json:
        results["command"] += " --json"
    results["command"] += f" --out {args.out}"
    md = write_results(results, Path(args.out))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(md)
    # Exit 0 when every benchmark ran: whether each met its target is data (``ok`` in the JSON,
    # "target NOT met" in the table), not a failure of the command.
    missed = [n for n, r in results["benchmarks"].items() if r.get("ok") is False]
    if missed:
        print(f"targets not met: {', '.join(missed)} (see bench.md)", file=sys.stderr)
    return 0

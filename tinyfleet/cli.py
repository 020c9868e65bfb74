"""The ``tinyfleet`` command line (also ``python -m orchestrator``).

Exit status: 0 succeeded; 1 the run failed or stopped partial, or a model gave no valid plan;
2 bad input or usage, with one line on stderr naming the problem (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.config import FleetConfig
from orchestrator.console import render_report
from orchestrator.escalation import Policy, ladder_for
from orchestrator.exit_status import _UsageError, interruptible, note_journal, run_guarded
from orchestrator.fleet import Fleet
from orchestrator.journal import journal_path, write_report_json
from orchestrator.progress import Progress
from orchestrator.taskfile import load_task, read_json
from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import RunReport, Step, Strategy, Task
from workers.llm.client import OpenAISettings

__all__ = ["main", "build_parser", "run_guarded"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, no usage dump
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyfleet", description="A large planner model steering a fleet of tiny verified models on Ray.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_exec(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--executor", choices=["ray", "local"], default=None, help="where workers run (default: TINYFLEET_EXECUTOR, else ray)")
        sp.add_argument("--address", default=None, help="Ray address to attach to (default: start a local Ray, or RAY_ADDRESS)")

    d = sub.add_parser("demo", help="the main job: plan a delivery day, offline, on the embedded default")
    d.add_argument("--json", action="store_true", help="print only the RunReport as JSON")
    d.add_argument("--out", default="tinyfleet-demo", help="directory for the itinerary, map and report")
    d.add_argument("--seed", type=int, default=7, help="scenario generator seed")
    d.add_argument("--scenario", default=None, help="a scenario JSON file instead of a generated one")
    d.add_argument("--planner", choices=["rules", "openai"], default="rules")
    add_exec(d)

    r = sub.add_parser("run", help="run a task file")
    r.add_argument("task", nargs="?", help="task JSON file (omit with --resume)")
    r.add_argument("--planner", choices=["rules", "openai"], default=None, help="default: TINYFLEET_PLANNER, else rules")
    r.add_argument("--journal", default=None, help="journal file (default: runs/<task id>.sqlite)")
    r.add_argument("--resume", default=None, help="continue the run recorded in this journal")
    r.add_argument("--policy", choices=["ladder", "tiny_only", "final_only"], default=None, help="default: TINYFLEET_POLICY, else ladder")
    r.add_argument("--particles", type=_positive_int, default=None, help="particles per step, 1 or more (overrides the plan)")
    r.add_argument("--json", action="store_true", help="print only the RunReport as JSON")
    r.add_argument("--learn", action="store_true", help="learn from this run's escalations (docs/learning.md)")
    r.add_argument("--view", action="store_true", help="serve the run viewer on 127.0.0.1 and print its address; the page follows the run")
    r.add_argument("--seed", type=int, default=None, help="seed of small-LLM particles (default: drawn per run)")
    r.add_argument("--no-served", dest="served", action="store_false",
                   help="run on a fleet of its own even when `tinyfleet serve` is running")
    add_exec(r)

    sv = sub.add_parser("serve", help="keep a fleet running (Ray and warm pools) for the commands that follow")
    sv.add_argument("--planner", choices=["rules", "openai"], default=None, help="default: TINYFLEET_PLANNER, else rules")
    sv.add_argument("--socket", default=None, help="the socket to serve on (default: TINYFLEET_SERVE_SOCKET, else per user)")
    sv.add_argument("--status", action="store_true", help="say whether a fleet is served, and exit")
    sv.add_argument("--stop", action="store_true", help="stop the served fleet, and exit")
    add_exec(sv)

    s = sub.add_parser("skills", help="skills, their tiers, workers and checkpoints")
    s.add_argument("--json", action="store_true")

    v = sub.add_parser("verify", help="run one skill's verifier on an answer")
    v.add_argument("--skill", required=True)
    v.add_argument("--input", required=True, help="JSON file with the skill's input payload")
    v.add_argument("--answer", required=True, help="JSON file with the answer (the skill's output payload)")
    v.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train a tiny model and write a checkpoint + model card")
    t.add_argument("--skill", required=True)
    t.add_argument("--model", required=True, choices=["trm", "hrm", "cfc", "ltc", "ssm"])
    t.add_argument("--size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output directory (default ./checkpoints; the bundled workers/checkpoints only when named here)")
    from workers.training.args import add_train_options

    add_train_options(t)

    sub.add_parser("calibrate", add_help=False,
                   help="fit a checkpoint's halting and confidence on held-out items (tinyfleet calibrate --help)")
    sub.add_parser("tune-serving", add_help=False,
                   help="measure a checkpoint's best serving batch and write it into its model card (tinyfleet tune-serving --help)")
    sub.add_parser("learn", add_help=False,
                   help="fine-tune a served tiny model on its lessons, behind a gate (tinyfleet learn --help)")

    e = sub.add_parser("eval", help="evaluate a bundled or given checkpoint")
    e.add_argument("--skill", required=True)
    e.add_argument("--model", default=None, choices=["trm", "hrm", "cfc", "ltc", "ssm"])
    e.add_argument("--size", type=int, default=None)
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--no-halt", dest="halt", action="store_false", help="always run N_sup steps")
    e.add_argument("--json", action="store_true")
    from workers.training.args import add_eval_options

    add_eval_options(e)

    vw = sub.add_parser("view", help="look at a run in the browser: its plan DAG, attempts, verdicts, costs and timeline")
    vw.add_argument("source", help="a run journal (runs/<task id>.sqlite) or a RunReport JSON file (run --json, demo's report.json)")
    vw.add_argument("--port", type=int, default=None, help="serve on 127.0.0.1:PORT (default: a free port; with --html only when given)")
    vw.add_argument("--html", default=None, help="write the page as one self-contained HTML file (opens offline)")

    b = sub.add_parser("bench", help="side-by-side benchmarks")
    b.add_argument("names", nargs="*")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--json", action="store_true")
    b.add_argument("--out", default="bench-out")
    return p


def _print_report(report: RunReport, as_json: bool, progress: Progress | None = None, task: Task | None = None) -> None:
    if as_json:  # every step whole: a large run's trials are read back from its journal
        write_report_json(report, sys.stdout)
    else:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        render_report(report, console, reasons=progress.reasons if progress else None, inputs=task.inputs if task else None)


def _make_fleet(args: argparse.Namespace, planner_name: str | None = None) -> Fleet:
    """The fleet a command runs on, built the one way every Fleet is built from settings:
    :class:`FleetConfig` (command-line options > ``TINYFLEET_*`` environment > defaults).
    The OpenAI variables are checked here too, so a bad one is refused before any run."""
    OpenAISettings.from_env()
    config = FleetConfig.load(
        executor=getattr(args, "executor", None),
        address=getattr(args, "address", None),
        planner=planner_name,
        policy=getattr(args, "policy", None),
    )
    return Fleet.from_settings(config)


async def _run_with_progress(fleet: Fleet, hook: Progress | None, **kw: Any) -> RunReport:
    if hook is not None:
        fleet.executor.add_listener(hook.executor_event)
    try:
        return await fleet.run(on_event=hook, **kw)
    finally:
        if hook is not None:
            hook.close()
        await fleet.close()


def _served_socket(args: argparse.Namespace, config: FleetConfig) -> Any:
    """The socket of a ``tinyfleet serve`` this run may use, or None: only for a run that would
    start a Ray of its own (Ray executor, no address named), with the served fleet's planner and
    no per-run seed, unless ``--no-served``."""
    if not args.served or args.seed is not None or args.address or os.environ.get("RAY_ADDRESS"):
        return None
    if config.executor != "ray":
        return None
    from orchestrator.serve import default_socket, find_server

    info = find_server(default_socket())
    if info is None or info.planner != config.planner:
        return None
    print(f"tinyfleet: running on the fleet served at {info.socket} (pid {info.pid}, {info.executor}); "
          "--no-served runs on a fleet of its own", file=sys.stderr)
    return default_socket()


def _run_served(args: argparse.Namespace, socket_path: Any, task: Task | None, journal: str | None, config: FleetConfig) -> RunReport:
    from orchestrator.serve import ServeRequest, run_on_server

    request = ServeRequest(
        op="run",
        task=task,
        journal=str(Path(journal).resolve()) if journal else None,
        resume=str(Path(args.resume).resolve()) if args.resume else None,
        policy=config.policy,
        particles=args.particles,
        planner=config.planner,
    )
    hook = None if args.json else Progress()
    try:
        return run_on_server(socket_path, request, hook)
    finally:
        if hook is not None:
            hook.close()


def _cmd_run(args: argparse.Namespace) -> int:
    if args.task is None and args.resume is None:
        raise _UsageError("run needs a TASK.json file or --resume JOURNAL")
    task = load_task(args.task) if args.task else None
    if args.view or args.learn:  # the page and the learner follow this process's fleet, not a served one
        args.served = False
    config = FleetConfig.load(executor=args.executor, address=args.address, planner=args.planner, policy=args.policy)
    socket_path = _served_socket(args, config)
    if socket_path is not None:
        journal = args.journal
        if journal is None and args.resume is None and task is not None:
            journal = str(journal_path(config.journal_dir or "runs", task.id))
        if journal or args.resume:
            note_journal(journal or args.resume)
        report = _run_served(args, socket_path, task, journal, config)
        _print_report(report, args.json, None, task)
        return 0 if report.status == "succeeded" else 1
    if args.seed is not None:  # read by every small-LLM tier's settings (OpenAISettings.seed)
        os.environ["TINYFLEET_SEED"] = str(args.seed)
    fleet = _make_fleet(args, args.planner)
    if args.view:
        fleet.serve_view()
    if args.learn:
        from orchestrator.learning import OnlineLearner

        fleet.learner = OnlineLearner()
    if args.particles is not None:
        from planners.rules import RulePlanner

        if not isinstance(fleet.planner, RulePlanner):
            raise _UsageError("--particles applies to the rule planner's plans; an LLM planner sets strategies itself")
        # several particles only help when answers are voted on or verified: vote, then verify
        fleet.planner.strategy = Strategy(particles=args.particles, select="vote")
    journal = args.journal
    if journal is None and args.resume is None and task is not None:
        journal = str(journal_path(fleet.journal_dir or "runs", task.id))
    if journal or args.resume:
        note_journal(journal or args.resume)
    hook = None if args.json else Progress()
    report = asyncio.run(interruptible(_run_with_progress(fleet, hook, task=task, journal=journal, resume=args.resume)))
    _print_report(report, args.json, hook, task)
    if fleet.learner is not None:
        print(fleet.learner.status(timeout_s=900, drain=True), file=sys.stderr)
    _keep_view_up(fleet)
    return 0 if report.status == "succeeded" else 1


def _keep_view_up(fleet: Fleet) -> None:
    """After a ``run --view``: in a terminal, keep the page up until Ctrl-C; then stop it."""
    if fleet.view is None:
        return
    try:
        if sys.stdin.isatty():
            print(f"tinyfleet view: the run is over; the page stays at {fleet.view.url} until Ctrl-C", file=sys.stderr, flush=True)
            fleet.view.server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fleet.view.close()


def _cmd_view(args: argparse.Namespace) -> int:
    """Show a finished (or running) run from its journal or report: write one self-contained
    HTML file (``--html``) and/or serve the page on 127.0.0.1 until Ctrl-C."""
    from orchestrator.view import ViewServer, ViewState, load_document, write_html

    document = load_document(args.source)
    if args.html:
        path = write_html(document, args.html)
        print(f"wrote {path} ({path.stat().st_size:,} bytes; opens offline)", flush=True)
        if args.port is None:
            return 0
    server = ViewServer(ViewState(document), args.port or 0)
    print(f"tinyfleet view: {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from orchestrator.serve import FleetServer, default_socket, find_server, stop_server

    path = Path(args.socket) if args.socket else default_socket()
    if args.status or args.stop:
        info = stop_server(path) if args.stop else find_server(path)
        if info is None:
            print(f"no fleet is served at {path}")
            return 1 if args.status else 0
        age = time.time() - info.started_at
        print(f"{'stopping' if args.stop else 'serving'}: the fleet at {info.socket} (pid {info.pid}, {info.executor}, "
              f"{info.planner} planner, {info.runs} run(s), up {age:.0f} s)")
        return 0
    fleet = _make_fleet(args, args.planner)
    server = FleetServer(executor=fleet.executor, planner=FleetConfig.load(planner=args.planner).planner, path=path)

    async def serve() -> None:
        await server.start()
        print(f"tinyfleet: serving a fleet ({server.executor.name}, {server.planner} planner) at {path}; "
              "`tinyfleet run` uses it; stop with: tinyfleet serve --stop", file=sys.stderr, flush=True)
        await server.serve_until_stopped()

    try:
        asyncio.run(interruptible(serve()))
    finally:
        if path.exists() and find_server(path) is None:
            path.unlink(missing_ok=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the planning agent plans a delivery day offline (rule planner, bundled
    checkpoints, local Ray) and writes the itinerary, the map and the report to --out."""
    from tinyfleet.examples.planning_agent.cli import demo_command

    # the environment's executor and address count here as for every other command
    OpenAISettings.from_env()
    config = FleetConfig.load(executor=args.executor, address=args.address)
    args.executor, args.address = config.executor, config.address
    return int(demo_command(args))


def _cmd_skills(args: argparse.Namespace) -> int:
    from workers.builtin import default_registry

    described = default_registry().describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    registry, policy = default_registry(), Policy()
    for s in described:
        skill = registry.get(s["skill"])
        workers = {t["name"]: t["worker"] for t in [*s["tiers"], *([s["fallback"]] if s["fallback"] else [])]}

        def ladder(has_large: bool, skill: Any = skill, workers: dict[str, str] = workers) -> str:  # as the run loop picks them
            try:
                tiers = ladder_for(Step(id="probe", skill=skill.name), skill, policy, has_large)
            except ConfigError:
                return "(no tier: needs --planner openai)"
            return " -> ".join(f"{t.name}({t.kind}: {workers.get(t.name, 'the planner model')})" for t in tiers)

        print(f"{s['skill']}: {s['description']}")
        print(f"    ladder: {ladder(False)}")
        print(f"    with --planner openai: {ladder(True)}")
        print(f"    verifier: {s['verifier'] or '(none: confidence threshold)'}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from workers.builtin import default_registry
    from workers.registry import validate_payload

    reg = default_registry()
    skill = reg.get(args.skill)
    inp = validate_payload(skill.input_model, read_json(args.input, "input file"), what=f"{skill.name} input")
    ans = validate_payload(skill.output_model, read_json(args.answer, "answer file"), what=f"{skill.name} answer")
    if skill.verifier is None:
        raise ConfigError(f"skill {skill.name!r} has no verifier")
    verdict = skill.verifier.check_batch([(inp, ans)])[0]
    if args.json:
        print(verdict.model_dump_json(indent=2))
    else:
        print(f"{'ok' if verdict.ok else 'rejected'} ({verdict.verifier}): {verdict.reason}")
    return 0 if verdict.ok else 1


def _cmd_train_eval(args: argparse.Namespace) -> int:
    import importlib

    mod = importlib.import_module("workers.training.liquid" if args.skill.startswith("series.") else "workers.training.trainer")
    fn = mod.train_command if args.command == "train" else mod.eval_command
    return int(fn(args))


def _cmd_bench(args: argparse.Namespace) -> int:
    from tinyfleet import bench

    return int(bench.bench_command(args))


_COMMANDS = {
    "demo": _cmd_demo,
    "run": _cmd_run,
    "serve": _cmd_serve,
    "skills": _cmd_skills,
    "verify": _cmd_verify,
    "train": _cmd_train_eval,
    "eval": _cmd_train_eval,
    "bench": _cmd_bench,
    "view": _cmd_view,
}


# commands whose parser and body live with their code: ``tinyfleet NAME --help`` is theirs
_DELEGATED = {
    "calibrate": "workers.training.calibrate",
    "learn": "workers.training.learn",
    "tune-serving": "workers.training.tune_serving",
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    def command() -> int:
        given = sys.argv[1:] if argv is None else list(argv)
        if given[:1] and given[0] in _DELEGATED:  # their options live with their (torch-heavy) code
            import importlib

            delegate: Any = importlib.import_module(_DELEGATED[given[0]]).main
            return int(delegate(given[1:]))
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)

    return run_guarded("tinyfleet", command)


if __name__ == "__main__":
    sys.exit(main())

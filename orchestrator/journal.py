"""The run journal: one SQLite file per run. The task and plan are written before any step
runs; every finished step is appended (and committed) as it finishes, so a run killed at
any moment can be resumed without re-running a settled step. Steps that finish together are
committed in one transaction (:meth:`Journal.append_many`): one disk sync for a batch's steps,
not one per step.

A large run keeps its settled steps' trials here only (``orchestrator.run.TRIALS_KEPT_UP_TO``):
:func:`report_steps` reads a report's steps back whole, one at a time, and
:func:`write_report_json` writes the whole report as JSON from them without holding it all."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Plan, RunReport, StepResult, Task

__all__ = ["Journal", "StepReader", "journal_path", "report_steps", "write_report_json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_id ON steps (step_id);
"""


def journal_path(directory: str | Path, task_id: str) -> Path:
    """``directory/<task_id>.sqlite``, refused (ConfigError) unless it is a plain file directly
    inside ``directory``: an id with a separator, ``..``, a NUL or any control character never
    makes a journal elsewhere (``Task`` validates ids too; this holds for any caller)."""
    if (not task_id or "/" in task_id or "\\" in task_id or task_id.startswith(".")
            or any(ord(c) < 32 or ord(c) == 127 for c in task_id)):
        raise ConfigError(f"task id {task_id[:80]!r} cannot name a journal file; use 1-64 of A-Z a-z 0-9 . _ -")
    base = Path(directory)
    path = base / f"{task_id}.sqlite"
    if path.resolve().parent != base.resolve():
        raise ConfigError(f"the journal for task {task_id[:80]!r} would leave {base}; refusing")
    return path


class Journal:
    """Append-only record of one run. Safe to use from the event loop (writes are small)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"journal {self.path} is not a tinyfleet journal (SQLite said: {e})") from None
        self._lock = threading.Lock()

    @classmethod
    def open_existing(cls, path: str | Path) -> Journal:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"journal {p} does not exist; pass the file a previous run wrote with --journal")
        j = cls(p)
        if j.task() is None or j.plan() is None:
            raise ConfigError(f"journal {p} holds no task and plan; it was not written by a tinyfleet run")
        return j

    def _set(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def write_start(self, task: Task, plan: Plan) -> None:
        self._set("task", task.model_dump_json())
        self._set("plan", plan.model_dump_json())
        if self._get("started_at") is None:
            self._set("started_at", repr(time.time()))

    def task(self) -> Task | None:
        raw = self._get("task")
        return Task.model_validate_json(raw) if raw else None

    def plan(self) -> Plan | None:
        raw = self._get("plan")
        return Plan.model_validate_json(raw) if raw else None

    def append(self, result: StepResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO steps (step_id, status, result, at) VALUES (?, ?, ?, ?)",
                (result.step_id, result.status, result.model_dump_json(), time.time()),
            )

    def append_many(self, results: Iterable[StepResult]) -> None:
        """Append several results in one transaction (committed when this returns). When the
        insert or the commit fails (a reader kept the file locked past the busy timeout, a full
        disk) none of them is in the journal, the error is raised, and the journal takes the
        next write as before (no transaction is left open to swallow it)."""
        rows = [(r.step_id, r.status, r.model_dump_json(), time.time()) for r in results]
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO steps (step_id, status, result, at) VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def settled(self, *, trials: bool = True) -> dict[str, StepResult]:
        """The latest settled (verified or accepted) result of each step; ``trials=False``
        leaves each one's trials out (a large run's summary; they stay in the journal), reading
        the entries one at a time, so no more than one entry's trials are in memory at once."""
        out: dict[str, StepResult] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT step_id, result FROM steps WHERE status IN ('verified', 'accepted') ORDER BY seq"
            )
            for sid, raw in rows:
                r = StepResult.model_validate_json(raw)
                if not trials:
                    r.trials = []
                out[sid] = r
        return out

    def latest_seqs(self) -> dict[str, int]:
        """Each step's latest settled entry (its ``seq``): the one :meth:`settled` and a resume
        take, even where a later run on the same file appended a failure after it."""
        with self._lock:
            return dict(self._db.execute(
                "SELECT step_id, MAX(seq) FROM steps WHERE status IN ('verified', 'accepted') GROUP BY step_id"
            ).fetchall())

    def entry(self, seq: int) -> StepResult:
        """The entry ``seq`` (see :meth:`latest_seqs`)."""
        with self._lock:
            row = self._db.execute("SELECT result FROM steps WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise ConfigError(f"journal {self.path} has no entry {seq}")
        return StepResult.model_validate_json(row[0])

    def entries(self) -> list[StepResult]:
        """Every appended result, in order (a step appears again each time it re-ran)."""
        with self._lock:
            rows = self._db.execute("SELECT result FROM steps ORDER BY seq").fetchall()
        return [StepResult.model_validate_json(r[0]) for r in rows]

    def write_end(self, status: str) -> None:
        self._set("status", status)
        self._set("finished_at", repr(time.time()))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _trials_elsewhere(r: StepResult) -> bool:
    return r.settled and not r.trials  # a settled step has the trial it settled on, unless it was left out


def report_steps(report: RunReport) -> Iterator[StepResult]:
    """``report.steps`` whole, in plan order, one at a time: a step whose trials the run kept
    in the journal only (a settled step with none) is read back from ``report.journal``."""
    with StepReader(report) as whole:
        for r in report.steps:
            yield whole(r)


class StepReader:
    """One step of a report with its trials, read back from ``report.journal`` only for a step
    the run kept there (a settled step of a large run): the console's reasons and answers ask
    for a few steps of a 100,000-step run, not every one. Use as a context manager."""

    def __init__(self, report: RunReport) -> None:
        self._path = report.journal if report.journal is not None and any(_trials_elsewhere(r) for r in report.steps) else None
        self._jr: Journal | None = None
        self._seqs: dict[str, int] = {}

    def __call__(self, step: StepResult) -> StepResult:
        if self._path is None or not _trials_elsewhere(step):
            return step
        if self._jr is None:
            self._jr = Journal.open_existing(self._path)
            self._seqs = self._jr.latest_seqs()
        if step.step_id not in self._seqs:
            return step
        full = self._jr.entry(self._seqs[step.step_id])
        return full if full.resumed == step.resumed else full.model_copy(update={"resumed": step.resumed})

    def __enter__(self) -> StepReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._jr is not None:
            self._jr.close()
            self._jr = None


class TextSink(Protocol):
    def write(self, text: str, /) -> int: ...


def write_report_json(report: RunReport, out: TextSink) -> None:
    """Write ``report`` as ``run --json`` prints it (indented JSON, every step whole, trials
    read back from the journal where the run kept them there), one step at a time."""
    if report.journal is None or not any(_trials_elsewhere(r) for r in report.steps):
        out.write(report.model_dump_json(indent=2))
        out.write("\n")
        return
    head = report.model_dump(mode="json", exclude={"steps"})
    out.write("{\n")
    for k, name in enumerate(RunReport.model_fields):
        sep = ",\n" if k < len(RunReport.model_fields) - 1 else "\n"
        if name != "steps":
            out.write(f'  {json.dumps(name)}: {_indented(json.dumps(head[name], indent=2, ensure_ascii=False))}{sep}')
            continue
        out.write('  "steps": [')
        for i, step in enumerate(report_steps(report)):
            out.write(("\n" if i == 0 else ",\n") + "    " + _indented(step.model_dump_json(indent=2), 4))
        out.write(f"\n  ]{sep}" if report.steps else f"]{sep}")
    out.write("}\n")


def _indented(text: str, by: int = 2) -> str:
    return text.replace("\n", "\n" + " " * by)

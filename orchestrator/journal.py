"""The run journal: one SQLite file per run. The task and plan are written before any step
runs; every finished step is appended (and committed) as it finishes, so a run killed at
any moment can be resumed without re-running a settled step."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Plan, StepResult, Task

__all__ = ["Journal", "journal_path"]

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

    def settled(self) -> dict[str, StepResult]:
        """The latest settled (verified or accepted) result of each step."""
        with self._lock:
            rows = self._db.execute(
                "SELECT step_id, result FROM steps WHERE status IN ('verified', 'accepted') ORDER BY seq"
            ).fetchall()
        return {sid: StepResult.model_validate_json(raw) for sid, raw in rows}

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

"""Lessons: verified answers of higher tiers for inputs the tiny tiers got wrong.

A **lesson** is one input that a tiny tier (``trm``, ``hrm``, ``cfc``, ``ltc``) failed, declined
or answered with too little confidence, together with the *verified* answer of the higher tier
that settled the step (heuristic, exact solver, large model), the tier that taught it, the tiny
tiers' attempts (worker, tier, confidence, error) and the run and step ids.

Store: one SQLite file per skill, ``<learned dir>/lessons/<skill>.sqlite`` (the learned
directory of :mod:`workers.serving.learned`). Not the run journal: a journal is one file per
run (users delete them, ``--resume`` reads them), while lessons must outlive runs, be
deduplicated across them and be read per skill by ``tinyfleet learn``. Rules:

- **dedup by input**: the key is the SHA-256 of the input's canonical JSON; a lesson seen again
  keeps its first verified answer and counts ``seen`` and ``last_seen`` up;
- **capped**: at most ``cap`` lessons per skill (default 5000); over the cap, the lessons
  least recently seen go first (ties: the oldest first);
- **no secrets**: only skills with a trainable tiny model are captured (sudoku.solve,
  maze.route, series.forecast), whose inputs are grids and numbers; the stored fields are the
  input payload, the verified output, tier names, confidences and error lines (cut to 200
  characters, with anything shaped like an API key and the value of every environment variable
  named like a key, token, secret or password replaced by ``[redacted]``). Attempt ``info``
  and costs are never stored.

Capture: :func:`lessons_from_journal` reads a run journal (task, plan and every finished step;
a step's input is its plan input with references resolved from the settled outputs);
:func:`lesson_from_step` does it for one step and its resolved input (the online learner's
hook).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tinyfleet_core.errors import ConfigError, InputError
from tinyfleet_core.models import Plan, StepResult, Task
from tinyfleet_core.refs import resolve_references
from workers.serving.learned import learned_dir

__all__ = [
    "LEARNABLE_SKILLS",
    "TINY_TIERS",
    "FailedAttempt",
    "Lesson",
    "LessonStore",
    "input_key",
    "lesson_from_step",
    "journal_lessons",
    "lessons_from_journal",
    "lessons_from_paths",
    "redact",
]

TINY_TIERS = frozenset({"trm", "hrm", "cfc", "ltc"})
"""Tier names of the tiny models (orchestrator/escalation ladders name them so)."""

LEARNABLE_SKILLS = frozenset({"sudoku.solve", "maze.route", "series.forecast"})
"""Skills with a trainable tiny model; only these are captured."""

DEFAULT_CAP = 5000

_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|[A-Za-z0-9_\-]{32,})\b")
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)


def redact(text: str | None, limit: int = 200) -> str | None:
    """``text`` cut to ``limit`` characters with key-shaped strings and secret env values removed."""
    if text is None:
        return None
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            text = text.replace(value, "[redacted]")
    text = _KEYLIKE.sub("[redacted]", text)
    return text[:limit]


class FailedAttempt(BaseModel):
    """What a tiny tier did with the input (never its info or cost)."""

    model_config = ConfigDict(extra="forbid")
    tier: str
    worker: str
    confidence: float
    verified: bool | None = Field(default=None, description="the verifier's ruling, None without one")
    error: str | None = None


class Lesson(BaseModel):
    """One input the tiny tiers got wrong and the verified answer that settled it."""

    model_config = ConfigDict(extra="forbid")
    skill: str
    key: str = Field(description="SHA-256 of the input's canonical JSON (the dedup key)")
    input: dict[str, Any]
    output: dict[str, Any] = Field(description="the verified answer")
    teacher: str = Field(description="the tier whose verified answer settled the step")
    failed: list[FailedAttempt] = Field(default_factory=list, description="the tiny tiers' attempts")
    run_id: str = ""
    step_id: str = ""
    created_at: float = Field(default_factory=time.time)
    seen: int = 1
    last_seen: float = Field(default_factory=time.time)


def input_key(payload: dict[str, Any]) -> str:
    """The dedup key of an input payload: SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lesson_from_step(
    result: StepResult, payload: dict[str, Any], run_id: str = "", tiny: Iterable[str] = TINY_TIERS
) -> Lesson | None:
    """The lesson a settled step teaches, or None: it must be verified, settled above every
    tiny tier, of a learnable skill, and a tiny tier must have tried the input and not settled it."""
    tiny = frozenset(tiny)
    if result.status != "verified" or result.output is None or result.tier is None or result.tier in tiny:
        return None
    if result.skill not in LEARNABLE_SKILLS:
        return None
    failed = [
        FailedAttempt(
            tier=t.attempt.tier,
            worker=t.attempt.worker,
            confidence=t.attempt.confidence,
            verified=t.verdict.ok if t.verdict is not None else None,
            error=redact(t.attempt.error or (t.verdict.reason if t.verdict is not None and not t.verdict.ok else None)),
        )
        for t in result.trials
        if t.attempt.tier in tiny
    ]
    if not failed:  # no tiny tier took this input (no checkpoint reads it): nothing to teach
        return None
    return Lesson(
        skill=result.skill, key=input_key(payload), input=payload, output=result.output, teacher=result.tier,
        failed=failed, run_id=run_id, step_id=result.step_id,
    )


def lessons_from_journal(path: str | Path) -> list[Lesson]:
    """Every lesson in one run journal (see the module docstring)."""
    return journal_lessons(path)[0]


def journal_lessons(path: str | Path, after_seq: int = 0) -> tuple[list[Lesson], int]:
    """(the lessons of the journal's steps appended after row ``after_seq``, the last row read).
    References resolve against every settled output, earlier rows included. A journal whose
    task and plan are not written yet gives no lessons (and row ``after_seq``)."""
    p = Path(path)
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            rows = db.execute("SELECT seq, result FROM steps ORDER BY seq").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{p} is not a tinyfleet run journal (SQLite said: {e})") from None
    if "task" not in meta or "plan" not in meta:
        if after_seq:
            return [], after_seq
        raise ConfigError(f"{p} holds no task and plan; it was not written by a tinyfleet run")
    task, plan = Task.model_validate_json(meta["task"]), Plan.model_validate_json(meta["plan"])
    results = [(int(seq), StepResult.model_validate_json(r)) for seq, r in rows]
    outputs = {r.step_id: r.output for _, r in results if r.settled}
    steps = {s.id: s for s in plan.steps}
    out = []
    for seq, r in results:
        step = steps.get(r.step_id)
        if seq <= after_seq or step is None or r.skill not in LEARNABLE_SKILLS:
            continue
        try:
            payload = resolve_references(step.inputs, outputs, task.inputs)
        except InputError:
            continue
        lesson = lesson_from_step(r, payload, run_id=task.id)
        if lesson is not None:
            out.append(lesson)
    return out, max([after_seq, *(seq for seq, _ in results)])


def lessons_from_paths(paths: Iterable[str | Path]) -> Iterator[Lesson]:
    """Lessons of every journal named (a directory: every ``*.sqlite`` in it)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(p.glob("*.sqlite"))
        elif p.is_file():
            files = [p]
        else:
            raise InputError(f"--from {p}: no such journal or directory")
        for f in files:
            yield from lessons_from_journal(f)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS lessons (
    key TEXT PRIMARY KEY,
    skill TEXT NOT NULL,
    lesson TEXT NOT NULL,
    seen INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lessons_by_age ON lessons (last_seen, created_at);
"""


class LessonStore:
    """The lessons of one skill in ``<directory>/lessons/<skill>.sqlite`` (see module docstring)."""

    def __init__(self, skill: str, directory: str | Path | None = None, cap: int = DEFAULT_CAP) -> None:
        if skill not in LEARNABLE_SKILLS:
            raise InputError(f"skill {skill!r} has no trainable tiny model; lessons are kept for {', '.join(sorted(LEARNABLE_SKILLS))}")
        if cap < 1:
            raise InputError(f"the lesson cap must be at least 1, got {cap}")
        self.skill, self.cap = skill, cap
        self.path = learned_dir(directory) / "lessons" / f"{skill}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"lesson store {self.path} is not a tinyfleet lesson store (SQLite said: {e})") from None
        self._lock = threading.Lock()

    def add(self, lessons: Iterable[Lesson]) -> int:
        """Store ``lessons`` (dedup by input, then evict over the cap); returns how many were new."""
        new = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for ls in lessons:
                    if ls.skill != self.skill:
                        continue
                    cur = self._db.execute(
                        "UPDATE lessons SET seen = seen + 1, last_seen = ? WHERE key = ?", (ls.last_seen, ls.key)
                    )
                    if cur.rowcount == 0:
                        self._db.execute(
                            "INSERT INTO lessons (key, skill, lesson, seen, last_seen, created_at) VALUES (?, ?, ?, 1, ?, ?)",
                            (ls.key, ls.skill, ls.model_dump_json(), ls.last_seen, ls.created_at),
                        )
                        new += 1
                self._db.execute(
                    "DELETE FROM lessons WHERE key IN (SELECT key FROM lessons ORDER BY last_seen DESC, created_at DESC LIMIT -1 OFFSET ?)",
                    (self.cap,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def all(self) -> list[Lesson]:
        """Every stored lesson, oldest first, with its current seen count."""
        with self._lock:
            rows = self._db.execute("SELECT lesson, seen, last_seen FROM lessons ORDER BY created_at, key").fetchall()
        return [Lesson.model_validate_json(raw).model_copy(update={"seen": seen, "last_seen": last}) for raw, seen, last in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM lessons").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

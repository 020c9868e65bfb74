"""Small real workers and planners used by several test modules."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Sequence

from pydantic import BaseModel

from orchestrator import Attempt, Cost, Plan, Step, StepResult, Task
from planners.base import Planned
from planners.rules import RulePlanner
from workers import Job, Worker
from workers.base import Skill
from workers.builtin import default_registry, maze_skill, sudoku_skill
from workers.kits import sudoku
from workers.registry import SkillRegistry


def classic_registry() -> SkillRegistry:
    """The built-in skills with only their pure-Python tiers (no bundled neural tiers), so
    tests about the ladder do not depend on which checkpoints are bundled."""
    reg = default_registry()
    for skill in (sudoku_skill(), maze_skill()):
        skill.ladder = [t for t in skill.ladder if t.kind == "heuristic"]
        reg.register(skill)
    return reg


def sudoku_items(n: int, count: int, seed: int, givens: int | None = None) -> list[dict]:
    rng = random.Random(seed)
    return [{"puzzle": sudoku.generate(n, rng, givens)[0]} for _ in range(count)]


class WrongThenRightWorker(Worker):
    """Particle 0 answers a corrupted grid (fails verification); particles >= 1 answer right."""

    name = "test.wrong-then-right"
    skill = "sudoku.solve"
    stochastic = True

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            assert isinstance(job.input, sudoku.SudokuInput)
            sol = sudoku.solve_exact(job.input.puzzle)
            if job.particle == 0:
                sol = [row[:] for row in sol]
                sol[0][0], sol[0][1] = sol[0][1], sol[0][0]
            out.append(self.attempt(sudoku.SudokuOutput(solution=sol), 0.9 if job.particle else 0.99, job=job))
        return out


class AlwaysWrongWorker(Worker):
    name = "test.always-wrong"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        return [self.attempt({"solution": [[1] * len(j.input.puzzle)] * len(j.input.puzzle)}, 0.99, job=j) for j in jobs]  # type: ignore[attr-defined]


class SlowWorker(Worker):
    """Sleeps ``delay`` seconds per batch, then answers exactly (for deadlines, kills)."""

    name = "test.slow"
    skill = "sudoku.solve"
    delay = 0.2

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        time.sleep(self.delay)
        return [self.attempt(sudoku.SudokuOutput(solution=sudoku.solve_exact(j.input.puzzle)), 1.0, job=j) for j in jobs]  # type: ignore[attr-defined]


class ExactLargeModel(RulePlanner):
    """A planner whose ``solve`` plays the large model with an exact solver and charges
    tokens per call: lets budget tests run offline. Not an LLM, and named so."""

    name = "test-exact-large"
    has_large_model = True

    def __init__(self, tokens_per_call: int = 100, usd_per_call: float = 0.01) -> None:
        super().__init__()
        self.tokens = tokens_per_call
        self.usd = usd_per_call
        self.calls = 0

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt:
        self.calls += 1
        assert isinstance(inputs, sudoku.SudokuInput)
        sol = sudoku.solve_exact(inputs.puzzle)
        return Attempt(
            output={"solution": sol},
            confidence=1.0,
            worker="test-large",
            cost=Cost(large_calls=1, tokens_in=self.tokens // 2, tokens_out=self.tokens - self.tokens // 2, cost_usd=self.usd),
        )

    async def replan(self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry) -> Planned:
        return Planned(plan)


class TcpListener:
    """A real TCP listener on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()

"""Online learning: ``Fleet(learn=True)`` runs a learner beside the pools.

The learner follows the run journals of the fleet's runs (every finished step is appended to
its run's journal before anything else happens, so the learner sees each settled step once),
turns the steps that teach something into lessons (:mod:`workers.training.lessons`), and when
a skill has gathered ``min_new`` new lessons it runs the same fine-tune and gate as
``tinyfleet learn`` (:func:`workers.training.learn.learn`) with its own CPU budget. A promoted
version is written into the learned directory and its ``CURRENT`` pointer moved; the pools'
workers look at that pointer between batches (:class:`workers.serving.learned.PointerWatch`)
and load the new weights there, so no batch is dropped or answered twice and every attempt
names the version that answered it (``Attempt.info["checkpoint"]``).

With the Ray executor the learner is a Ray actor (reserving ``num_cpus``, default 0, placed on
the driver's node, which holds the journals); with the local executor it is a thread. Either way a
learner that fails (an exception in a learning round, a dead actor) is recorded in
:meth:`OnlineLearner.status` and never stops a run: every call to it from the driver is fire and
forget, and every error it raises is caught. Importing this module loads no torch; the
learner's process does when it learns.
"""

from __future__ import annotations

import io
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LearnerCore", "LearnerSettings", "OnlineLearner"]


@dataclass(frozen=True)
class LearnerSettings:
    """How the online learner learns. ``minutes``: fine-tuning time per round (one torch thread);
    ``min_new``: new lessons of a skill that start a round; ``num_cpus``: Ray CPUs reserved for
    the actor (default 0: it shares the cores with the pools, so it is always placed; on a
    cluster with room, reserve 1); ``learned_dir``: None is the learned directory of
    :func:`workers.serving.learned.learned_dir` in the learner's process."""

    skills: tuple[str, ...] = ("maze.route", "sudoku.solve")
    model: str = "trm"
    minutes: float = 1.0
    min_new: int = 20
    min_lessons: int = 20
    eval_n: int = 200
    replay: float = 0.5
    poll_s: float = 0.5
    num_cpus: float = 0.0
    learned_dir: str | None = None


@dataclass
class LearnerCore:
    """The learner's work, wherever it runs: follow journals, store lessons, learn in rounds."""

    settings: LearnerSettings
    journals: dict[str, int] = field(default_factory=dict)  # path -> last row read
    new: dict[str, int] = field(default_factory=dict)  # skill -> lessons stored since its last round
    rounds: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lessons: int = 0

    def watch(self, journal: str) -> None:
        self.journals.setdefault(str(journal), 0)

    def gather(self) -> int:
        """Read every watched journal's new rows into the lesson stores; returns lessons stored."""
        from workers.training.lessons import LessonStore, journal_lessons  # torch-free, but not needed to import the SDK

        stored = 0
        for path, seq in list(self.journals.items()):
            if not Path(path).exists():
                continue
            got, self.journals[path] = journal_lessons(path, seq)
            for skill in {ls.skill for ls in got} & set(self.settings.skills):
                store = LessonStore(skill, self.settings.learned_dir)
                try:
                    n = store.add([ls for ls in got if ls.skill == skill])
                finally:
                    store.close()
                self.new[skill] = self.new.get(skill, 0) + n
                stored += n
        self.lessons += stored
        return stored

    def learn_due(self) -> None:
        """One learning round for every skill with ``min_new`` new lessons."""
        from workers.training.learn import learn  # torch: only in the learner's process

        s = self.settings
        for skill, n in list(self.new.items()):
            if n < s.min_new:
                continue
            self.new[skill] = 0
            t0 = time.time()
            out = learn(skill, s.model, minutes=s.minutes, replay=s.replay, directory=s.learned_dir,
                        min_lessons=s.min_lessons, eval_n=s.eval_n, seed=len(self.rounds), log=io.StringIO())
            self.rounds.append(asdict(out) | {"started": t0, "finished": time.time()})

    def tick(self) -> None:
        """Gather, then learn what is due; an error is recorded, never raised."""
        try:
            self.gather()
            self.learn_due()
        except Exception as e:  # noqa: BLE001  (a learner's failure must never reach the run)
            self.errors.append("".join(traceback.format_exception_only(type(e), e)).strip()[:500])

    def status(self) -> dict[str, Any]:
        return {"journals": len(self.journals), "lessons": self.lessons, "rounds": list(self.rounds), "errors": list(self.errors)}


class _Loop:
    """Ticks a LearnerCore every ``poll_s`` in a daemon thread until stopped."""

    def __init__(self, settings: LearnerSettings) -> None:
        from workers.serving.neural import set_torch_threads

        set_torch_threads()
        self.core = LearnerCore(settings)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tinyfleet-learner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.core.settings.poll_s):
            with self._lock:
                self.core.tick()

    def watch(self, journal: str) -> None:
        with self._lock:
            self.core.watch(journal)

    def status(self) -> dict[str, Any]:
        return self.core.status()

    def drain(self) -> dict[str, Any]:
        """Gather what is left and run any round that is due, then report."""
        with self._lock:
            self.core.tick()
        return self.core.status()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=600)
        return self.core.status()


class OnlineLearner:
    """The driver's handle on the learner (a Ray actor or a thread). Never raises into a run."""

    def __init__(self, settings: LearnerSettings | None = None) -> None:
        self.settings = settings or LearnerSettings()
        self._local: _Loop | None = None
        self._actor: Any = None
        self._failed: str | None = None
        self._last: dict[str, Any] = {}

    def start(self, executor_name: str) -> None:
        """Start the learner once: a Ray actor beside the pools, or (local executor) a thread."""
        if self._local is not None or self._actor is not None or self._failed:
            return
        try:
            if executor_name == "ray":
                self._actor = _ray_actor(self.settings)
            else:
                self._local = _Loop(self.settings)
        except Exception as e:  # noqa: BLE001  (no learner is a warning, not a failed run)
            self._failed = f"the learner did not start: {type(e).__name__}: {e}"
            warnings.warn(self._failed, stacklevel=2)

    def watch(self, journal: Path | str) -> None:
        """Follow a run's journal (fire and forget)."""
        try:
            if self._actor is not None:
                self._actor.watch.remote(str(Path(journal).resolve()))
            elif self._local is not None:
                self._local.watch(str(Path(journal).resolve()))
        except Exception as e:  # noqa: BLE001
            self._failed = f"the learner stopped: {type(e).__name__}: {e}"

    def status(self, timeout_s: float = 30.0, drain: bool = False) -> dict[str, Any]:
        """What the learner did: lessons, rounds (each with its gate's evaluations), errors.
        ``drain``: first gather what is left and run the rounds that are due (waits for them)."""
        try:
            if self._actor is not None:
                import ray

                ref = self._actor.drain.remote() if drain else self._actor.status.remote()
                self._last = ray.get(ref, timeout=timeout_s)
            elif self._local is not None:
                self._last = self._local.drain() if drain else self._local.status()
        except Exception as e:  # noqa: BLE001  (a dead or stuck actor: say so)
            self._failed = f"the learner stopped: {type(e).__name__}: {e}"
        return self._last | ({"failed": self._failed} if self._failed else {})

    def close(self) -> dict[str, Any]:
        """Stop the learner; returns its last status. The thread (local executor) finishes a round
        in progress first; the Ray actor is killed, cutting a round short (nothing half-written is
        served: ``CURRENT`` moves only after a version's files are written)."""
        out = self._last
        try:
            if self._local is not None:
                out = self._local.stop()
            if self._actor is not None:
                import ray

                out = self.status(timeout_s=2.0)
                ray.kill(self._actor)
        except Exception as e:  # noqa: BLE001
            out = out | {"failed": f"{type(e).__name__}: {e}"}
        self._local = self._actor = None
        return out


def _ray_actor(settings: LearnerSettings) -> Any:
    """The learner as a Ray actor on the driver's node (the journals are files there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    cls = ray.remote(max_restarts=0, max_concurrency=4)(_Loop)
    return cls.options(
        num_cpus=settings.num_cpus, name=None,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
    ).remote(settings)

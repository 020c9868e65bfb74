"""``tinyfleet learn``: fine-tune the served checkpoint on lessons, gate it, promote or refuse it,
and roll back.

    tinyfleet learn --skill S [--model trm|hrm] [--size N] [--from DIR|JOURNAL ...] [--minutes M]
                    [--replay R] [--dir LEARNED_DIR] [--json]
    tinyfleet learn --skill S [--model trm|hrm] [--size N] --rollback [--dir LEARNED_DIR]

1. ``--from`` journals (a directory: every ``*.sqlite`` in it) add their lessons to the skill's
   store (:mod:`workers.training.lessons`); the store keeps lessons of every earlier run.
2. Lessons are split by key: a fixed fifth (``int(key[:8], 16) % 5 == 0``) is held out and
   never trained on, so the held-out set is stable across ``learn`` runs. Fewer than
   ``--min-lessons`` training lessons (default 30) or 5 held-out ones: it says so and exits 0.
3. The served checkpoint (the promoted version serving loads, else the bundled one) is
   fine-tuned for ``--minutes`` on the lessons mixed with fresh items of the kit's generator:
   ``--replay`` (default 0.5) of the rows are fresh items (:mod:`workers.training.finetune`).
4. The gate evaluates candidate and current side by side on the same items: (a) the held-out
   lessons, (b) the checkpoint's own held-out eval split (``--eval-n`` items, its card's seed).
   It promotes only if the candidate is better on (a) and at most 1 point worse on (b).
5. Promotion writes ``<learned dir>/<stem>/vN`` (weights and card: parent version, lessons
   used, both evaluations, the recipe; the parent's halting calibration is dropped, as it was
   fitted to other weights) and points ``CURRENT`` at it (:mod:`workers.serving.learned`).
   ``--rollback`` points ``CURRENT`` back at the served version's parent (a version or the
   bundled checkpoint); every version stays on disk and loadable.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.hrm import HRM
from workers.models.trm import TRM
from workers.serving.learned import (
    BUNDLED,
    current_version,
    learned_dir,
    list_versions,
    read_version,
    resolve,
    set_current,
    version_path,
)
from workers.serving.neural import (
    CHECKPOINT_DIR,
    build_model,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from workers.training.evaluation import default_device
from workers.training.finetune import FinetuneResult, finetune, lesson_exact, lesson_size, own_eval
from workers.training.lessons import Lesson, LessonStore, lessons_from_paths

__all__ = ["GATE_TOLERANCE", "Evals", "LearnOutcome", "gate", "judge", "learn", "main", "rollback", "split_lessons"]

GATE_TOLERANCE = 0.01
"""How much worse (as a share) a candidate may be on the checkpoint's own eval split: 1 point."""

LEARN_SKILLS = ("sudoku.solve", "maze.route")
Model = TRM | HRM


@dataclass(frozen=True)
class Evals:
    """Candidate and current on (a) held-out lessons and (b) the checkpoint's own eval split."""

    lessons_candidate: float
    lessons_current: float
    lessons_n: int
    own_candidate: float
    own_current: float
    own_n: int


def gate(ev: Evals, tolerance: float = GATE_TOLERANCE) -> tuple[bool, str]:
    """(promote?, why): better on the held-out lessons and at most ``tolerance`` worse on the own split."""
    a = f"held-out lessons {ev.lessons_candidate:.3f} vs {ev.lessons_current:.3f} (n={ev.lessons_n})"
    b = f"own eval {ev.own_candidate:.3f} vs {ev.own_current:.3f} (n={ev.own_n})"
    if ev.lessons_candidate <= ev.lessons_current:
        return False, f"refused: not better on {a}; {b}"
    if ev.own_candidate < ev.own_current - tolerance - 1e-9:
        return False, f"refused: {b} is more than {100 * tolerance:g} point(s) worse; {a}"
    return True, f"promoted: better on {a}; {b}"


def judge(candidate: Model, current: Model, card: dict[str, Any], held: list[Lesson], eval_n: int, device: str = "cpu") -> Evals:
    """Evaluate ``candidate`` and ``current`` side by side on the same items."""
    skill, size = str(card["skill"]), int(card["size"])
    return Evals(
        lesson_exact(candidate, skill, size, held, device), lesson_exact(current, skill, size, held, device), len(held),
        own_eval(candidate, card, eval_n, device), own_eval(current, card, eval_n, device), eval_n,
    )


def split_lessons(lessons: list[Lesson]) -> tuple[list[Lesson], list[Lesson]]:
    """(train, held out): a fixed fifth of the keys is held out (``int(key[:8], 16) % 5 == 0``)."""
    held = [ls for ls in lessons if int(ls.key[:8], 16) % 5 == 0]
    train = [ls for ls in lessons if int(ls.key[:8], 16) % 5 != 0]
    return train, held


@dataclass
class LearnOutcome:
    """What one ``learn`` did."""

    skill: str
    model: str
    size: int
    status: str  # "promoted", "refused" or "too_few_lessons"
    message: str
    parent: str = BUNDLED
    version: str | None = None  # the version written (promoted only)
    lessons_train: int = 0
    lessons_held: int = 0
    evals: dict[str, Any] | None = None
    steps: int = 0
    train_s: float = 0.0
    cpu_s: float = 0.0  # process CPU seconds of the whole learn (fine-tune and both evaluations)
    extra: dict[str, Any] = field(default_factory=dict)


def _stem(skill: str, model: str, size: int) -> str:
    return checkpoint_path(skill, model, size, CHECKPOINT_DIR).name.removesuffix(".safetensors")


def _check(skill: str, model: str) -> None:
    if skill not in LEARN_SKILLS:
        raise InputError(f"--skill must be one of {', '.join(LEARN_SKILLS)} for learn (trainable tiny models), got {skill!r}")
    if model not in ("trm", "hrm"):
        raise InputError(f"--model must be trm or hrm for {skill}, got {model!r} (cfc/ltc learning is not built yet)")


def _pick_size(skill: str, model: str, lessons: list[Lesson], size: int | None) -> int:
    if size:
        if not checkpoint_path(skill, model, size).exists():
            raise InputError(f"there is no bundled {skill} {model} checkpoint of size {size} to fine-tune")
        return size
    counts = Counter(s for ls in lessons if (s := lesson_size(ls)) is not None and checkpoint_path(skill, model, s).exists())
    if not counts:
        return 0
    return max(counts, key=lambda s: (counts[s], -s))


def _card(parent_card: dict[str, Any], parent: str, version: str, ft: FinetuneResult, ev: Evals,
          train: list[Lesson], held: list[Lesson], why: str) -> dict[str, Any]:
    card = copy.deepcopy(parent_card)
    dropped = card.pop("calibration", None) is not None
    keys = sorted(ls.key for ls in train)
    card["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    card["learned"] = {
        "version": version,
        "parent": parent,
        "lessons_used": len(train),
        "lessons_digest": hashlib.sha256("".join(keys).encode()).hexdigest(),
        "teachers": dict(Counter(ls.teacher for ls in train)),
        "held_out_lessons": len(held),
        "evals": asdict(ev),
        "gate": why,
        "recipe": {"replay": ft.replay, "lr": ft.lr, "steps": ft.steps, "seconds": round(ft.seconds, 1),
                   "cpu_seconds": round(ft.cpu_seconds, 1)},
        "calibration": "dropped (fitted to the parent's weights); serving halts on the model's own head"
        if dropped else "none",
    }
    return card


def learn(
    skill: str, model_kind: str = "trm", *, size: int | None = None, sources: list[str] | None = None,
    minutes: float = 2.0, replay: float = 0.5, directory: str | Path | None = None, min_lessons: int = 30,
    eval_n: int = 300, seed: int = 0, lr: float | None = None, log: TextIO = sys.stderr,
) -> LearnOutcome:
    """Gather lessons, fine-tune, gate, promote or refuse (see the module docstring)."""
    _check(skill, model_kind)
    if minutes <= 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    c0 = time.process_time()
    store = LessonStore(skill, directory)
    try:
        if sources:
            new = store.add(list(lessons_from_paths(sources)))
            print(f"[learn] {new} new lesson(s) from {len(sources)} source(s); {len(store)} in {store.path}", file=log, flush=True)
        lessons = store.all()
    finally:
        store.close()
    size = _pick_size(skill, model_kind, lessons, size)
    mine = [ls for ls in lessons if lesson_size(ls) == size]
    train, held = split_lessons(mine)
    out = LearnOutcome(skill, model_kind, size, "too_few_lessons", "", lessons_train=len(train), lessons_held=len(held))
    if len(train) < min_lessons or len(held) < 5:
        out.message = (f"too few lessons for {skill} {model_kind}{f' size {size}' if size else ''}: {len(train)} to train on "
                       f"and {len(held)} held out (need {min_lessons} and 5); nothing trained")
        return out
    set_torch_threads()
    device = default_device()
    stem = _stem(skill, model_kind, size)
    path, parent = resolve(checkpoint_path(skill, model_kind, size), directory)
    current, card = load_checkpoint(path, device)
    print(f"[learn] {stem} from {parent}: fine-tuning on {len(train)} lessons ({len(held)} held out), "
          f"replay {replay}, {minutes:g} min", file=log, flush=True)
    ft = finetune(current, card, train, minutes * 60, replay=replay, lr=lr, seed=seed, device=device)
    candidate = build_model(card).to(device)
    candidate.load_state_dict(ft.weights)
    candidate.eval()
    ev = judge(candidate, current, card, held, eval_n, device)
    ok, why = gate(ev)
    out.parent, out.evals, out.steps, out.train_s = parent, asdict(ev), ft.steps, ft.seconds
    out.status, out.message = ("promoted" if ok else "refused"), why
    if ok:
        versions = list_versions(stem, directory)
        version = f"v{int(versions[-1][1:]) + 1 if versions else 1}"
        save_checkpoint(version_path(stem, version, directory), ft.weights, _card(card, parent, version, ft, ev, train, held, why))
        set_current(stem, version, directory)
        out.version = version
        out.message = f"{why}; {stem} now serves {version} (parent {parent})"
    out.cpu_s = time.process_time() - c0
    return out


def rollback(skill: str, model_kind: str = "trm", *, size: int | None = None, directory: str | Path | None = None) -> str:
    """Point the served version of (skill, model, size) back at its parent; returns what it did."""
    _check(skill, model_kind)
    base = learned_dir(directory)
    if size:
        stems = [_stem(skill, model_kind, size)]
    else:
        stems = [p.name for p in sorted(base.glob(f"{skill}-{model_kind}-*")) if p.is_dir()]
        stems = [s for s in stems if current_version(s, directory) != BUNDLED]
        if len(stems) > 1:
            raise InputError(f"several {skill} {model_kind} checkpoints serve learned versions ({', '.join(stems)}); pass --size")
    if not stems or current_version(stems[0], directory) == BUNDLED:
        return f"{skill} {model_kind}{f' size {size}' if size else ''} serves the bundled checkpoint; nothing to roll back"
    stem = stems[0]
    now = current_version(stem, directory)
    parent = read_version(stem, now, directory).parent
    if parent != BUNDLED and parent not in list_versions(stem, directory):
        raise ConfigError(f"{stem} {now} names parent {parent}, which is not in {base / stem}; point CURRENT by hand")
    set_current(stem, parent, directory)
    return f"{stem}: rolled back from {now} to {parent} ({now} stays in {base / stem})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyfleet learn", description="fine-tune a served tiny model on its lessons, behind a gate")
    p.add_argument("--skill", required=True, help="sudoku.solve or maze.route")
    p.add_argument("--model", default="trm", help="trm (default) or hrm")
    p.add_argument("--size", type=int, default=None, help="which checkpoint (default: the size with the most lessons)")
    p.add_argument("--from", dest="sources", action="append", metavar="DIR|JOURNAL",
                   help="run journals (or a directory of them) to take lessons from (repeatable)")
    p.add_argument("--minutes", type=float, default=2.0, help="fine-tuning wall time (default 2)")
    p.add_argument("--replay", type=float, default=0.5, help="share of rows that are fresh generator items (default 0.5)")
    p.add_argument("--min-lessons", type=int, default=30, help="training lessons needed to train at all (default 30)")
    p.add_argument("--eval-n", type=int, default=300, help="items of the checkpoint's own eval split in the gate (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="learned directory (default $TINYFLEET_LEARNED_DIR or ~/.local/share/tinyfleet/learned)")
    p.add_argument("--rollback", action="store_true", help="serve the current version's parent again")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """``tinyfleet learn ...``; returns the exit status (errors raise the tinyfleet exception tree)."""
    args = _parser().parse_args(argv)
    if args.rollback:
        msg = rollback(args.skill, args.model, size=args.size, directory=args.dir)
        print(json.dumps({"rollback": msg}) if args.json else msg)
        return 0
    out = learn(args.skill, args.model, size=args.size, sources=args.sources, minutes=args.minutes, replay=args.replay,
                directory=args.dir, min_lessons=args.min_lessons, eval_n=args.eval_n, seed=args.seed)
    print(json.dumps(asdict(out)) if args.json else out.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())

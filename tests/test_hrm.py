"""HRM: shapes, the one-step gradient, the Q-learning halting loss, and the bundled
checkpoint behind the same inference interface as TRM."""

from __future__ import annotations

import random

import pytest
import torch

import orchestrator  # noqa: F401  (import orchestrator before workers: they import each other)
from orchestrator import Fleet, Policy, Task
from workers.base import Job
from workers.builtin import default_registry
from workers.kits import maze, sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import run_recursive
from workers.serving.neural import HRMMazeWorker, HRMSudokuWorker, available_sizes, served_sizes

torch.set_num_threads(1)


def tiny(**kw: object) -> HRM:
    torch.manual_seed(0)
    return HRM(HRMConfig(vocab=5, classes=4, seq_len=16, d=32, N=2, T=2, N_sup=4, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("mixer", ["mlp", "attn"])
def test_step_shapes(mixer: str) -> None:
    m = tiny(mixer=mixer)
    x = m.embed(torch.randint(0, 5, (3, 16)))
    zH, zL = m.init_state(3)
    assert x.shape == zH.shape == zL.shape == (3, 17, 32)
    out = m.step(x, (zH, zL))
    assert out.logits.shape == (3, 16, 4)
    assert out.halt.shape == out.extra["q_continue"].shape == (3,)
    assert all(not s.requires_grad for s in out.state)


def test_one_step_gradient_reaches_both_modules_and_q_head() -> None:
    m = tiny()
    x = m.embed(torch.randint(0, 5, (4, 16)))
    out = m.step(x, m.init_state(4))
    loss, parts = m.loss(out, torch.randint(0, 4, (4, 16)), x, torch.tensor([1, 2, 3, 4]))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert float(m.q_head.weight.grad.abs().sum()) > 0  # type: ignore[union-attr]
    assert {"ce", "halt_bce", "cont_bce"} <= set(parts)


def test_halting_compares_q_halt_with_q_continue() -> None:
    m = tiny()
    tokens = torch.randint(0, 5, (3, 16))
    with torch.no_grad():
        m.q_head.bias.copy_(torch.tensor([-5.0, 5.0]))  # continue beats halt: run to the cap
    assert run_recursive(m, tokens, 4).steps.tolist() == [4, 4, 4]
    with torch.no_grad():
        m.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
    res = run_recursive(m, tokens, 4)
    assert res.steps.tolist() == [1, 1, 1]
    assert torch.allclose(res.confidence, torch.sigmoid(torch.tensor(5.0)).expand(3), atol=1e-4)


def test_bundled_hrm_sudoku_checkpoint_solves_fresh_puzzles_near_its_model_card() -> None:
    sizes = available_sizes("sudoku.solve", "hrm")
    if not sizes:
        pytest.skip("no bundled HRM checkpoint")
    w = HRMSudokuWorker()
    w.setup("cpu")
    n = sizes[0]
    rng = random.Random(f"tests:hrm:{n}")
    items = [sudoku.generate(n, rng) for _ in range(40)]
    attempts = w.solve_batch([Job(sudoku.SudokuInput(puzzle=p), particle=k % 2) for k, (p, _) in enumerate(items)])
    right = [a.output is not None and sudoku.check_solution(p, a.output["solution"]) is None for (p, _), a in zip(items, attempts)]
    assert sum(right) >= 0.95 * len(items)  # the 6x6 card measures 100.0% exact on 500: a 5-point margin
    confident = [r for r, a in zip(right, attempts) if a.confidence >= 0.5]  # card: 100% confident, all right
    assert len(confident) >= 0.9 * len(items) and sum(confident) >= 0.95 * len(confident)
    assert all(a.worker == "sudoku.hrm" and a.cost.recursion_steps >= 1 for a in attempts)


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_continue_is_trained_toward_the_discounted_best_next_q(discount: float) -> None:
    m = tiny(discount=discount)
    with torch.no_grad():  # Q values that do not depend on the state: halt 2.0, continue 3.0
        m.q_head.weight.zero_()
        m.q_head.bias.copy_(torch.tensor([2.0, 3.0]))
    x = m.embed(torch.randint(0, 5, (4, 16)))
    out = m.step(x, m.init_state(4))
    _, parts = m.loss(out, torch.randint(0, 4, (4, 16)), x, torch.ones(4, dtype=torch.long))
    target = discount * torch.sigmoid(torch.tensor(3.0))  # not the last step: max(next halt, next continue)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(3.0), target)
    assert float(parts["cont_bce"]) == pytest.approx(float(expected), rel=1e-4)


def test_bundled_hrm_maze_checkpoint_solves_fresh_mazes_near_its_model_card() -> None:
    sizes = available_sizes("maze.route", "hrm")
    if not sizes:
        pytest.skip("no bundled HRM maze checkpoint")
    w = HRMMazeWorker()
    w.setup("cpu")
    n = sizes[0]
    rng = random.Random(f"tests:hrm:maze:{n}")
    grids = [maze.generate(n, rng) for _ in range(40)]
    attempts = w.solve_batch([Job(maze.MazeInput(grid=g), particle=k % 8) for k, g in enumerate(grids)])
    right = [a.output is not None and maze.check_path(g, [tuple(c) for c in a.output["path"]]) is None for g, a in zip(grids, attempts)]
    assert sum(right) >= 0.95 * len(grids)  # the 7x7 card measures 100.0% exact on 500: a 5-point margin
    confident = [r for r, a in zip(right, attempts) if a.confidence >= 0.5]
    assert len(confident) >= 0.9 * len(grids) and sum(confident) >= 0.95 * len(confident)
    assert all(a.worker == "maze.hrm" for a in attempts)


async def test_hrm_tier_follows_trm_for_the_sizes_it_serves() -> None:
    served = served_sizes("sudoku.solve", "hrm")
    if not served or not served_sizes("sudoku.solve", "trm"):
        pytest.skip("needs bundled TRM and HRM sudoku checkpoints")
    skill = default_registry().get("sudoku.solve")
    assert skill.tier_names()[:3] == ["trm", "hrm", "propagate"]
    hrm = skill.ladder[1]
    n = served[0]
    other = next(k for k in sudoku.SIZES if k not in served)
    rng = random.Random("tests:hrm:tier")
    assert hrm.accepts is not None
    assert hrm.accepts(sudoku.SudokuInput(puzzle=sudoku.generate(n, rng)[0]))
    assert not hrm.accepts(sudoku.SudokuInput(puzzle=sudoku.generate(other, rng)[0]))  # skips, not an escalation
    items = [{"puzzle": sudoku.generate(n, rng)[0]} for _ in range(12)]
    policy = Policy(ladders={"sudoku.solve": ["hrm", "propagate"]})
    async with Fleet(executor="local", policy=policy) as fleet:
        report = await fleet.run(Task(skill="sudoku.solve", inputs={"items": items}))
    assert report.totals.verified == 12
    assert report.totals.per_tier.get("hrm", 0) >= 11  # >= 95% of 12 rounded down; the card measures 100%
    assert all(s.tiers_tried[0] == "hrm" for s in report.steps)

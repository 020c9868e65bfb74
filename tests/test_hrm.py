"""HRM: shapes, the one-step gradient, the Q-learning halting loss, and the bundled
checkpoint behind the same inference interface as TRM."""

from __future__ import annotations

import random

import pytest
import torch

import orchestrator  # noqa: F401  (import orchestrator before workers: they import each other)
from workers import sudoku
from workers.base import Job
from workers.hrm import HRM, HRMConfig
from workers.neural import HRMSudokuWorker, available_sizes
from workers.trm import run_recursive

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


def test_bundled_hrm_sudoku_checkpoint_solves_fresh_puzzles() -> None:
    sizes = available_sizes("sudoku.solve", "hrm")
    if not sizes:
        pytest.skip("no bundled HRM checkpoint")
    w = HRMSudokuWorker()
    w.setup("cpu")
    n = sizes[0]
    rng = random.Random(f"tests:hrm:{n}")
    items = [sudoku.generate(n, rng) for _ in range(40)]
    attempts = w.solve_batch([Job(sudoku.SudokuInput(puzzle=p), particle=k % 2) for k, (p, _) in enumerate(items)])
    ok = sum(a.output is not None and sudoku.check_solution(p, a.output["solution"]) is None for (p, _), a in zip(items, attempts))
    assert ok >= 0.3 * len(items)
    assert all(a.worker == "sudoku.hrm" and a.cost.recursion_steps >= 1 for a in attempts)

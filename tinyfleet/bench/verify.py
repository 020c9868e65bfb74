"""verify: sandboxed code verifications per second, one at a time in the driver vs the
``code.tests`` verifier pool on Ray (2 actors), on the same generated functions and tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orchestrator.executor import PoolSpec
from orchestrator.ray_executor import RayExecutor
from tinyfleet_core.models import Verdict
from workers.base import Job
from workers.code import CodeInput, CodeOutput, code_skill
from workers.serving.verifier_pool import VerifierWorkerFactory, VerifyRequest

__all__ = ["run", "cases"]


def cases(n: int) -> list[tuple[CodeInput, CodeOutput]]:
    """n small functions with their tests; every third answer is wrong (off by one)."""
    out = []
    for k in range(n):
        inp = CodeInput(
            signature=f"def shift_{k}(xs: list[int]) -> list[int]",
            doc=f"Add {k} to every element.",
            tests=f"def test_shift():\n    assert shift_{k}([1, 2]) == [{1 + k}, {2 + k}]\n    assert shift_{k}([]) == []\n",
        )
        bump = 1 if k % 3 == 0 else 0
        out.append((inp, CodeOutput(code=f"def shift_{k}(xs):\n    return [x + {k + bump} for x in xs]\n")))
    return out


def run(quick: bool) -> dict[str, Any]:
    n = 24 if quick else 80
    pairs = cases(n)
    skill = code_skill()
    assert skill.verifier is not None and skill.verifier_pool is not None
    t0 = time.perf_counter()
    serial = [skill.verifier.check_batch([p])[0] for p in pairs]
    t_serial = time.perf_counter() - t0

    async def pooled() -> tuple[list[Verdict], float]:
        ex = RayExecutor()
        factory = VerifierWorkerFactory(skill)
        await ex.ensure_pool(PoolSpec(factory.name, factory, skill.verifier_pool))  # type: ignore[arg-type]
        warm = Job(VerifyRequest(input=pairs[1][0].model_dump(), output=pairs[1][1].model_dump()))
        await ex.submit(factory.name, warm)
        jobs = [Job(VerifyRequest(input=i.model_dump(), output=o.model_dump())) for i, o in pairs]
        t1 = time.perf_counter()
        got = await asyncio.gather(*(ex.submit(factory.name, j) for j in jobs))
        dt = time.perf_counter() - t1
        await ex.close()
        return [Verdict.model_validate(a.output) for a in got], dt

    pool_verdicts, t_pool = asyncio.run(pooled())
    agree = [a.ok for a in serial] == [b.ok for b in pool_verdicts]
    expected = [k % 3 != 0 for k in range(n)]
    rows = [
        {"method": "one at a time (driver)", "verifications": n, "per s": n / t_serial, "speed-up": 1.0},
        {"method": "verifier pool on Ray (2 actors)", "verifications": n, "per s": n / t_pool, "speed-up": t_serial / t_pool},
    ]
    ok = agree and [v.ok for v in serial] == expected
    return {
        "rows": rows,
        "summary": f"pool {t_serial / t_pool:.2f}x one-at-a-time; verdicts agree: {agree}; correct: {ok}",
        "ok": ok,
    }

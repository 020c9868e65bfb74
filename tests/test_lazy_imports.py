"""Heavy libraries load only where they are used (issue 23): importing the SDK and building the
built-in skills loads neither torch nor scipy nor statsmodels (the ladders name their tiny-model
workers lazily, workers/lazy.py); a sudoku-only run loads torch (its TRM tier is placed) but
neither scipy nor statsmodels; only forecasting (statsmodels' Holt-Winters) or generating
synthetic series (scipy's filter) does. Each check is a fresh interpreter, since this test
process may have imported them already."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYFLEET_")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_importing_the_sdk_and_building_the_builtin_skills_loads_no_torch_scipy_or_statsmodels() -> None:
    line = _python(
        """
        import sys
        import tinyfleet
        from workers.builtin import default_registry
        reg = default_registry()
        heavy = ("torch", "scipy", "statsmodels", "openai", "ray")
        print(len(reg.names()) >= 5, *(m in sys.modules for m in heavy))
        """,
        ROOT,
    )
    assert line == "True False False False False False"  # openai's SDK loads with the first model call


def test_a_sudoku_only_run_loads_neither_scipy_nor_statsmodels(tmp_path: Path) -> None:
    line = _python(
        """
        import random, sys
        from tinyfleet import Fleet, Task
        from workers.kits import sudoku
        fleet = Fleet(executor="local")
        report = fleet.run_sync(Task(skill="sudoku.solve", inputs={"puzzle": sudoku.generate(4, random.Random(0))[0]}))
        fleet.close_sync()
        print(report.status, report.steps[0].tier, "torch" in sys.modules, "scipy" in sys.modules, "statsmodels" in sys.modules)
        """,
        tmp_path,
    )
    assert line == "succeeded trm True False False"


def test_every_lazy_worker_of_the_builtin_ladders_names_its_class_truly() -> None:
    """Each lazy factory's name and particles agree with the class it imports (a drift would key
    the pool under the wrong name), and the class builds."""
    from workers.builtin import default_registry
    from workers.lazy import LazyWorker

    reg = default_registry()
    skills = [reg.get(n) for n in reg.names()]
    lazy = [t.worker for s in skills for t in [*s.ladder, *([s.fallback] if s.fallback else [])] if isinstance(t.worker, LazyWorker)]
    assert len(lazy) >= 6
    for w in lazy:
        cls = w.load()
        assert (cls.name, bool(getattr(cls, "stochastic", False))) == (w.name, w.stochastic)


def test_a_lazy_worker_that_disagrees_with_its_class_is_refused() -> None:
    import pytest

    from tinyfleet_core.errors import ConfigError
    from workers.lazy import LazyWorker

    with pytest.raises(ConfigError, match="make them agree"):
        LazyWorker("workers.kits.classic", "SudokuExactSolver", name="sudoku.trm")()
    with pytest.raises(ConfigError, match="cannot import"):
        LazyWorker("workers.kits.classic", "NoSuchWorker", name="x")()


def test_the_series_kit_still_loads_them_where_they_are_used() -> None:
    """The other side: the lazy imports are real imports, reached by the functions that need them."""
    line = _python(
        """
        import sys
        import numpy as np
        from workers.kits import series
        before = ("scipy" in sys.modules, "statsmodels" in sys.modules)
        for seed in range(100):  # the AR(1) branch (scipy's filter) is drawn for some seeds only
            s = series.generate_series(np.random.default_rng(seed), 120)
            if "scipy" in sys.modules:
                break
        mean, lo, hi = series.classical_forecast(s.values, 6, 1)
        print(before, "scipy" in sys.modules, "statsmodels" in sys.modules, len(mean))
        """,
        ROOT,
    )
    assert line == "(False, False) True True 6"

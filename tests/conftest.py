"""Shared fixtures. One Ray instance serves the whole test session (starting Ray costs
5-7 s on two cores); test actors ask for small CPU fractions."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start one local Ray for the session (2 logical CPUs, 1 logical GPU for placement tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            num_gpus=1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
    yield
    ray.shutdown()

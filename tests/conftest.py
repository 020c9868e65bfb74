"""Shared fixtures. One Ray instance serves the whole test session (starting Ray costs
5-7 s on two cores); test actors ask for small CPU fractions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Versions that `tinyfleet learn` promotes are served to every later run of the user
# (~/.local/share/tinyfleet/learned): the tests, their subprocesses and their Ray workers keep
# theirs in a directory of the session's own, so no test changes what another one serves.
os.environ.setdefault("TINYFLEET_LEARNED_DIR", tempfile.mkdtemp(prefix="tinyfleet-tests-learned-"))


def _paths() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return [here, os.path.dirname(here), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start one local Ray for the session (2 logical CPUs, 1 logical GPU for placement tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            num_gpus=1,
            resources={"cpu_node": 4},  # a node type of ray_cluster.yaml, for pinning tests
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            # test-only workers live in tests/: let actor processes import them
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(_paths())}},
        )
    yield
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """Each test using this runs twice: on the LocalExecutor and on the RayExecutor."""
    from orchestrator import LocalExecutor
    from orchestrator.ray_executor import RayExecutor

    if request.param == "ray":
        request.getfixturevalue("ray_session")
        ex: LocalExecutor | RayExecutor = RayExecutor()
    else:
        ex = LocalExecutor()
    yield ex
    await ex.close()

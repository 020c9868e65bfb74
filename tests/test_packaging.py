"""The distribution installs every package of the tree, and nothing under a generic top-level
name: the repository's ``examples/`` folder installs as ``tinyfleet.examples``."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _tree_packages() -> set[str]:
    mapping = {v: k for k, v in _setuptools().get("package-dir", {}).items()}
    found = set()
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".git", "build") or any(p.startswith(".") for p in rel.parts):
            continue
        top = rel.parts[0]
        prefix = mapping.get(top, top)
        found.add(".".join([prefix, *rel.parts[1:]]))
    return found


def test_every_package_of_the_tree_is_installed() -> None:
    listed = set(_setuptools()["packages"])
    assert _tree_packages() == listed, "pyproject's [tool.setuptools] packages must list exactly the tree's packages"


def test_no_generic_examples_package_is_installed() -> None:
    listed = set(_setuptools()["packages"])
    assert not any(p == "examples" or p.startswith("examples.") for p in listed)
    assert "tinyfleet.examples.planning_agent" in listed


def test_the_public_face_has_the_whole_api() -> None:
    import tinyfleet

    for name in ["Fleet", "Task", "Plan", "Step", "Strategy", "Budget", "Policy", "RunReport", "define_skill",
                 "tier", "Worker", "Verifier", "TinyfleetError", "PlanError", "OpenAIPlanner", "OpenAISettings"]:
        assert name in tinyfleet.__all__ and getattr(tinyfleet, name) is not None, name
    assert issubclass(tinyfleet.PlanError, tinyfleet.TinyfleetError)

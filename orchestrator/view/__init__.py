"""The run viewer: a run's plan DAG (laid out by the vendored dagre), every step's attempts and
verdicts, totals and cost per thought by tier, and a timeline, as a page served on 127.0.0.1
or one self-contained HTML file; live from a run's events with :class:`LiveView`.

    from orchestrator.view import load_document, write_html
    write_html(load_document("runs/abc.sqlite"), "run.html")
"""

from __future__ import annotations

from orchestrator.view.document import (
    NOT_RECORDED,
    ViewDocument,
    document_from_journal,
    document_from_report,
    load_document,
    plan_document,
)
from orchestrator.view.live import LiveView
from orchestrator.view.page import render_page, write_html
from orchestrator.view.scrub import REDACTED, redact, redact_json, redact_text
from orchestrator.view.server import ViewServer, ViewState

__all__ = [
    "LiveView",
    "NOT_RECORDED",
    "REDACTED",
    "ViewDocument",
    "ViewServer",
    "ViewState",
    "document_from_journal",
    "document_from_report",
    "load_document",
    "plan_document",
    "redact",
    "redact_json",
    "redact_text",
    "render_page",
    "write_html",
]

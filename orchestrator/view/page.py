"""The run viewer's page: one HTML file with its CSS, its script and the vendored graph layout
library (dagre, MIT, ``assets/dagre.min.js``) inline, so it opens offline from a file and
needs nothing but the server that sent it when served. Its Content-Security-Policy forbids
every fetch except to the page's own origin."""

from __future__ import annotations

import json
import os
import re
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.view.document import ViewDocument
from orchestrator.view.scrub import redact_json

__all__ = ["render_page", "write_html", "asset_text"]

_SLOT = re.compile(r"/\*__(?:CSS|DAGRE|APP)__\*/|__BOOT__|__TITLE__")


@cache
def asset_text(name: str) -> str:
    """A vendored asset of the page, read from the installed package."""
    return resources.files("orchestrator.view").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element (no ``</script>``,
    no ``<!--``): ``<``, ``>`` and ``&`` are written as escapes. Secrets are stripped."""
    text = redact_json(json.dumps(value, separators=(",", ":"), default=str, allow_nan=False))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(document: ViewDocument | None = None, *, title: str = "") -> str:
    """The page: with ``document`` it is self-contained (the run inline); without, it loads
    ``run.json``, ``step/<id>`` and ``events`` from the server that sent it."""
    boot: dict[str, Any] = {"mode": "served"}
    if document is not None:
        doc, details = document
        boot = {"mode": "file", "doc": doc, "details": dict(details)}
        title = title or str(doc["run"].get("task_id", ""))
    dagre = "\n".join(line for line in asset_text("dagre.min.js").splitlines() if not line.startswith("//# sourceMappingURL"))
    parts = {
        "/*__CSS__*/": asset_text("view.css"),
        "/*__DAGRE__*/": dagre,
        "/*__APP__*/": asset_text("view.js"),
        "__BOOT__": _script_json(boot),
        "__TITLE__": _html_text(title),
    }
    # one pass over the template only: nothing inserted is searched again
    return _SLOT.sub(lambda m: parts[m.group(0)], asset_text("page.html"))


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_html(document: ViewDocument, path: str | Path) -> Path:
    """Write the self-contained page of ``document`` to ``path`` (atomically); return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_page(document))
        os.chmod(tmp, 0o644)  # a page to share (mkstemp makes it owner-only)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

"""Reading JSON out of what a model says: one reader for plans, solve answers, judgements and
small-model candidates.

Models wrap their JSON in many ways. ``read_json_reply`` finds it

- as the whole reply, or inside a fenced block anywhere (```json ... ``` after prose);
- with prose before or after it (Ollama, small instruction models): every top-level ``{...}``
  in the text is tried with :meth:`json.JSONDecoder.raw_decode`;
- after a ``<think>...</think>`` block (DeepSeek-R1, Qwen3 served without a reasoning parser),
  or after a lone ``</think>`` (templates that open the block in the prompt);
- in ``reasoning_content`` (or ``reasoning``) when the content itself is empty, as servers with
  a reasoning parser send it when the answer never left the reasoning; there the *last*
  JSON object that fits wins (earlier ones are drafts).

Each candidate is handed to ``fit`` (a pydantic ``model_validate``, a plan check, ...); the
first that fits is returned. When several JSON objects appear, the one that fits is taken.
When none fits, :class:`ReplyError` says why (the problem of the most promising candidate)
and quotes a short excerpt of the reply, so a log or an exit message shows what came back.

Why not a library: ``json-repair`` (pip-installable, pure Python) repairs broken JSON by
guessing (it turns prose into strings and closes truncated objects), which would let a
truncated plan run; ``jiter``'s partial mode (already installed with ``openai``) likewise
completes truncated input. Neither finds a JSON object inside prose. What is needed here is
strict: find complete JSON values and let the caller's schema decide, which the standard
library's ``raw_decode`` does in a few lines, with no new dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tinyfleet_core.errors import TinyfleetError

__all__ = ["ModelReply", "ReplyError", "excerpt", "json_candidates", "read_json_reply", "split_reasoning"]

T = TypeVar("T")

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)
_FENCED = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ModelReply:
    """What one choice of a chat completion said: its content and its reasoning (the
    ``reasoning_content`` / ``reasoning`` field some servers send; empty when none)."""

    content: str
    reasoning: str = ""


@dataclass
class ReplyError(ValueError):
    """No JSON value in a reply fits. ``failures`` holds (candidate, why it did not fit) for
    every JSON value found, in the order tried; the message quotes an excerpt of the reply."""

    message: str
    failures: list[tuple[Any, Exception]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def excerpt(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to about ``limit`` characters (head and tail kept)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    tail = limit // 4
    return f"{flat[: limit - tail - 5]} ... {flat[-tail:]}"


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a reply that may carry ``<think>`` blocks in its content."""
    thoughts = [m.group(2) for m in _THINK_BLOCK.finditer(text)]
    answer = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(answer))
    if closes:  # '</think>' without its opening tag: everything before it was reasoning
        thoughts.append(answer[: closes[-1].start()])
        answer = answer[closes[-1].end() :]
    opened = _THINK_OPEN.search(answer)
    if opened:  # an unclosed '<think>': the reply stopped while still reasoning
        thoughts.append(answer[opened.end() :])
        answer = answer[: opened.start()]
    return answer.strip(), "\n".join(t.strip() for t in thoughts if t.strip())


def _objects_in(text: str) -> Iterator[Any]:
    """Every complete top-level JSON object in ``text``, left to right."""
    i = text.find("{")
    while i != -1:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        yield value
        i = text.find("{", end)


def json_candidates(text: str) -> list[Any]:
    """The JSON values in ``text``, in the order they are tried: the whole text (when it is
    JSON), then each fenced block's JSON, then every top-level object in the text. Values
    found twice are listed once."""
    out: list[Any] = []
    seen: set[str] = set()

    def add(value: Any) -> None:
        key = json.dumps(value, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(value)

    body = text.strip()
    if not body:
        return out
    try:
        add(json.loads(body))
    except json.JSONDecodeError:
        pass
    for m in _FENCED.finditer(body):
        block = m.group(2).strip()
        try:
            add(json.loads(block))
        except json.JSONDecodeError:
            for v in _objects_in(block):
                add(v)
    for v in _objects_in(body):
        add(v)
    return out


def _why_no_json(text: str) -> str:
    """The decoder's complaint about the text's first '{' (or that there is none)."""
    i = text.find("{")
    if i == -1:
        return "it holds no JSON object"
    try:
        _DECODER.raw_decode(text, i)
    except json.JSONDecodeError as e:
        return f"its JSON is broken ({e.msg} at line {e.lineno} column {e.colno})"
    return "it holds no complete JSON object"  # pragma: no cover - raw_decode succeeded above


def read_json_reply(
    reply: ModelReply | str,
    fit: Callable[[Any], T],
    *,
    what: str = "an object",
    excerpt_chars: int = 160,
) -> T:
    """The first JSON value in ``reply`` that ``fit`` accepts (see module docs).

    ``fit`` raises ValueError (pydantic's ValidationError is one) or a TinyfleetError (a
    PlanError) for a candidate that does not fit. Raises :class:`ReplyError` when none fits."""
    if isinstance(reply, str):
        reply = ModelReply(reply)
    answer, thought = split_reasoning(reply.content)
    from_reasoning = False
    candidates = json_candidates(answer)
    if not candidates and not answer:
        # The answer never left the reasoning: the last complete object there is the answer.
        reasoning = "\n".join(t for t in (thought, reply.reasoning.strip()) if t)
        candidates = list(reversed(json_candidates(reasoning)))
        from_reasoning = bool(candidates)
    failures: list[tuple[Any, Exception]] = []
    for value in candidates:
        try:
            return fit(value)
        except (ValueError, TinyfleetError) as e:
            failures.append((value, e))
    shown = reply.content if reply.content.strip() else reply.reasoning
    quote = f'; the reply began: "{excerpt(shown, excerpt_chars)}"' if shown.strip() else ""
    if not candidates:
        if not reply.content.strip() and not reply.reasoning.strip():
            raise ReplyError(f"the reply is empty; it must hold {what} as JSON")
        where = answer if answer else (reply.reasoning or thought)
        raise ReplyError(f"the reply holds no usable JSON: {_why_no_json(where)}; it must hold {what}{quote}", failures)
    source = " in the reasoning" if from_reasoning else ""
    first = failures[0][1]
    n = len(candidates)
    if n == 1:
        raise ReplyError(f"the reply's JSON{source} does not fit: {first}{quote}", failures)
    raise ReplyError(f"none of the {n} JSON values{source} in the reply fits; the first: {first}{quote}", failures)

"""A simulated large model for the benchmarks: stated latency, token counts, prices and
error rates, served over OpenAI-compatible HTTP by :class:`.stub_server.BenchStubServer` (on the
one fake server, :class:`tinyfleet.testing.ScriptedOpenAIServer`).

It is not a model. It answers an escalated step with the task kit's right answer (sudoku
search, BFS; for forecasts, which have no right answer, seasonal naive with widening bands),
and, with a stated probability per kind of step, with a *plausible wrong* answer instead:
a sudoku solution with two cells of one row swapped (or one cell changed), a maze path that
cuts a corner through a wall or jumps a cell, a forecast one step short. The wrong answer goes
back through the real ``OpenAIPlanner.solve`` path and the skill's own verifier like any
other, so it fails the step visibly. Whether a request is answered wrongly is decided by a
hash of the seed and the request's text: deterministic per seed, independent of the order
requests arrive in, and the same question gets the same answer from every policy.

Every parameter is in :class:`SimConfig` and printed with the results (:meth:`SimConfig.describe`).
Defaults and where they come from:

``GPT4O_CLASS`` (the large model)
  - time to first token 0.40 s: the upper end of "200-400 ms first token" measured for
    GPT-4o in May 2024 (michaeljohnpena.com, "GPT-4o Speed Improvements", 2024-05-08). Our
    prompts are longer than a chat turn, so the upper end; prompt length is not modelled
    further.
  - 63 output tokens/s: mean of 8 measured requests to gpt-4o-2024-05-13 (63.32 tok/s, median
    65.54) in "GPT-4o tokens per second comparable to gpt-3.5-turbo" (OpenAI developer
    community forum, thread 768559, May 2024).
  - $2.50 / $10.00 per million input / output tokens: GPT-4o's list price (gpt-4o-2024-08-06)
    as stated on OpenAI's pricing page; not re-verified from this machine (no network).
  - at most 16 requests in flight (later ones queue in the server): assumed; provider rate
    limits (requests or tokens per minute) are not modelled otherwise.

``SMALL_CLASS`` (a GPT-4o-mini-class model, for the DAG benchmark's lookups and its plan
check): 0.30 s to first token, 100 tokens/s, $0.15 / $0.60 per Mtok, 64 in flight: all
assumed (no measurement found for this machine to cite).

``ERROR_RATES`` (share of answers that are wrong, per kind of step):
  - sudoku 9x9: 0.90. "Sudoku Night: 79 models, one puzzle" (joshua8-ai blog, 2025-12-05):
    79 language models on one NYT "Easy" 9x9 without tools, 8.9% solved it; Sudoku-Bench
    (Seely et al., Sakana AI, arXiv 2505.16135, 2025): state-of-the-art LLMs solve fewer than
    15% of its puzzles unaided, and at release o3 solved none of its classic 9x9 puzzles.
  - sudoku 6x6: 0.60, assumed; informed by arXiv 2505.15993 (Maiya et al., 2025: of five
    LLMs on 6x6 sudoku, one shows limited success).
  - sudoku 4x4: 0.10, assumed.
  - maze side <= 9: 0.30, assumed.
  - maze side > 9: 0.80, assumed from MazeEval (arXiv 2507.20395, 2025): apart from o3,
    models fail catastrophically on mazes beyond 9x9. (MazeEval navigates step by step with
    feedback; our step asks for the whole path at once, which is not easier.)
  - forecast: 0.05, assumed (a forecast one step short of the horizon).

Token counts (:func:`count_tokens`): no tokenizer is installed here and nothing may be
downloaded, so tokens are counted with a stated approximation of the GPT-4o/cl100k
pre-tokenizer: the text is split like that pre-tokenizer splits it (letter runs with one
leading space, digit runs of at most 3 digits, punctuation runs, whitespace), one token per
piece, and letter runs longer than 6 characters count one token per 6 characters (BPE never
merges across these pieces, so for JSON full of numbers this is close; for English prose it
over-counts slightly). A chat request counts 3 tokens per message plus 3 for the reply
(OpenAI cookbook's rule for chat models) plus the JSON schema sent as ``response_format``.
Completion tokens are counted the same way on the reply text the server actually sends.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ModelProfile",
    "SimConfig",
    "GPT4O_CLASS",
    "SMALL_CLASS",
    "ERROR_RATES",
    "ERROR_SOURCES",
    "count_tokens",
    "count_prompt_tokens",
    "step_input",
    "category",
    "respond",
]


@dataclass(frozen=True)
class ModelProfile:
    """One simulated model: latency, throughput, price, how many requests it serves at once."""

    name: str
    ttft_s: float
    tokens_per_s: float
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    max_concurrent: int
    source: str

    def seconds(self, completion_tokens: int) -> float:
        """Service time of one request: time to first token plus the output at the stated rate."""
        return self.ttft_s + completion_tokens / self.tokens_per_s


GPT4O_CLASS = ModelProfile(
    name="sim-large",
    ttft_s=0.40,
    tokens_per_s=63.0,
    usd_per_mtok_in=2.50,
    usd_per_mtok_out=10.00,
    max_concurrent=16,
    source=(
        "TTFT: upper end of 200-400 ms measured for GPT-4o (michaeljohnpena.com, 2024-05-08); "
        "63 tok/s: mean of 8 gpt-4o-2024-05-13 requests (OpenAI community forum thread 768559, May 2024); "
        "price: GPT-4o list price $2.50/$10.00 per Mtok (OpenAI pricing page, not re-verified offline); "
        "16 in flight: assumed"
    ),
)

SMALL_CLASS = ModelProfile(
    name="sim-small",
    ttft_s=0.30,
    tokens_per_s=100.0,
    usd_per_mtok_in=0.15,
    usd_per_mtok_out=0.60,
    max_concurrent=64,
    source="assumed (a GPT-4o-mini-class model; no measurement cited)",
)

ERROR_RATES: dict[str, float] = {
    "sudoku 4x4": 0.10,
    "sudoku 6x6": 0.60,
    "sudoku 9x9": 0.90,
    "maze side <= 9": 0.30,
    "maze side > 9": 0.80,
    "forecast": 0.05,
}

ERROR_SOURCES: dict[str, str] = {
    "sudoku 4x4": "assumed",
    "sudoku 6x6": "assumed; arXiv 2505.15993: of 5 LLMs on 6x6 sudoku, one with limited success",
    "sudoku 9x9": "79 LLMs on one NYT Easy 9x9: 8.9% solved (joshua8-ai blog, 2025-12-05); "
                  "Sudoku-Bench (arXiv 2505.16135): SOTA LLMs < 15% unaided",
    "maze side <= 9": "assumed",
    "maze side > 9": "assumed from MazeEval (arXiv 2507.20395): models other than o3 fail beyond 9x9",
    "forecast": "assumed",
}


@dataclass(frozen=True)
class SimConfig:
    """What the simulated server does: one profile per model name (the first answers any
    other name), error rates per kind of step, and the seed of its choices."""

    profiles: tuple[ModelProfile, ...] = (GPT4O_CLASS, SMALL_CLASS)
    error_rates: dict[str, float] = field(default_factory=lambda: dict(ERROR_RATES))
    seed: int = 0

    def profile(self, model: str) -> ModelProfile:
        for p in self.profiles:
            if p.name == model:
                return p
        return self.profiles[0]

    def to_json(self) -> str:
        return json.dumps({"profiles": [asdict(p) for p in self.profiles], "error_rates": self.error_rates, "seed": self.seed})

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        doc = json.loads(text)
        return cls(tuple(ModelProfile(**p) for p in doc["profiles"]), dict(doc["error_rates"]), int(doc["seed"]))

    def describe(self) -> dict[str, Any]:
        """The parameters as printed with the results."""
        return {
            "models": [asdict(p) for p in self.profiles],
            "error_rates": [
                {"step": k, "error_rate": v, "source": ERROR_SOURCES.get(k, "set by the benchmark")}
                for k, v in self.error_rates.items()
            ],
            "seed": self.seed,
            "tokens": "approximate cl100k/o200k pre-tokenizer piece count (see tinyfleet.bench.simulated_llm); "
                      "3 per message + 3 per reply + the response_format schema",
        }


_PIECES = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+|_+", re.UNICODE)


def count_tokens(text: str) -> int:
    """Approximate token count of ``text`` (the rule in the module docs)."""
    n = 0
    for m in _PIECES.finditer(text):
        piece = m.group(0)
        letters = piece.strip()
        if letters.isalpha() and len(letters) > 6:
            n += math.ceil(len(letters) / 6)
        else:
            n += 1
    return n


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat request: each message's content + 3, + 3 for the reply, + the
    ``response_format`` schema when one is sent."""
    n = 3
    for m in body.get("messages", []):
        n += 3 + count_tokens(str(m.get("content", "")))
    if body.get("response_format"):
        n += count_tokens(json.dumps(body["response_format"]))
    return n


def step_input(body: dict[str, Any]) -> dict[str, Any] | None:
    """The escalated step's input (the JSON after ``input (JSON):`` in the first user
    message), or None for any other request."""
    for m in body.get("messages", []):
        if m.get("role") == "user":
            _, sep, payload = str(m.get("content", "")).partition("input (JSON): ")
            if not sep:
                return None
            try:
                doc = json.loads(payload)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


def category(inp: dict[str, Any]) -> str | None:
    """The error-rate key of a step input, or None when it is no kind the table knows."""
    if "puzzle" in inp:
        n = len(inp["puzzle"])
        return f"sudoku {n}x{n}"
    if "grid" in inp:
        return "maze side <= 9" if len(inp["grid"]) <= 9 else "maze side > 9"
    if "values" in inp and "horizon" in inp:
        return "forecast"
    return None


def _rng(seed: int, inp: dict[str, Any]) -> random.Random:
    digest = hashlib.sha256(f"{seed}|{json.dumps(inp, sort_keys=True)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _wrong_sudoku(puzzle: list[list[int]], solution: list[list[int]], rng: random.Random) -> list[list[int]]:
    sol = [row[:] for row in solution]
    n = len(sol)
    rows = list(range(n))
    rng.shuffle(rows)
    for r in rows:
        blanks = [c for c in range(n) if puzzle[r][c] == 0]
        if len(blanks) >= 2:
            a, b = rng.sample(blanks, 2)
            sol[r][a], sol[r][b] = sol[r][b], sol[r][a]  # row still a permutation; a column breaks
            return sol
    r, c = next((r, c) for r in rows for c in range(n) if puzzle[r][c] == 0)
    sol[r][c] = sol[r][c] % n + 1
    return sol


def _wrong_path(grid: list[str], path: list[list[int]], rng: random.Random) -> list[list[int]]:
    from workers.kits.maze import check_path

    inner = list(range(1, len(path) - 1))
    rng.shuffle(inner)
    for i in inner:  # cut a corner: through the other corner cell, usually a wall
        (r0, c0), (r1, c1) = path[i - 1], path[i + 1]
        if r0 != r1 and c0 != c1:
            corner = [r0, c1] if path[i] == [r1, c0] else [r1, c0]
            cand = path[:i] + [corner] + path[i + 1 :]
            if check_path(grid, cand) is not None:
                return cand
    if inner:  # no corner to cut: jump one cell
        i = inner[0]
        return path[:i] + path[i + 1 :]
    return path[:1] + [[path[0][0], path[0][1]]] + path[1:]  # S next to G: a standstill step


def _wrong_forecast(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v[:-1] for k, v in doc.items()}  # one step short of the horizon


def respond(cfg: SimConfig, body: dict[str, Any], right: str) -> tuple[str, bool]:
    """The reply text for ``body`` given the ``right`` one: (text, whether it was made wrong).
    Only escalated steps of a kind in ``cfg.error_rates`` are ever made wrong."""
    inp = step_input(body)
    kind = category(inp) if inp is not None else None
    if inp is None or kind is None:
        return right, False
    rng = _rng(cfg.seed, inp)
    if rng.random() >= cfg.error_rates.get(kind, 0.0):
        return right, False
    doc = json.loads(right)
    if kind.startswith("sudoku"):
        doc = {"solution": _wrong_sudoku(inp["puzzle"], doc["solution"], rng)}
    elif kind.startswith("maze"):
        doc = {"path": _wrong_path(inp["grid"], doc["path"], rng)}
    else:
        doc = _wrong_forecast(doc)
    return json.dumps(doc), True

"""Small-LLM followers and an LLM judge, behind any OpenAI-compatible endpoint.

``SmallLLMWorker`` answers jobs of any skill as particles: each job is one sample (temperature
> 0, a seed per particle) asked for JSON that fits the skill's output schema; the jobs of a
batch run concurrently. Seeds are drawn afresh for every batch, so two runs sample
differently; with ``OpenAISettings.seed`` (``TINYFLEET_SEED``, ``tinyfleet run --seed``) they
are derived from it, the step and the particle, so a run can be repeated. Replies are read
by ``workers.llm.reply_parsing`` (prose, fences and ``<think>`` blocks around the JSON). Its
confidence is self-consistency: the share of the step's particles in the same batch that gave the same answer (a lone particle gets ``single_confidence``).
``llm_tier(skill)`` makes it a middle tier of a ladder:

    skill.ladder.append(llm_tier(skill))        # ... -> llm-small -> (large model)

``LLMJudgeVerifier`` rules on answers that nothing else can check. Its verdicts are marked
``judgement=True`` (an opinion, not a proof) with the judge's confidence as ``score``.

Both read their settings like the planner (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``TINYFLEET_SMALL_MODEL``, ...; see :class:`planners.openai.OpenAISettings`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyfleet_core.errors import ConfigError, TinyfleetError
from tinyfleet_core.models import Attempt, Cost, Verdict
from tinyfleet_core.prices import PriceTable
from tinyfleet_core.validation import first_problem
from workers.base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from workers.llm.client import ChatClient, OpenAISettings
from workers.llm.reply_parsing import ReplyError, read_json_reply

__all__ = ["LLM_POOL", "LLMJudgeVerifier", "SmallLLMWorker", "llm_tier", "particle_seed"]

T = TypeVar("T")

LLM_POOL = PoolOptions(inline=True, max_batch=32, max_wait_ms=5.0, max_concurrency=8, num_cpus=0.0, timeout_s=600.0)
"""LLM tiers are I/O bound: they run in the driver, many requests in flight per batch."""


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code (a worker's ``solve_batch``).

    On a thread that already runs an event loop (an inline pool called from the driver's
    loop) it runs on a helper thread instead, since a loop cannot be re-entered."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-batch") as pool:
        return pool.submit(asyncio.run, coro).result()


class SmallLLMWorker(Worker):
    """A small LLM answering one skill's jobs as particles (see module docs)."""

    name = "llm.small"
    skill = "*"
    stochastic = True

    def __init__(
        self,
        skill_name: str,
        description: str,
        output_model: type[BaseModel],
        *,
        settings: OpenAISettings | None = None,
        prices: PriceTable | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_in_flight: int = 8,
        single_confidence: float = 0.5,
    ) -> None:
        # Cheap on purpose: `tinyfleet skills` builds workers just to name them. The key is
        # read and checked on the first batch.
        self.skill_name = skill_name
        self.description = description
        self.output_model = output_model
        self._settings = settings
        self._prices = prices
        self._model = model
        self._temperature = temperature
        self.max_in_flight = max(1, max_in_flight)
        self.single_confidence = single_confidence
        self._chat: ChatClient | None = None

    def _client(self) -> ChatClient:
        if self._chat is None:
            settings = self._settings if self._settings is not None else OpenAISettings.from_env()
            self._chat = ChatClient(settings, prices=self._prices)  # ConfigError without a key
        return self._chat

    @property
    def model(self) -> str:
        return self._model or self._client().settings.small_model

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        return _run_blocking(self._solve_all(list(jobs)))

    async def _solve_all(self, jobs: list[Job]) -> list[Attempt]:
        chat = self._client()
        gate = asyncio.Semaphore(self.max_in_flight)
        base = chat.settings.seed if chat.settings.seed is not None else secrets.randbelow(2**31)
        try:
            answers = await asyncio.gather(*(self._one(chat, gate, job, particle_seed(base, job.key, job.particle)) for job in jobs))
        finally:
            await chat.aclose()
        return self._with_agreement(jobs, answers)

    async def _one(self, chat: ChatClient, gate: asyncio.Semaphore, job: Job, seed: int) -> Attempt:
        schema = self.output_model.model_json_schema()
        messages = [
            {
                "role": "system",
                "content": f"Answer one task of skill {self.skill_name}: {self.description}\n"
                f"Reply with one JSON object only, matching this JSON schema:\n{json.dumps(schema)}",
            },
            {"role": "user", "content": f"Input (JSON): {job.input.model_dump_json()}"},
        ]
        temperature = self._temperature if self._temperature is not None else chat.settings.small_temperature
        t0 = time.perf_counter()
        async with gate:
            try:
                reply = await chat.complete(
                    messages,
                    model=self.model,
                    schema=schema,
                    schema_name=self.skill_name,
                    temperature=temperature,
                    seed=seed,
                    what=f"{self.name} particle {job.particle} of {job.key or self.skill_name}",
                )
            except ConfigError:
                raise  # wrong settings fail the whole batch, loudly
            except TinyfleetError as e:
                return self.attempt(None, 0.0, job=job, error=f"{type(e).__name__}: {e}", wait_s=time.perf_counter() - t0)
        # waiting on the model is not our CPU: no worker seconds; the wait is in info
        cost = Cost(tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, cost_usd=reply.cost_usd, particles=1)
        info: dict[str, Any] = {"model": reply.model, "finish_reason": reply.finish_reason, "seed": seed, "wait_s": time.perf_counter() - t0}
        try:
            out = read_json_reply(reply.reply, self._fit, what=f"one {self.output_model.__name__} object")
        except ReplyError as e:
            return Attempt(output=None, confidence=0.0, worker=self.name, particle=job.particle, cost=cost, error=str(e), info=info)
        return Attempt(
            output=out.model_dump(mode="json"), confidence=0.0, worker=self.name, particle=job.particle, cost=cost, info=info
        )

    def _fit(self, value: Any) -> BaseModel:
        try:
            return self.output_model.model_validate(value)
        except ValidationError as e:
            loc, msg = first_problem(e)
            raise ValueError(f"answer does not fit {self.output_model.__name__}: {loc}: {msg}") from None

    def _with_agreement(self, jobs: list[Job], answers: list[Attempt]) -> list[Attempt]:
        """Confidence = share of the same step's particles (in this batch) giving this answer."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            groups[job.key or f"#{i}"].append(i)
        out = list(answers)
        for idx in groups.values():
            votes = Counter(_canon(answers[i].output) for i in idx if answers[i].output is not None)
            for i in idx:
                a = answers[i]
                if a.output is None:
                    continue
                conf = self.single_confidence if len(idx) == 1 else votes[_canon(a.output)] / len(idx)
                out[i] = a.model_copy(update={"confidence": conf, "info": {**a.info, "agreement": f"{votes[_canon(a.output)]}/{len(idx)}"}})
        return out


def particle_seed(base: int, key: str, particle: int) -> int:
    """The seed of one particle: a hash of the batch's base seed, the job's key (its step)
    and the particle index (distinct per particle, the same whenever the base is)."""
    digest = hashlib.sha256(f"{base}:{key}:{particle}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _canon(output: dict[str, Any] | None) -> str:
    return json.dumps(output, sort_keys=True)


def llm_tier(
    skill: Skill,
    *,
    name: str = "llm-small",
    settings: OpenAISettings | None = None,
    prices: PriceTable | None = None,
    model: str | None = None,
    pool: PoolOptions = LLM_POOL,
) -> Tier:
    """A ladder tier where a small LLM answers ``skill``'s steps as particles (inline pool)."""
    factory = _SmallLLMFactory(skill.name, skill.description, skill.output_model, settings, prices, model)
    return Tier(name=name, worker=factory, kind="llm", pool=pool)


@dataclass(frozen=True)
class _SmallLLMFactory:
    """Builds a SmallLLMWorker; carries ``stochastic``/``name`` like the class itself does, since
    the run loop reads ``tier.worker.stochastic`` to decide how many particles to send."""

    skill_name: str
    description: str
    output_model: type[BaseModel]
    settings: OpenAISettings | None = None
    prices: PriceTable | None = None
    model: str | None = None
    stochastic: ClassVar[bool] = True
    name: ClassVar[str] = SmallLLMWorker.name

    def __call__(self) -> SmallLLMWorker:
        return SmallLLMWorker(
            self.skill_name, self.description, self.output_model, settings=self.settings, prices=self.prices, model=self.model
        )


class _Judgement(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ok: bool
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = ""


class LLMJudgeVerifier(Verifier):
    """An LLM rules whether an answer is right, for skills nothing else can check.

    ``ok`` needs the judge to say so with confidence >= ``threshold``. Verdicts carry
    ``judgement=True``, ``score`` = the judge's confidence, and the judge's tokens and dollars
    in ``details``. A judge that cannot be reached or answers nonsense rejects, visibly."""

    name = "llm.judge"
    blocking = True

    def __init__(
        self,
        task: str = "",
        *,
        settings: OpenAISettings | None = None,
        prices: PriceTable | None = None,
        model: str | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.task = task
        self._settings = settings
        self._prices = prices
        self._model = model
        self.threshold = threshold
        self._chat: ChatClient | None = None

    def _client(self) -> ChatClient:
        if self._chat is None:
            settings = self._settings if self._settings is not None else OpenAISettings.from_env()
            self._chat = ChatClient(settings, prices=self._prices)
        return self._chat

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        return _run_blocking(self._check_all(list(pairs)))

    async def _check_all(self, pairs: list[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        chat = self._client()
        try:
            return list(await asyncio.gather(*(self._judge(chat, inp, out) for inp, out in pairs)))
        finally:
            await chat.aclose()

    async def _judge(self, chat: ChatClient, inp: BaseModel, out: BaseModel) -> Verdict:
        model = self._model or chat.settings.large_model
        schema = _Judgement.model_json_schema()
        messages = [
            {
                "role": "system",
                "content": "You are a strict judge. Decide whether the answer correctly and completely solves the "
                f"task for the given input. {('Task: ' + self.task) if self.task else ''}\n"
                f"Reply with one JSON object only, matching this JSON schema:\n{json.dumps(schema)}",
            },
            {"role": "user", "content": f"Input (JSON): {inp.model_dump_json()}\nAnswer (JSON): {out.model_dump_json()}"},
        ]
        try:
            reply = await chat.complete(messages, model=model, schema=schema, schema_name="judgement", what=self.name)
        except ConfigError:
            raise
        except TinyfleetError as e:
            return Verdict(ok=False, reason=f"judge unavailable: {e}", score=0.0, verifier=self.name, judgement=True)
        details = {"model": reply.model, "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out, "cost_usd": reply.cost_usd}
        try:
            j = read_json_reply(reply.reply, _Judgement.model_validate, what="a ruling {ok, confidence, reason}")
        except ReplyError as e:
            return Verdict(
                ok=False, reason=f"judge gave no usable ruling: {e}", score=0.0, verifier=self.name, judgement=True, details=details
            )
        ok = j.ok and j.confidence >= self.threshold
        return Verdict(ok=ok, reason=f"judge ({reply.model}): {j.reason}", score=j.confidence, verifier=self.name, judgement=True, details=details)

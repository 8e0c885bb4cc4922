"""Optional reranking of a search's best candidates by a language model, called through the gateway.

No cross-encoder with bundled weights installs here, so the reranker is an LLM grader (decision
0059-rag-rerank): one chat call of a Keel alias, as the searching key (or, for a person's search, a
service principal of the tenant), grades the `top_n` best fused candidates 0-3 in one compact prompt.
The answer must be exactly `{"grades": [g1, …, gN]}` (one optional code fence around it); anything
else, a late answer (`timeout_s`) or a failed call SKIPS reranking: the fused order stands and the
result says why (`rerank.outcome`, `rerank.reason`). A search never fails because of its reranker.

The final score is `weight · grade/3 + (1 − weight) · fused/max(fused)` over the graded candidates;
candidates past `top_n` keep their fused order below them. Each hit shows `scores.rerank` (grade/3)
and `scores.final`. Outcomes are counted per process (`keel_rag_rerank_total{outcome}`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from keel.gateway.pipeline import Handler
from keel.jobs.calls import CHAT, Caller, run_body
from keel.rag.index import Index
from keel.rag.search import BadSearch, Hit, SearchQuery, SearchResult
from keel.store.protocols.rag_docs import RagDocStore
from keel.types import Principal

MAX_TOP_N = 50
MAX_TIMEOUT_S = 120.0
MAX_GRADE = 3
PASSAGE_CHARS = 1200  # each candidate's text in the prompt, cut to this
SERVICE_KEY = "keel:rag-rerank"  # the principal's key id of a person's (not a key's) reranked search
FEATURE = "keel.rag-rerank"
SETTING_TTL_S = 30.0
Outcome = Literal["applied", "bad_answer", "timeout", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("applied", "bad_answer", "timeout", "failed")
_FIELDS = ("model", "top_n", "weight", "timeout_s")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
INSTRUCTIONS = (
    "You grade how well each numbered passage answers the query: 3 answers it, 2 partly, 1 is related, "
    '0 is not. Reply with JSON only, one integer per passage in order: {"grades": [g1, g2, ...]}.'
)


@dataclass(frozen=True, slots=True)
class RerankSpec:
    model: str  # a Keel chat alias
    top_n: int = 20
    weight: float = 0.7  # the grade's share of the final score
    timeout_s: float = 10.0

    def json(self) -> dict[str, Any]:
        return {"model": self.model, "top_n": self.top_n, "weight": self.weight, "timeout_s": self.timeout_s}


def parse_spec(raw: object, param: str = "rerank", base: RerankSpec | None = None) -> RerankSpec:
    """`{model, top_n?, weight?, timeout_s?}`; with `base`, the fields given replace its own (a per-request
    override of a collection's setting), else `model` is required. `param` prefixes the fields' names in
    errors ("": the body is the setting itself)."""
    at = f"{param}." if param else ""
    if not isinstance(raw, Mapping):
        raise BadSearch(param or "body", f"'{param or 'body'}' must be an object {{model, top_n, weight, timeout_s}}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise BadSearch(f"{at}{unknown[0]}", f"Unknown field '{at}{unknown[0]}': use {', '.join(_FIELDS)}.")
    merged = {**(base.json() if base is not None else {}), **raw}
    model = merged.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 256 or "\x00" in model:
        raise BadSearch(f"{at}model", f"'{at}model' must name a chat alias (1-256 characters).")
    top_n = merged.get("top_n", 20)
    if type(top_n) is not int or not 1 <= top_n <= MAX_TOP_N:
        raise BadSearch(f"{at}top_n", f"'{at}top_n' must be an integer within 1..{MAX_TOP_N}.")
    weight = _number(merged.get("weight", 0.7), f"{at}weight", 0.0, 1.0, closed=True)
    timeout = _number(merged.get("timeout_s", 10.0), f"{at}timeout_s", 0.0, MAX_TIMEOUT_S, closed=False)
    return RerankSpec(model, top_n, weight, timeout)


def _number(value: object, param: str, lo: float, hi: float, *, closed: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and (lo <= float(value) <= hi if closed else lo < float(value) <= hi):  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    span = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g}]"
    raise BadSearch(param, f"'{param}' must be a number in {span}.")


def choose(raw: object, stored: RerankSpec | None, param: str = "rerank") -> RerankSpec | None:
    """What one request reranks with: absent → the collection's setting; false → none; an object → the
    collection's setting with those fields replaced (or a whole spec where the collection has none)."""
    if raw is None:
        return stored
    if raw is False:
        return None
    if not isinstance(raw, Mapping):
        raise BadSearch(param, f"'{param}' must be an object {{model, top_n, weight, timeout_s}} or false.")
    return parse_spec(raw, param, stored)


def stored_spec(row_rerank: Mapping[str, Any] | None) -> RerankSpec | None:
    return None if row_rerank is None else parse_spec(row_rerank)


class BadGrades(ValueError):
    """The grader's answer is not `{"grades": [N integers 0..3]}`; the message says what is wrong."""


def parse_grades(text: str, n: int) -> list[int]:
    """The grades of an answer for `n` passages, or BadGrades naming the fault."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced is not None:
        body = fenced.group(1)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadGrades("the answer is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"grades"} or not isinstance(data["grades"], list):
        raise BadGrades('the answer is not an object {"grades": [...]}')
    grades = data["grades"]
    if len(grades) != n:
        raise BadGrades(f"{len(grades)} grade(s) for {n} passage(s)")
    for g in grades:
        if type(g) is not int or not 0 <= g <= MAX_GRADE:
            raise BadGrades(f"grade {g!r} is not an integer within 0..{MAX_GRADE}")
    return list(grades)


def prompt(query: str, hits: list[Hit]) -> list[dict[str, str]]:
    passages = "\n\n".join(
        f"[{n}] {(h.title + ': ') if h.title else ''}{' '.join(h.text.split())[:PASSAGE_CHARS]}"
        for n, h in enumerate(hits, 1)
    )
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"Query: {query}\n\nPassages:\n{passages}"},
    ]


def blend(hits: tuple[Hit, ...], grades: list[int], weight: float, top_k: int) -> tuple[Hit, ...]:
    """The graded hits by final score (ties: fused order), then the ungraded in fused order, cut to top_k."""
    graded, rest = hits[: len(grades)], hits[len(grades) :]
    top = max((h.scores.get("fused") or 0.0 for h in graded), default=0.0)
    scored: list[tuple[float, int, Hit]] = []
    for i, (h, g) in enumerate(zip(graded, grades, strict=True)):
        fused = (h.scores.get("fused") or 0.0) / top if top > 0 else 0.0
        rerank = g / MAX_GRADE
        final = weight * rerank + (1 - weight) * fused
        scores = {**h.scores, "rerank": round(rerank, 6), "final": round(final, 6)}
        why = f"{h.why}; graded {g}/{MAX_GRADE} by the reranker"
        scored.append((final, i, dataclasses.replace(h, scores=scores, why=why)))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return tuple([h for _, _, h in scored] + list(rest))[:top_k]


class Reranker:
    """Grades search results through the gateway; `pipeline` gives the composed pipeline at call time
    (it is offered once every builder has run). Collections' settings are read from the store and kept
    for `SETTING_TTL_S` (`forget` drops one at once, in this process)."""

    def __init__(
        self, pipeline: Callable[[], Handler], store: RagDocStore, run: Callable[..., Any], store_payloads: bool = True
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._run = run
        self._payloads = store_payloads
        self._known: dict[tuple[str, str], tuple[float, RerankSpec | None]] = {}
        self.outcomes: Counter[str] = Counter()

    async def setting(self, tenant: str, collection: str) -> RerankSpec | None:
        key, now = (tenant, collection), time.monotonic()
        found = self._known.get(key)
        if found is not None and found[0] > now:
            return found[1]
        row = await self._run(self._store.get_collection, tenant, collection)
        spec = stored_spec(row.rerank) if row is not None else None
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = (now + SETTING_TTL_S, spec)
        return spec

    def forget(self, tenant: str, collection: str) -> None:
        self._known.pop((tenant, collection), None)

    async def search(
        self,
        index: Index,
        query: SearchQuery,
        raw: object,
        param: str,
        principal: Principal | None,
        allowed: tuple[str, ...] | None = None,
    ) -> SearchResult:
        """`index.search(query)`, reranked as the request (`raw`: its `rerank` field) and the collection ask;
        the grading call runs as `principal` with its key's aliases (`allowed`), so a key limited to some
        aliases cannot grade with another (the call fails and reranking is skipped, saying so)."""
        spec = choose(raw, await self.setting(query.tenant, query.collection), param)
        if spec is None:
            return await index.search(query)
        wide = dataclasses.replace(query, top_k=max(query.top_k, spec.top_n))
        result = await index.search(wide)
        return await self.rerank(result, query.text, spec, query.top_k, principal, query.tenant, allowed)

    async def rerank(
        self,
        result: SearchResult,
        query: str,
        spec: RerankSpec,
        top_k: int,
        principal: Principal | None,
        tenant: str,
        allowed: tuple[str, ...] | None = None,
    ) -> SearchResult:
        """`result` reordered by the grades, or as it is with the reason reranking was skipped."""
        hits = list(result.hits[: spec.top_n])
        report: dict[str, Any] = {**spec.json(), "outcome": "applied", "reason": None, "trace_id": None}
        started = time.perf_counter()
        if not hits:
            report.update(outcome="skipped", reason="no candidates")
            return _with(result, result.hits[:top_k], report, started)
        who = principal if principal is not None else Principal(tenant, SERVICE_KEY, "rag rerank")
        caller = Caller(who, allowed=allowed, timeout_s=spec.timeout_s, feature=FEATURE)
        body = {"model": spec.model, "messages": prompt(query, hits), "temperature": 0}
        outcome, grades, reason, trace = await self._ask(body, caller, spec.timeout_s, len(hits))
        self.outcomes[outcome] += 1
        report["trace_id"] = trace
        if grades is None:
            report.update(outcome="skipped", reason=f"{outcome}: {reason}")
            return _with(result, result.hits[:top_k], report, started)
        return _with(result, blend(result.hits, grades, spec.weight, top_k), report, started)

    async def _ask(
        self, body: dict[str, Any], caller: Caller, timeout_s: float, n: int
    ) -> tuple[Outcome, list[int] | None, str | None, str | None]:
        tags = {"keel.rag.rerank": "1"}
        try:
            answer = await asyncio.wait_for(
                run_body(self._pipeline(), CHAT, body, caller, tags=tags, store_payloads=self._payloads), timeout_s
            )
        except TimeoutError:
            return "timeout", None, f"no answer within {timeout_s:g} s", None
        if not answer.ok:
            error = answer.body.get("error") or {}
            return "failed", None, f"HTTP {answer.status}: {str(error.get('message', ''))[:300]}", answer.trace_id
        try:
            content = answer.body["choices"][0]["message"].get("content") or ""
            return "applied", parse_grades(str(content), n), None, answer.trace_id
        except (BadGrades, KeyError, IndexError, TypeError, AttributeError) as err:
            return "bad_answer", None, str(err) or "no message in the answer", answer.trace_id


def _with(result: SearchResult, hits: tuple[Hit, ...], report: dict[str, Any], started: float) -> SearchResult:
    report["ms"] = round((time.perf_counter() - started) * 1000, 3)
    ms = {**result.ms, "rerank": report["ms"]}
    return dataclasses.replace(result, hits=hits, ms=ms, rerank=report)

"""Assertions that need a model: `similar` (the local embedder), and the judges — llm-rubric, factuality,
answer-relevance, context-faithfulness, context-recall — which call an alias through the gateway with a
versioned prompt (prompts.py), so every judge call is a traced, priced call like any other.

A judge that cannot be reached or answers something unreadable raises `Unscorable`; `check` turns it into
a verdict with `error` set, never a silent pass."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence

from keel.evals.assertions.deterministic import json_candidates
from keel.evals.assertions.model import Assertion, Output, Scoring
from keel.evals.assertions.prompts import (
    ANSWER_RELEVANCE,
    CONTEXT_FAITHFULNESS,
    CONTEXT_RECALL,
    FACTUALITY,
    LLM_RUBRIC,
    JudgePrompt,
)

Result = tuple[bool, float, str]
DEFAULT_THRESHOLD = {"similar": 0.75, "answer-relevance": 0.7, "context-faithfulness": 0.7, "context-recall": 0.7}
FAILING_CATEGORIES = frozenset({"D"})  # promptfoo's factuality default: only a disagreement fails


class Unscorable(RuntimeError):
    """The assertion could not be scored (no judge, no embedder, an unreadable judge answer)."""


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / norm if norm else 0.0


async def _embed(s: Scoring, texts: Sequence[str]) -> Sequence[Sequence[float]]:
    if s.embed is None:
        raise Unscorable("needs the local embedder: pip install 'keel[semantic]' and its model")
    return await asyncio.to_thread(s.embed, list(texts))


def _threshold(a: Assertion) -> float:
    return a.threshold if a.threshold is not None else DEFAULT_THRESHOLD.get(a.kind, 0.0)


async def similar(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    vectors = await _embed(s, [out.text, *refs])
    best = max(cosine(vectors[0], v) for v in vectors[1:])
    limit = _threshold(a)
    return best >= limit, best, f"similarity {best:.3f} (at least {limit:g})"


async def _ask(a: Assertion, s: Scoring, prompt: JudgePrompt, **fields: str) -> Mapping[str, object]:
    alias = a.provider or s.grader
    if s.judge is None or not alias:
        raise Unscorable(f"{prompt.name} needs a judge: set the suite's grader (options.provider) to an alias")
    messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user.format(**fields)}]
    try:
        answer = await s.judge(messages, alias=alias)
    except Exception as exc:  # any failure of the judge's call is this assertion's error, not the run's
        raise Unscorable(f"judge call to {alias!r} failed: {exc}") from exc
    for doc in json_candidates(answer.text):
        if isinstance(doc, Mapping):
            return doc
    raise Unscorable(f"the judge ({prompt.id}) did not answer with a JSON object: {answer.text[:200]!r}")


def _question(s: Scoring) -> str:
    for name in ("query", "question", "input", "prompt"):
        if isinstance(s.vars.get(name), str):
            return str(s.vars[name])
    raise Unscorable("needs the question in vars.query")


def _context(s: Scoring) -> str:
    if s.context:
        return "\n\n".join(s.context)
    ctx = s.vars.get("context")
    if isinstance(ctx, list):
        return "\n\n".join(str(c) for c in ctx)
    if isinstance(ctx, str) and ctx:
        return ctx
    raise Unscorable("needs context: vars.context or the item's reference context")


async def llm_rubric(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    doc = await _ask(a, s, LLM_RUBRIC, output=out.text, rubric=str(value))
    passed = doc.get("pass")
    raw_score = doc.get("score")
    score = float(raw_score) if isinstance(raw_score, int | float) else (1.0 if passed else 0.0)
    if not isinstance(passed, bool):
        passed = score >= 0.5
    if a.threshold is not None:
        passed = passed and score >= a.threshold
    return passed, score, f"{LLM_RUBRIC.id}: {doc.get('reason', '')}"


async def factuality(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    question = next((str(v) for k, v in s.vars.items() if k in ("query", "question", "input")), "")
    doc = await _ask(a, s, FACTUALITY, output=out.text, reference=str(value), question=question)
    category = str(doc.get("category", "")).strip("() ").upper()[:1]
    if category not in "ABCDE" or not category:
        raise Unscorable(f"the judge ({FACTUALITY.id}) chose no category A-E: {doc!r}")
    passed = category not in FAILING_CATEGORIES
    return passed, 1.0 if passed else 0.0, f"{FACTUALITY.id}: ({category}) {doc.get('reason', '')}"


async def answer_relevance(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    question = _question(s)
    doc = await _ask(a, s, ANSWER_RELEVANCE, output=out.text)
    rows = doc.get("questions")
    asked = [q for q in rows if isinstance(q, str) and q.strip()] if isinstance(rows, list) else []
    if not asked:
        raise Unscorable(f"the judge ({ANSWER_RELEVANCE.id}) wrote no questions")
    vectors = await _embed(s, [question, *asked])
    score = sum(cosine(vectors[0], v) for v in vectors[1:]) / len(asked)
    limit = _threshold(a)
    return score >= limit, score, f"{ANSWER_RELEVANCE.id}: mean similarity {score:.3f} (at least {limit:g})"


def _fraction(doc: Mapping[str, object], key: str, flag: str, prompt: JudgePrompt) -> tuple[float, int]:
    rows = doc.get(key)
    if not isinstance(rows, list) or not rows:
        raise Unscorable(f"the judge ({prompt.id}) listed no {key}")
    yes = sum(1 for r in rows if isinstance(r, Mapping) and r.get(flag) is True)
    return yes / len(rows), len(rows)


async def context_faithfulness(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    doc = await _ask(a, s, CONTEXT_FAITHFULNESS, output=out.text, question=_question(s), context=_context(s))
    score, n = _fraction(doc, "statements", "supported", CONTEXT_FAITHFULNESS)
    limit = _threshold(a)
    return score >= limit, score, f"{CONTEXT_FAITHFULNESS.id}: {score:.0%} of {n} statements supported"


async def context_recall(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    doc = await _ask(a, s, CONTEXT_RECALL, reference=str(value), context=_context(s))
    score, n = _fraction(doc, "sentences", "attributed", CONTEXT_RECALL)
    limit = _threshold(a)
    return score >= limit, score, f"{CONTEXT_RECALL.id}: {score:.0%} of {n} reference sentences in the context"


CHECKS = {
    "similar": similar,
    "llm-rubric": llm_rubric,
    "factuality": factuality,
    "answer-relevance": answer_relevance,
    "context-faithfulness": context_faithfulness,
    "context-recall": context_recall,
}
EXPECTED_FALLBACK = frozenset({"similar", "factuality", "context-recall"})
NEEDS_VALUE = frozenset({"similar", "llm-rubric", "factuality", "context-recall"})
JUDGED = frozenset({"llm-rubric", "factuality", "answer-relevance", "context-faithfulness", "context-recall"})

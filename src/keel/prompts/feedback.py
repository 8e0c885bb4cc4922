"""Feedback: a user's score and comment on one call, found by its trace id (`x-keel-trace-id`).

A score is a number from 0 (bad) to 1 (good): thumbs are 0 and 1, five stars (n - 1) / 4. It takes its
trace's prompt version and model when it arrives (the trace must be stored: within a second of the
call), so reports by prompt version or model need no join with traces. A key scores its own tenant's
traces only; the same rater scoring a trace again replaces the score. Read per prompt version or model
over a window: count and mean (`summary`), which the `feedback` guard of a rollout also reads.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from keel.errors import InvalidRequest, NotFound
from keel.store.protocols import FEEDBACK_BY, Feedback, FeedbackRow
from keel.types import TraceRecord

MAX_COMMENT = 10_000
MAX_ID = 256


class FeedbackStore(Protocol):
    def get_trace(self, trace_id: str) -> TraceRecord | None: ...

    def put_feedback(self, feedback: Feedback) -> None: ...

    def feedback_summary(self, tenant: str | None, since: float, until: float, by: str) -> list[FeedbackRow]: ...


def _text(body: dict[str, Any], field: str, most: int) -> str | None:
    value = body.get(field)
    if value is not None and (not isinstance(value, str) or "\x00" in value or len(value) > most):
        raise InvalidRequest(f"'{field}' must be a string of at most {most:,} characters (no NUL).", field)
    return value


def record(store: FeedbackStore, tenant: str | None, body: dict[str, Any]) -> Feedback:
    """Store the feedback `body` ({trace_id, score, comment?, user?}) of `tenant` (None: the admin, any)."""
    trace_id = _text(body, "trace_id", MAX_ID)
    if not trace_id:
        raise InvalidRequest("'trace_id' is required: the x-keel-trace-id header of the call.", "trace_id")
    score = body.get("score")
    if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
        raise InvalidRequest("'score' must be a number from 0 (bad) to 1 (good).", "score")
    comment = _text(body, "comment", MAX_COMMENT)
    rater = _text(body, "user", MAX_ID) or ""
    unknown = sorted(set(body) - {"trace_id", "score", "comment", "user", "tenant"})
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}': send trace_id, score, comment, user.", unknown[0])
    trace = store.get_trace(trace_id)
    if trace is None or (tenant is not None and trace.tenant != tenant):
        raise NotFound(f"No trace '{trace_id}' (a call's trace is stored within a second or so: try again).")
    fb = Feedback(
        trace_id, rater, trace.tenant or "", float(score), comment, trace.prompt_version, trace.model or trace.alias,
        time.time(),
    )  # fmt: skip
    store.put_feedback(fb)
    return fb


def summary(store: FeedbackStore, tenant: str | None, since: float, until: float, by: str) -> list[dict[str, Any]]:
    if by not in FEEDBACK_BY:
        raise InvalidRequest(f"'by' must be one of: {', '.join(FEEDBACK_BY)}.", "by")
    rows = store.feedback_summary(tenant, since, until, by)
    return [{by: r.group, "count": r.count, "mean_score": round(r.score_sum / r.count, 4)} for r in rows]

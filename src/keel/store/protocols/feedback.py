"""Feedback on traces: a user's score (0 to 1) and comment, attributed to the trace's prompt version and
model when it arrives, and summed per prompt version or model over a bounded window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

FEEDBACK_BY = ("prompt_version", "model")


@dataclass(frozen=True, slots=True)
class Feedback:
    trace_id: str
    rater: str  # the user who scored ('' when unnamed): one score per (trace, rater), a later one replaces it
    tenant: str
    score: float  # 0 (bad) to 1 (good)
    comment: str | None
    prompt_version: str | None  # copied from the trace
    model: str | None
    at: float


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    group: str | None  # the prompt version or model; None when the traces had none
    count: int
    score_sum: float

    @property
    def mean(self) -> float | None:
        return self.score_sum / self.count if self.count else None


class FeedbackStore(Protocol):
    def put_feedback(self, feedback: Feedback) -> None:
        """Store it, replacing an earlier score of the same rater on the same trace."""
        ...

    def feedback_summary(self, tenant: str | None, since: float, until: float, by: str) -> list[FeedbackRow]:
        """Scores received in [since, until) per `by` (prompt_version | model), most scored first."""
        ...


__all__ = ["FEEDBACK_BY", "Feedback", "FeedbackRow", "FeedbackStore"]

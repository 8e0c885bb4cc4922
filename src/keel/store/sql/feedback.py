"""Feedback scores over any SQL dialect (`FeedbackStore`): an upsert per (trace, rater) and a grouped
sum over the window, read through the (tenant, at) index."""

from __future__ import annotations

from keel.store.protocols.feedback import FEEDBACK_BY, Feedback, FeedbackRow
from keel.store.sql.dialect import Database

_COLS = "trace_id, rater, tenant, score, comment, prompt_version, model, at"


class SqlFeedback:
    _db: Database

    def put_feedback(self, feedback: Feedback) -> None:
        d = self._db.dialect
        f = feedback
        sql = (
            f"INSERT INTO prompt_feedback ({_COLS}) VALUES ({d.marks(8)}) ON CONFLICT (trace_id, rater) DO UPDATE"
            " SET score = excluded.score, comment = excluded.comment, at = excluded.at"
        )
        with self._db.transaction() as s:
            s.execute(sql, (f.trace_id, f.rater, f.tenant, f.score, f.comment, f.prompt_version, f.model, f.at))

    def feedback_summary(self, tenant: str | None, since: float, until: float, by: str) -> list[FeedbackRow]:
        if by not in FEEDBACK_BY:
            raise ValueError(f"feedback is summed by {', '.join(FEEDBACK_BY)}, not {by!r}")
        m = self._db.dialect.mark
        where = f"at >= {m} AND at < {m}" + (f" AND tenant = {m}" if tenant is not None else "")
        params = (since, until) + ((tenant,) if tenant is not None else ())
        sql = (
            f"SELECT {by}, COUNT(*), SUM(score) FROM prompt_feedback WHERE {where}"
            f" GROUP BY {by} ORDER BY COUNT(*) DESC, {by} LIMIT 10000"
        )
        with self._db.session() as s:
            return [FeedbackRow(r[0], int(r[1]), float(r[2] or 0.0)) for r in s.fetchall(sql, params)]

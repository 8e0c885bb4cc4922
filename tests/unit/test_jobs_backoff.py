"""The wait before a job's retry: doubling per attempt from `jobs.backoff_s`, capped, ±25 % jitter."""

from __future__ import annotations

from keel.jobs.queue import backoff_s


def test_backoff_doubles_per_attempt_with_jitter_and_a_cap() -> None:
    assert [backoff_s(n, 2.0, 60.0, rand=lambda: 0.5) for n in (1, 2, 3, 6, 50)] == [2.0, 4.0, 8.0, 60.0, 60.0]
    assert backoff_s(1, 2.0, 60.0, rand=lambda: 0.0) == 1.5
    assert backoff_s(1, 2.0, 60.0, rand=lambda: 1.0) == 2.5
